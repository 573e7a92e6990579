"""A command's result reaches a log whole: tables at the width they need, never cut or wrapped
at the terminal's width, and nothing of it on stderr."""

from __future__ import annotations

import io
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.table import Table

from refund_risk import console as cli_console

# Cell text a table may hold: words of letters, digits and punctuation, no line breaks.
cells = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N", "P"), max_codepoint=0x24F),
    min_size=1,
    max_size=60,
)


def _printed(table: Table, monkeypatch: pytest.MonkeyPatch, columns: int) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    cli_console.print_result(table)
    return out.getvalue(), err.getvalue()


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(cells, min_size=3, max_size=3), min_size=1, max_size=5))
def test_a_table_reaches_a_log_whole_at_any_width(rows: list[list[str]]) -> None:
    table = Table("figure", "model", "baseline", title="a result")
    for row in rows:
        table.add_row(*row)
    with pytest.MonkeyPatch.context() as monkeypatch:
        narrow, narrow_err = _printed(table, monkeypatch, 40)
        wide, _ = _printed(table, monkeypatch, 200)
    assert narrow_err == ""
    assert "…" not in narrow
    # Each row is one line holding every cell of it, whatever $COLUMNS says.
    lines = narrow.splitlines()
    for row in rows:
        assert any(all(cell in line for cell in row) for line in lines), (row, narrow)
    assert narrow == wide


def test_a_long_headline_table_is_not_cut_at_eighty_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As `train abuse` prints its figures: a long first column and one column per model.
    table = Table("figure", *(f"evaluation {i}" for i in range(6)), title="refund-abuse v1")
    table.add_row("roc_auc_ratio_to_oracle", *("0.912" for _ in range(6)))
    monkeypatch.delenv("COLUMNS", raising=False)
    out, err = _printed(table, monkeypatch, 80)
    row = next(line for line in out.splitlines() if "roc_auc_ratio_to_oracle" in line)
    assert row.count("0.912") == 6
    assert len(row) > 80 and err == ""
