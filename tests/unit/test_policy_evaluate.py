"""The evaluator: the default policy's behaviour on hand-built requests, purity, and the words of
the prepared policy (the two views' parity is in test_policy_views)."""

from __future__ import annotations

import builtins
import socket
from typing import Any

import numpy as np
import pandas as pd
import pytest

from data.schema import CATEGORIES, ORDER_STAGES, REASON_DETAILS, REFUND_TYPES
from policy.conditions import Ref
from policy.context import RequestContext, Scores, request_values, resolve_tier
from policy.evaluate import compile_policy, decide, decide_frame, partial_offer_share
from policy.model import DEFAULT_POLICY_PATH, HANDWRITTEN_POLICY_PATH, Policy, load_policy
from policy.reasons import Contribution, load_reason_templates
from policy.templates import render_template
from policy.tiers import Tiers, load_tiers
from policy.vocabulary import CONTEXT_FIELDS, Action, Unit, format_value


@pytest.fixture(scope="module")
def tiers() -> Tiers:
    return load_tiers()


@pytest.fixture(scope="module")
def policy(tiers: Tiers) -> Policy:
    return load_policy(DEFAULT_POLICY_PATH, tiers=tiers)


def context(**changes: Any) -> RequestContext:
    base: dict[str, Any] = {
        "order_stage": "delivered",
        "order_amount": 120.0,
        "amount_requested": 120.0,
        "category": "apparel",
        "reason": "changed_mind",
        "reason_detail": "changed_mind",
        "refund_type": "return_and_refund",
        "days_since_delivery": 4.0,
    }
    return RequestContext(**(base | changes))


def nad(amount: float, **changes: Any) -> RequestContext:
    return context(
        reason="not_as_described",
        reason_detail="not_as_described",
        order_amount=amount,
        amount_requested=amount,
        **changes,
    )


def test_unshipped_low_risk_is_approved_at_once(policy: Policy, tiers: Tiers) -> None:
    ctx = context(order_stage="not_shipped", refund_type="refund_only", days_since_delivery=None)
    decision = decide(ctx, Scores(abuse_score=0.3), policy, tiers)
    assert decision.action == Action.AUTO_APPROVE
    assert decision.rule_id == "unshipped"


def test_unshipped_extreme_risk_goes_to_review(policy: Policy, tiers: Tiers) -> None:
    ctx = context(order_stage="not_shipped", refund_type="refund_only", days_since_delivery=None)
    decision = decide(ctx, Scores(abuse_score=0.95), policy, tiers)
    assert decision.action == Action.MANUAL_REVIEW
    assert decision.rule_id == "unshipped_extreme_risk"
    assert "extreme" in decision.reasons[0]


def test_trusted_tier_within_limits_is_refunded_before_return(policy: Policy, tiers: Tiers) -> None:
    decision = decide(context(), Scores(abuse_score=0.05, tier="gold"), policy, tiers)
    assert decision.action == Action.REFUND_BEFORE_RETURN
    assert decision.tier == "gold"
    # The tier can come from the tier model's probability as well as by name.
    gold_bound = tiers.get("gold").max_loss_probability
    by_score = decide(
        context(), Scores(abuse_score=0.05, tier_loss_probability=gold_bound / 2), policy, tiers
    )
    assert by_score.action == Action.REFUND_BEFORE_RETURN


def test_exposure_limit_exceeded_is_not_refunded_before_return(
    policy: Policy, tiers: Tiers
) -> None:
    limit = tiers.get("gold").max_outstanding_unreturned
    ctx = context(outstanding_unreturned_value=limit - 50.0)
    decision = decide(ctx, Scores(abuse_score=0.05, tier="gold"), policy, tiers)
    assert decision.action != Action.REFUND_BEFORE_RETURN
    # Within the auto-approve limit, but an approval pays before the goods are back too: at the
    # limit the decision is never more lenient than under it.
    assert decision.action == Action.STANDARD_RETURN
    over_amount = context(
        outstanding_unreturned_value=limit - 50.0, amount_requested=300.0, order_amount=300.0
    )
    decision = decide(over_amount, Scores(abuse_score=0.05, tier="gold"), policy, tiers)
    assert decision.action == Action.STANDARD_RETURN


def test_untrusted_tier_gets_the_standard_return(policy: Policy, tiers: Tiers) -> None:
    decision = decide(context(), Scores(abuse_score=0.05, tier="standard"), policy, tiers)
    assert decision.action == Action.STANDARD_RETURN
    assert decision.rule_id == "default"


def test_new_customer_gets_the_default_tier(policy: Policy, tiers: Tiers) -> None:
    decision = decide(context(), Scores(abuse_score=0.05), policy, tiers)
    assert decision.tier == tiers.default.name


def test_minor_not_as_described_on_low_value_gets_a_partial_offer(
    policy: Policy, tiers: Tiers
) -> None:
    decision = decide(nad(40.0), Scores(abuse_score=0.05), policy, tiers)
    assert decision.action == Action.PARTIAL_REFUND_OFFER
    assert decision.offered_share is not None and decision.offered_amount is not None
    assert 0 < decision.offered_share < 1
    assert decision.offered_amount == pytest.approx(round(40.0 * decision.offered_share, 2))
    assert f"{decision.offered_amount:,.2f}" in decision.customer_message
    # Not on a high-value item.
    assert decide(nad(400.0), Scores(abuse_score=0.05), policy, tiers).action != (
        Action.PARTIAL_REFUND_OFFER
    )


def test_partial_share_falls_as_risk_rises(policy: Policy, tiers: Tiers) -> None:
    shares = [
        decide(nad(40.0), Scores(abuse_score=s), policy, tiers).offered_share
        for s in (0.0, 0.05, 0.15, 0.25)
    ]
    assert all(s is not None for s in shares)
    assert shares == sorted(shares, reverse=True)  # type: ignore[type-var]
    assert len(set(shares)) == len(shares)


def test_partial_share_falls_when_shipping_is_cheap_relative_to_value(
    policy: Policy, tiers: Tiers
) -> None:
    cheap_item = decide(nad(25.0), Scores(abuse_score=0.05), policy, tiers).offered_share
    dearer_item = decide(nad(75.0), Scores(abuse_score=0.05), policy, tiers).offered_share
    assert cheap_item is not None and dearer_item is not None
    assert dearer_item < cheap_item
    # Same item value, cheaper return shipping (apparel 7) than electronics (12): lower offer.
    apparel = decide(nad(60.0), Scores(abuse_score=0.05), policy, tiers).offered_share
    electronics = decide(
        nad(60.0, category="electronics"), Scores(abuse_score=0.05), policy, tiers
    ).offered_share
    assert apparel is not None and electronics is not None
    assert apparel < electronics


def test_partial_share_formula(policy: Policy) -> None:
    spec = policy.partial_offer
    assert spec is not None
    expected = (1 - spec.resale_recovery_share + 7.0 / 50.0) * (1 - spec.risk_discount * 0.1)
    assert partial_offer_share(50.0, 7.0, 0.1, spec) == pytest.approx(expected, abs=1e-4)
    assert partial_offer_share(5.0, 7.0, 0.0, spec) == spec.max_share
    assert partial_offer_share(5000.0, 0.0, 0.9, spec) == spec.min_share


@pytest.mark.parametrize("score", [0.35, 0.75])
def test_high_risk_goes_to_review(policy: Policy, tiers: Tiers, score: float) -> None:
    decision = decide(context(), Scores(abuse_score=score, tier="gold"), policy, tiers)
    assert decision.action == Action.MANUAL_REVIEW
    assert decision.rule_id == "high_risk"


