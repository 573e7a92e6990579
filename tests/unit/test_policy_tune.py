"""The tuner: keeps the constraints on synthetic scored requests and lowers the cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.schema import CATEGORIES, REASON_DETAILS
from policy.model import DEFAULT_POLICY_PATH, Policy, load_policy
from policy.scored import validate_scored
from policy.simulate import CostModel, simulate
from policy.tiers import Tiers, load_tiers
from policy.tune import TuneConstraints, breach, tune, write_policy


def synthetic_scored(n: int, seed: int) -> pd.DataFrame:
    """Scored past requests: a calibrated abuse score with some noise, over a year."""
    rng = np.random.default_rng(seed)
    stage = rng.choice(["not_shipped", "in_transit", "delivered"], n, p=[0.25, 0.15, 0.6])
    detail = rng.choice(list(REASON_DETAILS), n)
    amount = np.round(rng.lognormal(4.1, 0.9, n), 2)
    refund_only = (stage != "delivered") | (rng.random(n) < 0.35)
    logit = -5.2 + 1.5 * (stage == "delivered") + 0.8 * refund_only + 0.25 * np.log(amount)
    logit += 1.2 * np.isin(detail, ["not_received", "damaged"]) + rng.normal(0, 1.2, n)
    truth = 1 / (1 + np.exp(-logit))
    score = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.5, n))))
    abusive = rng.random(n) < truth
    start = pd.Timestamp("2025-01-01")
    frame = pd.DataFrame(
        {
            "refund_id": [f"r{i:06d}" for i in range(n)],
            "requested_at": start + pd.to_timedelta(rng.uniform(0, 365, n), unit="D"),
            "order_stage": stage,
            "order_amount": amount,
            "amount_requested": amount,
            "category": rng.choice(CATEGORIES, n),
            "reason_detail": detail,
            "refund_type": np.where(refund_only, "refund_only", "return_and_refund"),
            "abuse_score": score,
            "tier_loss_probability": np.clip(rng.lognormal(-3.2, 1.0, n), 0, 1),
            "is_abusive": abusive & (rng.random(n) < 0.6),
            "is_abusive_true": abusive,
        }
    )
    frame["reason"] = frame["reason_detail"].map(REASON_DETAILS)
    return validate_scored(frame)


@pytest.fixture(scope="module")
def tiers() -> Tiers:
    return load_tiers()


@pytest.fixture(scope="module")
def start(tiers: Tiers) -> Policy:
    return load_policy(DEFAULT_POLICY_PATH, tiers=tiers)


def test_tuning_keeps_constraints_and_lowers_cost(start: Policy, tiers: Tiers) -> None:
    frame = synthetic_scored(6000, seed=5)
    costs = CostModel(reviewer_capacity_per_day=4.0)
    constraints = TuneConstraints(min_automated_share=0.85, max_unchecked_abuse_share=0.2)
    result = tune(frame, start, tiers, costs, constraints)
    assert result.feasible
    assert result.tuned.automated_share >= 0.85
    assert result.tuned.reviews_per_day <= 4.0
    assert result.tuned.unchecked_abuse_share < 0.2
    assert result.tuned.total_cost < result.start.total_cost
    assert result.changes
    assert result.policy.version == start.version + 1
    # The figures are those of the returned policy, not of a search artefact.
    again = simulate(frame, result.policy, tiers, costs)
    assert again.total_cost == pytest.approx(result.tuned.total_cost)
    # Every threshold stayed within the policy's tuning ranges.
    for name, (low, high) in start.document.tuning.items():
        value = result.policy.document.thresholds.get(name, None)
        if value is None:
            value = result.policy.document.bands[name][0]
        assert low <= value <= high, name


def test_tuning_walks_out_of_an_infeasible_start(start: Policy, tiers: Tiers) -> None:
    frame = synthetic_scored(4000, seed=6)
    costs = CostModel(reviewer_capacity_per_day=2.0)
    constraints = TuneConstraints(min_automated_share=0.9, max_unchecked_abuse_share=0.25)
    before = simulate(frame, start, tiers, costs)
    assert breach(before, constraints, costs) > 0
    result = tune(frame, start, tiers, costs, constraints)
    assert breach(result.tuned, constraints, costs) < breach(before, constraints, costs)


def test_written_policy_loads_back_identical(start: Policy, tiers: Tiers, tmp_path: Path) -> None:
    frame = synthetic_scored(2000, seed=7)
    result = tune(frame, start, tiers, CostModel(reviewer_capacity_per_day=3.0), max_rounds=1)
    path = write_policy(result.policy, tmp_path / "tuned.yaml", header="tuned\nfor a test")
    text = path.read_text()
    assert text.startswith("# tuned\n# for a test\n")
    loaded = load_policy(path, tiers=tiers)
    assert loaded.content_hash == result.policy.content_hash
    assert loaded.version == start.version + 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
