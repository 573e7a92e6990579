"""Training through the command line into a real local MLflow store, and the promotion gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from policy.model import DEFAULT_POLICY_PATH
from refund_risk.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("REFUND_RISK_DATA_DIR", str(tmp_path / "world"))
    monkeypatch.setenv("REFUND_RISK_MLRUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("REFUND_RISK_MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_train_promote_then_gate_keeps_an_equal_model_as_challenger(env: Path) -> None:
    runner = CliRunner()
    generated = runner.invoke(app, ["data", "generate", "--customers", "8000", "--seed", "4"])
    assert generated.exit_code == 0, generated.output

    first = runner.invoke(app, ["train", "abuse", "--promote"])
    assert first.exit_code == 0, first.output
    assert "no champion yet" in first.output
    assert "roc_auc_ratio_to_oracle" in first.output

    # Same seed, same data: the same model, so it cannot beat the champion.
    second = runner.invoke(app, ["train", "abuse", "--promote"])
    assert second.exit_code == 0, second.output
    assert "champion re-scored on these rows" in second.output
    assert "kept as challenger" in second.output

    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert "champion" in listed.output and "challenger" in listed.output
    assert (env / "mlruns" / "mlflow.db").exists()
    pngs = {p.name for p in (env / "mlruns").rglob("*.png")}
    assert {"roc.png", "precision_recall.png", "calibration.png", "feature_importance.png"} <= pngs


def test_tier_model_and_policy_simulation_use_the_registered_champions(env: Path) -> None:
    runner = CliRunner()
    assert (
        runner.invoke(app, ["data", "generate", "--customers", "8000", "--seed", "6"]).exit_code
        == 0
    )
    assert runner.invoke(app, ["train", "abuse", "--promote"]).exit_code == 0
    tier = runner.invoke(app, ["train", "tier", "--promote"])
    assert tier.exit_code == 0, tier.output
    assert "realised loss rises strictly" in tier.output
    assert "oracle_auc_abusive_vs_honest" in tier.output

    simulated = runner.invoke(
        app,
        [
            "policy",
            "simulate",
            "--policy",
            str(DEFAULT_POLICY_PATH),
            "--compare",
            str(DEFAULT_POLICY_PATH.with_name("handwritten.yaml")),
        ],
    )
    assert simulated.exit_code == 0, simulated.output
    assert "decided without a person" in simulated.output
    assert "past requests" in simulated.output


def test_simulation_without_models_says_how_to_get_them(env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["data", "generate", "--customers", "2000"]).exit_code == 0
    result = runner.invoke(app, ["policy", "simulate", "--policy", str(DEFAULT_POLICY_PATH)])
    assert result.exit_code == 2
    assert "refund-risk train abuse --promote" in result.output


def test_training_without_a_world_says_what_to_do(env: Path) -> None:
    result = CliRunner().invoke(app, ["train", "abuse"])
    assert result.exit_code == 2
    assert "generate or import a world first" in result.output