def test_high_amount_goes_to_review(policy: Policy, tiers: Tiers) -> None:
    ctx = context(order_amount=1500.0, amount_requested=1500.0, category="electronics")
    decision = decide(ctx, Scores(abuse_score=0.01, tier="gold"), policy, tiers)
    assert decision.action == Action.MANUAL_REVIEW
    assert decision.rule_id == "high_amount"
    assert "1,500.00" in decision.reasons[0] and "1,000.00" in decision.reasons[0]


def test_a_high_amount_is_said_once_among_the_reasons(policy: Policy, tiers: Tiers) -> None:
    ctx = context(order_amount=1500.0, amount_requested=1500.0, category="electronics")
    scores = Scores(
        abuse_score=0.01,
        tier="gold",
        contributions=(
            Contribution("request_amount", 1500.0, 0.02),
            Contribution("customer_not_received_claims_30d", 3.0, 0.01),
        ),
    )
    decision = decide(ctx, scores, policy, tiers, load_reason_templates())
    assert decision.rule_id == "high_amount"
    assert decision.reasons == (
        "Asks back 1,500.00, at or above the review limit of 1,000.00.",
        "3 'not received' claims in the last 30 days",
    )


def test_watch_list_and_linked_abusers_go_to_review(policy: Policy, tiers: Tiers) -> None:
    scores = Scores(abuse_score=0.01, tier="gold")
    assert decide(context(watchlisted=True), scores, policy, tiers).rule_id == "watchlisted"
    linked = decide(context(linked_abusive_accounts=2), scores, policy, tiers)
    assert linked.rule_id == "linked_to_abusers"


def test_reasons_combine_rule_words_and_top_features(policy: Policy, tiers: Tiers) -> None:
    scores = Scores(
        abuse_score=0.5,
        contributions=(
            Contribution("customer_not_received_claims_30d", 3.0, 0.30),
            Contribution("customer_tenure_days", 400.0, -0.2),
            Contribution("order_days_since_delivery", 1.0, 0.10),
        ),
    )
    decision = decide(context(), scores, policy, tiers, load_reason_templates())
    assert decision.reasons[0].startswith("The abuse score 50% is in the high band")
    assert decision.reasons[1] == "3 'not received' claims in the last 30 days"
    assert decision.reasons[2] == "Claim made 1 days after delivery"
    assert len(decision.reasons) == 3  # the feature that lowered the score is not a reason
    assert "50%" not in decision.customer_message and "high" not in decision.customer_message


def test_decide_is_pure(policy: Policy, tiers: Tiers, monkeypatch: pytest.MonkeyPatch) -> None:
    templates = load_reason_templates()
    top = (Contribution("customer_refund_requests_90d", 4, 0.2),)
    scores = Scores(abuse_score=0.2, contributions=top)
    first = decide(nad(40.0), scores, policy, tiers, templates)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decide must not do I/O")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(socket, "socket", refuse)
    again = [decide(nad(40.0), scores, policy, tiers, templates) for _ in range(3)]
    assert all(d == first for d in again)


