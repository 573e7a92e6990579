"""The policy commands through the real command line, on a table of already-scored requests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from data.schema import CATEGORIES, REASON_DETAILS
from policy.model import DEFAULT_POLICY_PATH, HANDWRITTEN_POLICY_PATH, load_policy
from refund_risk.cli import app


def scored_requests(n: int, seed: int) -> pd.DataFrame:
    """A year of past requests with a noisy calibrated abuse score and both labels."""
    rng = np.random.default_rng(seed)
    stage = rng.choice(["not_shipped", "in_transit", "delivered"], n, p=[0.25, 0.15, 0.6])
    detail = rng.choice(list(REASON_DETAILS), n)
    amount = np.round(rng.lognormal(4.1, 0.9, n), 2)
    refund_only = (stage != "delivered") | (rng.random(n) < 0.35)
    logit = -5.2 + 1.5 * (stage == "delivered") + 0.8 * refund_only + 0.25 * np.log(amount)
    logit += rng.normal(0, 1.2, n)
    abusive = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "refund_id": [f"r{i:06d}" for i in range(n)],
            "requested_at": pd.Timestamp("2025-01-01")
            + pd.to_timedelta(rng.uniform(0, 365, n), unit="D"),
            "order_stage": stage,
            "order_amount": amount,
            "amount_requested": amount,
            "category": rng.choice(CATEGORIES, n),
            "reason": [REASON_DETAILS[d] for d in detail],
            "reason_detail": detail,
            "refund_type": np.where(refund_only, "refund_only", "return_and_refund"),
            "abuse_score": 1 / (1 + np.exp(-(logit + rng.normal(0, 0.5, n)))),
            "tier": rng.choice(["gold", "silver", "standard", "watch"], n),
            "is_abusive": abusive & (rng.random(n) < 0.6),
            "is_abusive_true": abusive,
        }
    )


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    # A world of its own: no data, and no registry (the project's mlruns/ may hold champions).
    monkeypatch.setenv("REFUND_RISK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REFUND_RISK_MLRUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("REFUND_RISK_MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "data"


@pytest.fixture
def scores(tmp_path: Path) -> Path:
    path = tmp_path / "scored.parquet"
    scored_requests(3000, seed=3).to_parquet(path)
    return path


def test_validate_accepts_the_shipped_policy() -> None:
    result = CliRunner().invoke(app, ["policy", "validate", str(DEFAULT_POLICY_PATH)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: default v3")


def test_validate_warns_when_a_riskier_band_is_treated_more_leniently(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    raw["rules"].insert(
        4,
        {
            "id": "small_high_risk_refunds",
            "when": {"abuse_band": "high", "amount_requested": {"<=": 20}},
            "action": "auto_approve",
            "reason": "Small enough to pay.",
        },
    )
    inverted = tmp_path / "inverted.yaml"
    inverted.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["policy", "validate", str(inverted)])
    assert result.exit_code == 0, result.output  # a warning, not a refusal
    assert result.output.startswith("ok: ")
    assert "warning: rule 'small_high_risk_refunds' sends band 'high' to auto_approve" in (
        " ".join(result.output.split())
    )
    shipped = CliRunner().invoke(app, ["policy", "validate", str(DEFAULT_POLICY_PATH)])
    assert "warning" not in shipped.output


def test_validate_refuses_a_bad_policy_naming_rule_and_field(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    raw["rules"][2]["action"] = "refund_twice"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["policy", "validate", str(bad)])
    assert result.exit_code == 2
    assert "rule 'watchlisted', field 'action'" in result.output
    assert "Traceback" not in result.output


def test_show_prints_rules_and_tiers() -> None:
    result = CliRunner().invoke(app, ["policy", "show"])
    assert result.exit_code == 0, result.output
    assert "unshipped_extreme_risk" in result.output
    assert "amount_requested >= thresholds.review_amount" in result.output
    assert "standard (new customers)" in result.output


def test_simulate_compares_policies_and_saves_a_chart(
    data_dir: Path, scores: Path, tmp_path: Path
) -> None:
    chart = tmp_path / "sim.png"
    result = CliRunner().invoke(
        app,
        [
            "policy",
            "simulate",
            "--policy",
            str(DEFAULT_POLICY_PATH),
            "--compare",
            str(HANDWRITTEN_POLICY_PATH),
            "--scores",
            str(scores),
            "--plot",
            str(chart),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "default v3" in result.output and "handwritten v1" in result.output
    assert "decided without a person" in result.output
    assert "paid out without a check" in result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_without_scores_says_what_to_pass(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["policy", "simulate", "--policy", str(DEFAULT_POLICY_PATH)])
    assert result.exit_code == 2
    assert "--scores" in result.output


def test_tune_writes_a_new_version(data_dir: Path, scores: Path, tmp_path: Path) -> None:
    start = tmp_path / "mine.yaml"
    shutil.copy(DEFAULT_POLICY_PATH, start)
    costs = tmp_path / "costs.yaml"
    costs.write_text("reviewer_capacity_per_day: 3\n")
    out = tmp_path / "mine.v2.yaml"
    result = CliRunner().invoke(
        app,
        [
            "policy",
            "tune",
            "--policy",
            str(start),
            "--scores",
            str(scores),
            "--costs",
            str(costs),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    tuned = load_policy(out)
    assert tuned.version == 4  # one above the start (default v3)
    assert "handwritten v1" in result.output  # the hand-written rules are reported beside
    assert f"written to {out}" in result.output
    assert (data_dir / "reports" / "policy_tuning.png").exists()
    assert start.read_text() == DEFAULT_POLICY_PATH.read_text()  # the start file is untouched
