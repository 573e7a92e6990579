"""A shop's own messy export, from its files through `data import` and `data check`.

The export (tests/shop_export.py) has the shop's own names, no fingerprints, no outcomes, a
year of history and dirty rows of every kind; every row must be accounted for, each reject
must carry its line and reason, and a failed import must leave the stored tables untouched.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from data.schema import CATEGORIES, REASONS, REFUND_TYPES
from refund_risk.cli import app
from tests.shop_export import ShopExport, write_shop_export

SHOP_TABLES = ("customers", "orders", "refund_requests")


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("REFUND_RISK_DATA_DIR", str(tmp_path / "shop"))
    return tmp_path / "shop"


def import_export(export: ShopExport, *extra: str) -> tuple[int, str, str]:
    """Run `data import` on the export with its mapping; exit code, stdout, all output."""
    result = CliRunner().invoke(
        app, ["data", "import", str(export.folder), "--mapping", str(export.mapping), *extra]
    )
    return result.exit_code, result.stdout, result.output


def assert_every_row_accounted_for(export: ShopExport, data_dir: Path, stdout: str) -> None:
    """Counts, rejects lines and reasons, and stored rows are exactly what the export holds."""
    for table in SHOP_TABLES:
        read, kept = export.rows[table], export.accepted(table)
        rejected = read - kept
        line = next(x for x in stdout.splitlines() if x.startswith(f"{table} "))
        assert line.split()[-3:] == [f"{read:,}", f"{kept:,}", f"{rejected:,}"], line
        assert len(pd.read_parquet(data_dir / "raw" / f"{table}.parquet")) == kept
        rejects = pd.read_csv(
            data_dir / "rejects" / f"{table}.rejects.csv", dtype=str, keep_default_na=False
        )
        assert sorted(int(n) for n in rejects["line"]) == sorted(export.dirty[table])
        for number, reasons in zip(rejects["line"], rejects["reasons"], strict=True):
            assert export.dirty[table][int(number)] in reasons, (table, number, reasons)


def test_a_messy_export_imports_with_every_row_accounted_for(
    data_dir: Path, tmp_path: Path
) -> None:
    export = write_shop_export(tmp_path / "export")

    code, stdout, output = import_export(export)

    assert code == 0, output
    assert_every_row_accounted_for(export, data_dir, stdout)
    assert "failed checks by kind (a row may fail several)" in stdout
    assert "no outcomes.csv or outcomes.parquet: imported as empty" in stdout
    assert "no device_id, address_id, payment_fingerprint column: imported as empty" in stdout
    orders = pd.read_parquet(data_dir / "raw" / "orders.parquet")
    assert orders["device_id"].isna().all() and orders["payment_fingerprint"].isna().all()
    assert set(orders["category"]) <= set(CATEGORIES)
    refunds = pd.read_parquet(data_dir / "raw" / "refund_requests.parquet")
    assert set(refunds["refund_type"]) == set(REFUND_TYPES)
    assert set(refunds["reason"]) <= set(REASONS)

    check = CliRunner().invoke(app, ["data", "check"])
    assert check.exit_code == 0, check.output
    text = check.stdout
    assert f"customers                  {export.accepted('customers'):,}" in text
    assert f"refund requests            {export.accepted('refund_requests'):,}" in text
    assert "labelled outcomes          0 requests with an outcome, 0 of them abusive" in text
    assert "device_id 0.0%, address_id 0.0%, payment_fingerprint 0.0%" in text
    assert "credit-tier model: can be trained now" in text
    assert "abuse model: cannot be trained yet" in text
    assert "labelled request in its train period" in text and "you have 0" in text
    assert "what to do: import outcomes.csv" in text

    report = CliRunner().invoke(app, ["data", "report", "--plot", str(tmp_path / "w.png")])
    assert report.exit_code == 0, report.output
    assert "nan" not in report.stdout and "n/a (" in report.stdout


def test_the_semicolon_variant_gets_a_hint_then_imports_alike(
    data_dir: Path, tmp_path: Path
) -> None:
    export = write_shop_export(tmp_path / "export", delimiter=";")

    code, _, output = import_export(export)
    assert code == 2
    assert "separated by semicolons" in output and "--delimiter ';'" in output
    assert not (data_dir / "raw").exists()

    code, stdout, output = import_export(export, "--delimiter", ";")
    assert code == 0, output
    assert_every_row_accounted_for(export, data_dir, stdout)


def test_a_failed_import_leaves_the_stored_tables_untouched(data_dir: Path, tmp_path: Path) -> None:
    code, _, output = import_export(write_shop_export(tmp_path / "first"))
    assert code == 0, output
    before = {p.name: p.read_bytes() for p in sorted((data_dir / "raw").iterdir())}

    export = write_shop_export(tmp_path / "us", seed=1, us_dates_everywhere=True)
    code, stdout, output = import_export(export)

    assert code == 2
    assert "nothing was stored" in output and "no row was accepted in orders" in output
    # The summary still says what happened, table by table, and where the rejects are.
    assert f"orders: {export.rows['orders']:,} row(s) rejected" in stdout
    assert f"nothing stored: {data_dir / 'raw'} is unchanged" in stdout
    assert "if the month comes first" in (data_dir / "rejects" / "orders.rejects.csv").read_text()
    after = {p.name: p.read_bytes() for p in sorted((data_dir / "raw").iterdir())}
    assert after == before
