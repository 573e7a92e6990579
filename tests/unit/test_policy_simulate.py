"""The simulator's figures on a small hand-made set of requests, computed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from policy.documents import PolicyError
from policy.model import Policy, parse_policy
from policy.scored import validate_scored
from policy.simulate import CostModel, format_comparison, load_cost_model, plot_comparison, simulate
from policy.tiers import Tiers, load_tiers
from refund_risk.errors import DataValidationError

POLICY: dict[str, Any] = {
    "name": "tiny",
    "version": 1,
    "bands": {"low": [0.0, 0.5], "high": [0.5, 1.0]},
    "partial_offer": {
        "resale_recovery_share": 0.7,
        "return_shipping_cost": 10.0,
        "risk_discount": 0.0,
        "min_share": 0.0,
        "max_share": 1.0,
    },
    "messages": {
        "auto_approve": "a",
        "refund_before_return": "b",
        "partial_refund_offer": "c {offered_amount}",
        "standard_return": "d",
        "manual_review": "e",
    },
    "rules": [
        {
            "id": "unshipped",
            "when": {"order_stage": "not_shipped"},
            "action": "auto_approve",
            "reason": "x",
        },
        {"id": "high", "when": {"abuse_band": "high"}, "action": "manual_review", "reason": "x"},
        {
            "id": "trusted",
            "when": {
                "tier": "gold",
                "refund_type": "return_and_refund",
                "unreturned_after_request": {"<=": "tier.max_outstanding_unreturned"},
            },
            "action": "refund_before_return",
            "reason": "x",
        },
        {
            "id": "nad",
            "when": {"reason_detail": "not_as_described"},
            "action": "partial_refund_offer",
            "reason": "x",
        },
    ],
    "default": {"action": "standard_return", "reason": "x"},
}

COLUMNS = [
    "requested_at",
    "order_stage",
    "amount_requested",
    "category",
    "reason_detail",
    "refund_type",
    "abuse_score",
    "tier",
    "is_abusive",
]
ROWS = [
    (
        "2025-03-01 09:00",
        "not_shipped",
        100.0,
        "apparel",
        "ordered_twice",
        "refund_only",
        0.1,
        "standard",
        False,
    ),
    (
        "2025-03-01 18:00",
        "delivered",
        200.0,
        "electronics",
        "not_received",
        "refund_only",
        0.8,
        "standard",
        True,
    ),
    (
        "2025-03-01 23:59",
        "delivered",
        80.0,
        "apparel",
        "wrong_size",
        "return_and_refund",
        0.2,
        "gold",
        True,
    ),
    (
        "2025-03-02 10:00",
        "delivered",
        50.0,
        "home",
        "not_as_described",
        "return_and_refund",
        0.3,
        "standard",
        True,
    ),
    (
        "2025-03-03 08:00",
        "delivered",
        60.0,
        "apparel",
        "changed_mind",
        "return_and_refund",
        0.1,
        "standard",
        False,
    ),
    (
        "2025-03-03 09:00",
        "delivered",
        40.0,
        "apparel",
        "changed_mind",
        "return_and_refund",
        0.6,
        "standard",
        False,
    ),
    (
        "2025-03-03 10:00",
        "in_transit",
        30.0,
        "beauty",
        "late",
        "refund_only",
        0.2,
        "standard",
        True,
    ),
]

COSTS = CostModel(
    review_minutes=10,
    reviewer_cost_per_hour=60,
    reviewer_capacity_per_day=1,
    return_shipping_cost=5,
    friction_cost_per_delayed_honest=2,
    review_catch_rate=0.5,
    check_catch_rate=0.5,
)


@pytest.fixture(scope="module")
def tiers() -> Tiers:
    return load_tiers()


@pytest.fixture(scope="module")
def policy(tiers: Tiers) -> Policy:
    return parse_policy(POLICY, tiers=tiers)


def requests() -> pd.DataFrame:
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    frame["requested_at"] = pd.to_datetime(frame["requested_at"])
    frame["order_amount"] = frame["amount_requested"]
    frame["refund_id"] = [f"r{i}" for i in range(len(frame))]
    from data.schema import REASON_DETAILS

    frame["reason"] = frame["reason_detail"].map(REASON_DETAILS)
    return validate_scored(frame)


def test_figures_match_hand_computed_numbers(policy: Policy, tiers: Tiers) -> None:
    result = simulate(requests(), policy, tiers, COSTS)
    assert list(result.decisions["action"]) == [
        "auto_approve",
        "manual_review",
        "refund_before_return",
        "partial_refund_offer",
        "standard_return",
        "manual_review",
        "standard_return",
    ]
    assert result.label == "is_abusive"
    assert result.requests == 7 and result.days == 3
    assert result.action_counts == {
        "auto_approve": 1,
        "refund_before_return": 1,
        "partial_refund_offer": 1,
        "standard_return": 2,
        "manual_review": 2,
    }
    assert result.automated_share == pytest.approx(5 / 7)
    assert result.reviews_per_day == pytest.approx(2 / 3)
    assert result.peak_reviews_per_day == 1
    assert result.days_over_capacity == 0
    # Partial offer: (1 - 0.7 + 10 / 50) * (1 - 0) = 0.5 of 50.
    assert result.decisions["offered_amount"].iat[3] == pytest.approx(25.0)
    assert result.abusive_requests == 4
    assert result.abusive_money == pytest.approx(360.0)
    assert result.unchecked_abusive_money == pytest.approx(80.0 + 25.0)
    assert result.caught_abusive_money == pytest.approx(0.5 * 200 + 0.5 * 30)
    assert result.lost_abusive_money == pytest.approx(105 + 200 + 30 - 115)
    assert result.unchecked_abuse_share == pytest.approx(105 / 360)
    assert result.honest_requests == 3
    assert result.honest_delayed == 1 and result.honest_reviewed == 1
    assert result.friction_share == pytest.approx(2 / 3)
    assert result.cost_abuse == pytest.approx(220.0)
    assert result.cost_review == pytest.approx(2 * 10.0)
    assert result.cost_shipping == pytest.approx(3 * 5.0)  # rows 3, 5 and 6 send goods back
    assert result.cost_friction == pytest.approx(2 * 2.0)
    assert result.total_cost == pytest.approx(259.0)


def test_capacity_is_counted_per_day(policy: Policy, tiers: Tiers) -> None:
    frame = requests()
    frame.loc[4, "abuse_score"] = 0.9  # a second review on the third day
    result = simulate(frame, policy, tiers, COSTS)
    assert result.peak_reviews_per_day == 2
    assert result.days_over_capacity == 1


def test_oracle_label_is_used_when_present(policy: Policy, tiers: Tiers) -> None:
    frame = requests()
    frame["is_abusive_true"] = frame["is_abusive"]
    frame.loc[0, "is_abusive_true"] = True  # abuse found by nobody, on the auto-approved row
    known = simulate(frame, policy, tiers, COSTS, label="known")
    truth = simulate(frame, policy, tiers, COSTS)
    assert truth.label == "is_abusive_true"
    assert truth.unchecked_abusive_money == pytest.approx(known.unchecked_abusive_money + 100)
    with pytest.raises(DataValidationError):
        simulate(requests(), policy, tiers, COSTS, label="oracle")


def test_missing_columns_are_named() -> None:
    with pytest.raises(DataValidationError, match="abuse_score"):
        validate_scored(requests().drop(columns=["abuse_score"]))


def test_cost_model_override(tmp_path: Path) -> None:
    path = tmp_path / "costs.yaml"
    path.write_text("review_minutes: 12\nreviewer_capacity_per_day: 55\n")
    costs = load_cost_model(path)
    assert costs.review_minutes == 12 and costs.reviewer_capacity_per_day == 55
    assert costs.return_shipping_cost == CostModel().return_shipping_cost
    path.write_text("review_minuts: 12\n")
    with pytest.raises(PolicyError, match="review_minuts"):
        load_cost_model(path)


def test_comparison_table_and_chart(policy: Policy, tiers: Tiers, tmp_path: Path) -> None:
    a = simulate(requests(), policy, tiers, COSTS)
    text = format_comparison([a, a])
    assert "decided without a person" in text and "total cost" in text
    assert text.count("tiny v1") == 2
    png = plot_comparison([a, a], tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
