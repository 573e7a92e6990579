"""Settings come from REFUND_RISK_* variables, are validated at start, and fail in one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from refund_risk.errors import ConfigurationError
from refund_risk.settings import load_settings


def test_defaults_put_everything_under_the_data_dir_and_mlruns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATA_DIR", "DATABASE_URL", "MLFLOW_TRACKING_URI", "MLRUNS_DIR", "SEED"):
        monkeypatch.delenv(f"REFUND_RISK_{name}", raising=False)
    settings = load_settings()
    assert settings.data_dir == tmp_path / "data" / "generated"
    assert (
        settings.database_url == f"sqlite:///{tmp_path / 'data' / 'generated' / 'refund_risk.db'}"
    )
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert settings.raw_dir == settings.data_dir / "raw"
    assert settings.oracle_dir == settings.data_dir / "oracle"
    assert not (tmp_path / "data").exists(), "building settings creates nothing on disk"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REFUND_RISK_DATA_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("REFUND_RISK_DATABASE_URL", "postgresql+psycopg://postgres@db/refunds")
    monkeypatch.setenv("REFUND_RISK_SEED", "11")
    settings = load_settings()
    assert settings.data_dir == tmp_path / "w"
    assert settings.database_url == "postgresql+psycopg://postgres@db/refunds"
    assert settings.seed == 11


def test_bad_value_is_one_sentence_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUND_RISK_SEED", "many")
    with pytest.raises(ConfigurationError, match="REFUND_RISK_SEED"):
        load_settings()


def test_importing_the_cli_has_no_side_effects(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import refund_risk.cli, data.cli, data.generator, data.report"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []
