"""The two views of one policy agree: deciding requests one at a time (the service) and as a
frame (the simulator and the tuner) give the same action, rule, band, tier and offer, on
requests Hypothesis generates around every boundary the rules and tiers draw."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from data.schema import CATEGORIES, ORDER_STAGES, REASON_DETAILS, REFUND_TYPES
from policy.conditions import Ref
from policy.context import RequestContext, Scores
from policy.evaluate import decide, decide_frame
from policy.model import (
    DEFAULT_POLICY_PATH,
    HANDWRITTEN_POLICY_PATH,
    Policy,
    load_policy,
    parse_policy,
)
from policy.tiers import Tiers, load_tiers
from serving.scoring import DEGRADED_POLICY_PATH

EVERY_TEST = """
name: every_test
version: 1
description: One rule per kind of test, so both views are held equal on each.
bands: {low: [0.0, 0.2], mid: [0.2, 0.6], high: [0.6, 1.0]}
thresholds: {big: 300.0, few_days: 2.0}
partial_offer:
  resale_recovery_share: 0.7
  return_shipping_cost: 7.0
  return_shipping_cost_by_category: {electronics: 12.0}
  risk_discount: 1.0
  min_share: 0.1
  max_share: 0.6
messages:
  auto_approve: "Refund of {amount_requested} approved."
  refund_before_return: "Refund of {amount_requested} now; send the item back."
  partial_refund_offer: "We offer {offered_amount} ({offered_share})."
  standard_return: "Send it back for {amount_requested}."
  manual_review: "A person looks at it."
rules:
  - id: undelivered_big
    when: {days_since_delivery: null, amount_requested: {">": thresholds.big}}
    action: manual_review
    reason: "Not delivered ({days_since_delivery}) and {amount_requested} over {thresholds.big}."
  - id: quick_returnable
    when:
      days_since_delivery: {"!=": null, "<": thresholds.few_days}
      category: {not_in: [fresh_food, virtual, custom]}
    action: standard_return
    reason: "Claimed {days_since_delivery} days after delivery."
  - id: whole_order_not_high
    when: {abuse_band: {"!=": high}, order_amount: {"<=": amount_requested}}
    action: standard_return
    reason: "Asks back the whole order, {order_amount}."
  - id: no_photo_defect
    when: {photo_count: {"==": 0}, reason: {in: [not_as_described]}, amount_requested: {"<": 150}}
    action: partial_refund_offer
    reason: "A defect with no photo; offer {offered_share}."
  - id: trusted_exposure
    when:
      tier.refund_before_return_allowed: true
      unreturned_after_request: {"<": tier.max_outstanding_unreturned}
      abuse_score: {"<=": 0.4}
    action: refund_before_return
    reason: "Tier {tier}, exposure {unreturned_after_request}."
  - id: small_low
    when: {abuse_band: low, amount_requested: {">=": 1, "<=": 40}, watchlisted: false}
    action: auto_approve
    reason: "Small: {amount_requested}."
default:
  action: manual_review
  reason: "Nothing else fired."
"""


def _policies(tiers: Tiers) -> dict[str, Policy]:
    return {
        "default": load_policy(DEFAULT_POLICY_PATH, tiers=tiers),
        "handwritten": load_policy(HANDWRITTEN_POLICY_PATH, tiers=tiers),
        "degraded": load_policy(Path(DEGRADED_POLICY_PATH), tiers=tiers),
        "every_test": parse_policy(yaml.safe_load(EVERY_TEST), tiers=tiers),
    }


TIERS = load_tiers()
POLICIES = _policies(TIERS)


def _edges(policy: Policy, tiers: Tiers) -> list[float]:
    """Every number a rule or tier compares with, and a cent either side."""
    edges = {1.0, 40.0, 150.0}
    for rule in policy.rules:
        for cond in rule.conditions:
            operand = cond.operand
            if isinstance(operand, Ref) and operand.name.startswith("thresholds."):
                operand = policy.thresholds[operand.name.removeprefix("thresholds.")]
            if isinstance(operand, float):
                edges.add(operand)
    for tier in tiers.tiers:
        edges.update({tier.auto_approve_limit, tier.max_outstanding_unreturned})
    return sorted({round(max(e + d, 0.01), 2) for e in edges for d in (-0.01, 0.0, 0.01)})


def _score_points(policy: Policy) -> list[float]:
    """Each band's floor and the largest score below its top."""
    return sorted({p for b in policy.bands for p in (b.lower, math.nextafter(b.upper, 0.0))})


def requests(policy: Policy) -> st.SearchStrategy[dict[str, Any]]:
    """Scored requests, their numbers drawn as often on a boundary as anywhere (built once per
    policy: making strategies costs more than drawing from them)."""
    money = st.sampled_from(_edges(policy, TIERS)) | st.floats(0.01, 5000.0).map(
        lambda x: round(x, 2)
    )
    drawn = st.fixed_dictionaries(
        {
            "order_stage": st.sampled_from(ORDER_STAGES),
            "amount_requested": money,
            "whole_order": st.booleans(),
            "order_amount": money,
            "category": st.sampled_from(CATEGORIES),
            "reason_detail": st.sampled_from(list(REASON_DETAILS)),
            "refund_type": st.sampled_from(REFUND_TYPES),
            "photo_count": st.integers(0, 3),
            "days_since_delivery": st.sampled_from([0.0, 1.99, 2.0, 2.01]) | st.floats(0.0, 90.0),
            "outstanding_unreturned_value": st.just(0.0) | money,
            "watchlisted": st.sampled_from([False, False, False, True]),
            "linked_abusive_accounts": st.sampled_from([0, 0, 0, 1, 2]),
            "customer_confirmed_abusive_refunds": st.sampled_from([0, 0, 0, 1, 2]),
            "abuse_score": st.sampled_from(_score_points(policy)) | st.floats(0.0, 1.0),
            "tier": st.none() | st.sampled_from(TIERS.names),
            "tier_loss_probability": st.none() | st.floats(0.0, 0.05),
        }
    )
    return drawn.map(_consistent)


