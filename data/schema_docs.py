"""The raw data model as Markdown, rendered from `data.schema` so the README cannot drift from it.

`schema_markdown()` is what README.md holds between `SCHEMA_START` and `SCHEMA_END`; a unit test
compares the two, and `refund-risk data schema` prints it for pasting.
"""

from __future__ import annotations

import csv
import io

from data.importer import FALSE_WORDS, OPTIONAL_TABLES, TRUE_WORDS
from data.schema import TABLES, Column, Kind, Table

SCHEMA_START = "<!-- schema:start -->"
SCHEMA_END = "<!-- schema:end -->"

KIND_MEANINGS: dict[Kind, str] = {
    Kind.ID: "identifier or fingerprint, compared as exact text",
    Kind.TEXT: "free text",
    Kind.ENUM: "one of a fixed list of values, spelled exactly",
    Kind.TIMESTAMP: (
        "ISO 8601 date or date and time, e.g. `2025-02-11 09:30:00`; UTC unless it carries "
        "an offset, which is converted to UTC"
    ),
    Kind.MONEY: "decimal number with a dot, no thousands separator or currency sign; above 0",
    Kind.COUNT: "whole number, 0 or more",
    Kind.BOOL: (
        f"{' / '.join(f'`{w}`' for w in TRUE_WORDS)} or "
        f"{' / '.join(f'`{w}`' for w in FALSE_WORDS)}, any case"
    ),
}
"""What each logical type accepts in a shop's file; the importer enforces exactly this."""


def schema_markdown() -> str:
    """The raw tables as Markdown: file conventions, a type legend, then one section per table.

    Each section has the table's description, its file, a column table (column, type,
    required, meaning with allowed values), its rules and a one-row CSV example. The output
    depends only on `data.schema`, so it is identical on every run.
    """
    parts = [_preamble()]
    parts.extend(_table_section(table) for table in TABLES.values())
    return "\n".join(parts)


def _preamble() -> str:
    """How files are named and read, and what each type accepts."""
    lines = [
        "One file per table, named after the table: `<table>.csv` (UTF-8, header line first)",
        "or `<table>.parquet`. Empty CSV cells are missing values; `NA` or `null` are text.",
        "A column that is not required may be left out of the file: it imports as empty.",
        "Enum values may be the shop's own words if a mapping file (`--mapping`) maps them.",
        "Tables refer only to tables listed before them.",
        "",
        "| type | accepts |",
        "| --- | --- |",
    ]
    lines.extend(f"| {kind.value} | {_cell(meaning)} |" for kind, meaning in KIND_MEANINGS.items())
    lines.append("")
    return "\n".join(lines)


def _table_section(table: Table) -> str:
    """One table's Markdown section."""
    presence = (
        "optional: an absent file imports as an empty table"
        if table.name in OPTIONAL_TABLES
        else "required"
    )
    lines = [
        f"### {table.name}",
        "",
        table.description,
        "",
        f"File: `{table.name}.csv` or `{table.name}.parquet` ({presence}).",
        "",
        "| column | type | required | meaning |",
        "| --- | --- | --- | --- |",
    ]
    lines.extend(
        f"| `{c.name}` | {c.kind.value} | {'no' if c.nullable else 'yes'} | {_meaning(c)} |"
        for c in table.columns
    )
    lines.extend(["", "Rules:", ""])
    lines.append(f"- {_key_text(table)} is unique")
    lines.extend(f"- {rule}" for rule in table.rules)
    lines.extend(["", "Example:", "", "```csv", _csv_example(table), "```", ""])
    return "\n".join(lines)


def _meaning(column: Column) -> str:
    """The column's description, plus its allowed values for an enum."""
    text = column.description
    if column.values:
        text += " One of: " + ", ".join(f"`{v}`" for v in column.values) + "."
    return _cell(text)


def _key_text(table: Table) -> str:
    """The primary key as Markdown: one column, or a tuple of columns."""
    names = [f"`{k}`" for k in table.key]
    return names[0] if len(names) == 1 else f"({', '.join(names)})"


def _csv_example(table: Table) -> str:
    """A header and one row built from the columns' examples, quoted as CSV requires."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.column_names)
    writer.writerow([c.example for c in table.columns])
    return buffer.getvalue().rstrip("\n")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
