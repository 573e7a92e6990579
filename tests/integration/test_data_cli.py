"""The data commands a newcomer runs, end to end through the real command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from refund_risk.cli import app


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("REFUND_RISK_DATA_DIR", str(tmp_path / "world"))
    return tmp_path / "world"


def test_generate_then_report(data_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["data", "generate", "--customers", "3000", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "rows/s" in result.output
    for table in ("customers", "orders", "refund_requests", "outcomes", "identity_links"):
        assert (data_dir / "raw" / f"{table}.parquet").exists()
    assert (data_dir / "oracle" / "oracle_refunds.parquet").exists()

    result = runner.invoke(app, ["data", "report"])
    assert result.exit_code == 0, result.output
    assert "refund rate" in result.output
    assert "oracle ROC-AUC" in result.output
    png = data_dir / "reports" / "world.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_an_empty_data_dir_says_what_to_do(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["data", "report"])
    assert result.exit_code == 2
    assert "generate or import a world first" in result.output


def test_report_without_oracle_still_works(data_dir: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["data", "generate", "--customers", "2000"]).exit_code == 0
    for path in (data_dir / "oracle").iterdir():
        path.unlink()
    result = runner.invoke(app, ["data", "report"])
    assert result.exit_code == 0, result.output
    assert "oracle ROC-AUC" not in result.output
    assert "refund rate" in result.output


def test_imported_generated_world_equals_the_original(data_dir: Path, tmp_path: Path) -> None:
    """A world exported as CSV and imported back is the same world: the importer loses nothing."""
    runner = CliRunner()
    assert runner.invoke(app, ["data", "generate", "--customers", "2000"]).exit_code == 0
    raw = data_dir / "raw"
    export = tmp_path / "export"
    export.mkdir()
    originals = {}
    for path in raw.glob("*.parquet"):
        frame = pd.read_parquet(path)
        originals[path.stem] = frame
        frame.to_csv(export / f"{path.stem}.csv", index=False)
    result = runner.invoke(app, ["data", "import", str(export)])
    assert result.exit_code == 0, result.output
    for name, original in originals.items():
        again = pd.read_parquet(raw / f"{name}.parquet")
        pd.testing.assert_frame_equal(again, original, check_dtype=False)
    # The generated world's oracle no longer describes the stored tables: it is gone.
    assert "removed the generated world's oracle" in result.stdout
    assert not (data_dir / "oracle").exists()
    assert "oracle ROC-AUC" not in runner.invoke(app, ["data", "report"]).output


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "refund-risk"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "data" in result.stdout
