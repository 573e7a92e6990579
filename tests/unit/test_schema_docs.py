"""The Markdown schema documentation: complete, deterministic, importable, and in the README."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from data.importer import import_directory
from data.schema import TABLES
from data.schema_docs import SCHEMA_END, SCHEMA_START, schema_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples(markdown: str) -> dict[str, str]:
    """The CSV example of each table section, keyed by table name."""
    out: dict[str, str] = {}
    for section in markdown.split("\n### ")[1:]:
        name = section.split("\n", 1)[0]
        out[name] = section.split("```csv\n", 1)[1].split("\n```", 1)[0] + "\n"
    return out


def test_readme_holds_exactly_the_generated_schema() -> None:
    assert README.exists(), f"{README} is missing; it must hold the schema documentation"
    text = README.read_text(encoding="utf-8")
    assert text.count(SCHEMA_START) == 1 and text.count(SCHEMA_END) == 1, (
        f"README.md needs exactly one {SCHEMA_START} ... {SCHEMA_END} block"
    )
    block = text.split(SCHEMA_START, 1)[1].split(SCHEMA_END, 1)[0]
    # Only the blank lines next to the markers are free; everything else must match.
    assert block.strip("\n") == schema_markdown().strip("\n"), (
        "README.md schema section is out of date: "
        "paste the output of `refund-risk data schema` between the markers"
    )


def test_markdown_is_deterministic() -> None:
    # Separate interpreters with different string-hash seeds: any set or hash order leaking into
    # the output shows up here, which two calls in one process would never reveal.
    here = schema_markdown()
    program = "import sys; from data.schema_docs import schema_markdown; "
    program += "sys.stdout.write(schema_markdown())"
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        other = subprocess.run(
            [sys.executable, "-c", program],
            env=env,
            cwd=README.parent,
            capture_output=True,
            text=True,
            encoding="utf-8",
            check=True,
        ).stdout
        assert other == here, f"schema Markdown differs in a process with PYTHONHASHSEED={seed}"


def test_every_table_column_rule_and_enum_value_is_documented() -> None:
    markdown = schema_markdown()
    sections = {s.split("\n", 1)[0]: s for s in markdown.split("\n### ")[1:]}
    assert list(sections) == list(TABLES)  # dependency order
    for name, table in TABLES.items():
        section = sections[name]
        assert table.description in section
        for column in table.columns:
            required = "no" if column.nullable else "yes"
            row = f"| `{column.name}` | {column.kind.value} | {required} | {column.description}"
            assert row in section, (name, column.name)
            for value in column.values:
                assert f"`{value}`" in section, (name, column.name, value)
        for rule in table.rules:
            assert f"- {rule}\n" in section, (name, rule)


def test_examples_have_the_schema_columns_and_import_cleanly(tmp_path: Path) -> None:
    examples = _examples(schema_markdown())
    assert list(examples) == list(TABLES)
    source = tmp_path / "src"
    source.mkdir()
    for name, text in examples.items():
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        assert frame.columns.tolist() == TABLES[name].column_names
        assert len(frame) == 1
        (source / f"{name}.csv").write_text(text, encoding="utf-8")

    # The documented example world obeys every rule the importer enforces.
    report = import_directory(source, tmp_path / "raw", tmp_path / "rejects")
    assert {n: (t.accepted, t.rejected) for n, t in report.tables.items()} == {
        n: (1, 0) for n in TABLES
    }