def _consistent(row: dict[str, Any]) -> dict[str, Any]:
    """A drawn request made whole: its reason from the detail, no delivery date unless it was
    delivered, and the order worth at least what is asked back."""
    row = dict(row)
    row["reason"] = REASON_DETAILS[row["reason_detail"]]
    if row["order_stage"] != "delivered":
        row["days_since_delivery"] = None
    if row.pop("whole_order") or row["order_amount"] < row["amount_requested"]:
        row["order_amount"] = row["amount_requested"]
    return row


def _one_by_one(row: dict[str, Any], policy: Policy) -> tuple[Any, ...]:
    fields = dict(row)
    scores = Scores(
        abuse_score=fields.pop("abuse_score"),
        tier=fields.pop("tier"),
        tier_loss_probability=fields.pop("tier_loss_probability"),
    )
    d = decide(RequestContext(**fields), scores, policy, TIERS)
    return (d.action.value, d.rule_id, d.abuse_band, d.tier, d.offered_share, d.offered_amount)


def _as_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["days_since_delivery"] = frame["days_since_delivery"].astype(float)
    frame["tier_loss_probability"] = frame["tier_loss_probability"].astype(float)
    return frame


def _in_a_frame(frame: pd.DataFrame, policy: Policy) -> list[tuple[Any, ...]]:
    out = decide_frame(frame, policy, TIERS)
    return [
        (
            r.action,
            r.rule_id,
            r.abuse_band,
            r.tier,
            None if math.isnan(r.offered_share) else r.offered_share,
            None if math.isnan(r.offered_amount) else r.offered_amount,
        )
        for r in out.itertuples()
    ]


def _agree(rows: list[dict[str, Any]], policy: Policy) -> set[str]:
    """Assert both views decide `rows` alike; the rules that fired."""
    one_by_one = [_one_by_one(row, policy) for row in rows]
    assert one_by_one == _in_a_frame(_as_frame(rows), policy)
    return {d[1] for d in one_by_one}


@pytest.mark.parametrize("name", list(POLICIES))
def test_one_request_and_a_frame_decide_alike(name: str) -> None:
    policy = POLICIES[name]

    @settings(max_examples=50, deadline=None)
    @given(st.lists(requests(policy), min_size=1, max_size=30))
    def agree(rows: list[dict[str, Any]]) -> None:
        _agree(rows, policy)

    agree()


def _seeded_rows(policy: Policy, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` requests drawn with numpy from the domain of `requests`, the same in every run."""
    rng = np.random.default_rng(seed)
    edges = _edges(policy, TIERS)
    points = _score_points(policy)

    def money() -> float:
        if rng.random() < 0.5:
            return float(rng.choice(edges))
        return round(float(np.exp(rng.uniform(0.0, np.log(5000.0)))), 2)  # as many small as large

    rows = []
    for _ in range(n):
        row = {
            "order_stage": str(rng.choice(ORDER_STAGES)),
            "amount_requested": money(),
            "whole_order": bool(rng.random() < 0.5),
            "order_amount": money(),
            "category": str(rng.choice(CATEGORIES)),
            "reason_detail": str(rng.choice(list(REASON_DETAILS))),
            "refund_type": str(rng.choice(REFUND_TYPES)),
            "photo_count": int(rng.integers(0, 4)),
            "days_since_delivery": float(rng.choice([0.0, 1.99, 2.0, 2.01, rng.uniform(0, 90)])),
            "outstanding_unreturned_value": 0.0 if rng.random() < 0.5 else money(),
            "watchlisted": bool(rng.random() < 0.25),
            "linked_abusive_accounts": int(rng.choice([0, 0, 0, 1, 2])),
            "customer_confirmed_abusive_refunds": int(rng.choice([0, 0, 0, 1, 2])),
            "abuse_score": float(rng.choice(points)) if rng.random() < 0.5 else rng.random(),
            "tier": None if rng.random() < 0.3 else str(rng.choice(TIERS.names)),
            "tier_loss_probability": None if rng.random() < 0.5 else rng.uniform(0, 0.05),
        }
        rows.append(_consistent(row))
    return rows


@pytest.mark.parametrize("name", list(POLICIES))
def test_both_views_agree_on_a_fixed_sample_that_fires_every_rule(name: str) -> None:
    """The same property on a fixed sample large enough to fire every rule of the policy, so
    a rule one view decides differently from the other is always met."""
    policy = POLICIES[name]
    fired = _agree(_seeded_rows(policy, 2000, seed=5), policy)
    assert fired == {r.id for r in policy.all_rules}