def random_requests(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = np.round(rng.lognormal(4.2, 1.0, n), 2)
    delivered = rng.random(n) < 0.6
    tiers = np.array(["gold", "silver", "standard", "watch", "restricted"], dtype=object)
    frame = pd.DataFrame(
        {
            "order_stage": rng.choice(ORDER_STAGES, n),
            "order_amount": amount,
            "amount_requested": np.round(amount * rng.choice([1.0, 0.5], n), 2),
            "category": rng.choice(CATEGORIES, n),
            "reason_detail": rng.choice(list(REASON_DETAILS), n),
            "refund_type": rng.choice(REFUND_TYPES, n),
            "photo_count": rng.integers(0, 3, n),
            "days_since_delivery": np.where(delivered, rng.exponential(5, n), np.nan),
            "outstanding_unreturned_value": rng.choice([0.0, 100.0, 700.0], n),
            "watchlisted": rng.random(n) < 0.03,
            "linked_abusive_accounts": rng.choice([0, 0, 0, 1, 2], n),
            "customer_confirmed_abusive_refunds": rng.choice([0, 0, 0, 0, 1, 3], n),
            "abuse_score": rng.beta(0.6, 3.0, n),
            "tier": rng.choice(tiers, n),
        }
    )
    frame["reason"] = frame["reason_detail"].map(REASON_DETAILS)
    return frame


def test_context_refuses_unknown_values() -> None:
    with pytest.raises(ValueError, match="unknown category"):
        context(category="shoes")


def _reference_decision(
    ctx: RequestContext, scores: Scores, policy: Policy, tiers: Tiers, rule_id: str
) -> Any:
    """The words of rule `rule_id` for a request worked out the plain way: every context field
    and threshold written out, the templates filled by `render_template`."""
    tier = resolve_tier(scores, tiers)
    band = policy.band_of(scores.abuse_score)
    values = request_values(dict(ctx), scores.abuse_score, band, tier)
    rule = policy.rule(rule_id)
    share = amount = None
    if rule.action == Action.PARTIAL_REFUND_OFFER:
        assert policy.partial_offer is not None
        spec = policy.partial_offer
        share = partial_offer_share(
            ctx.amount_requested,
            spec.return_shipping_cost_by_category.get(ctx.category, spec.return_shipping_cost),
            scores.abuse_score,
            spec,
        )
        amount = float(np.round(share * ctx.amount_requested, 2))
    units: dict[str, Unit] = {}
    for r in policy.rules:
        for c in r.conditions:
            if isinstance(c.operand, Ref) and c.operand.name.startswith("thresholds."):
                units[c.operand.name] = CONTEXT_FIELDS[c.field].unit
    words = {name: format_value(CONTEXT_FIELDS[name].unit, v) for name, v in values.items()}
    for name, v in policy.thresholds.items():
        words[f"thresholds.{name}"] = format_value(units.get(f"thresholds.{name}", Unit.TEXT), v)
    words["offered_share"] = format_value(Unit.SCORE, share)
    words["offered_amount"] = format_value(Unit.MONEY, amount)
    message = rule.customer_message or policy.messages[rule.action]
    return (
        rule.id,
        render_template(rule.reason, words),
        render_template(message, words),
        share,
        amount,
    )


@pytest.mark.parametrize("path", [DEFAULT_POLICY_PATH, HANDWRITTEN_POLICY_PATH])
def test_the_prepared_policy_words_every_rule_as_the_plain_evaluation(
    path: Any, tiers: Tiers
) -> None:
    """Deciding with the policy prepared once (only the fired rule's words written) gives the
    rule the frame view gives, and the reasons and message of writing every word plainly."""
    policy = load_policy(path, tiers=tiers)
    frame = random_requests(3000, seed=11)
    batch = decide_frame(frame, policy, tiers)
    fired = set()
    for i, record in enumerate(frame.to_dict("records")):
        row: dict[str, Any] = {str(k): v for k, v in record.items()}
        score, tier = row.pop("abuse_score"), row.pop("tier")
        days = float(row.pop("days_since_delivery"))
        ctx = RequestContext(**row, days_since_delivery=None if np.isnan(days) else days)
        scores = Scores(abuse_score=score, tier=tier)
        one = decide(ctx, scores, policy, tiers)
        rule_id, reason, message, share, amount = _reference_decision(
            ctx, scores, policy, tiers, str(batch["rule_id"].iat[i])
        )
        assert (one.rule_id, one.reasons[0], one.customer_message) == (rule_id, reason, message)
        assert (one.offered_share, one.offered_amount) == (share, amount)
        fired.add(rule_id)
    assert fired == {r.id for r in policy.all_rules}


def test_a_policy_is_prepared_once(policy: Policy) -> None:
    assert compile_policy(policy) is compile_policy(policy)
    other = load_policy(DEFAULT_POLICY_PATH, tiers=load_tiers())
    assert compile_policy(other) is not compile_policy(policy)
