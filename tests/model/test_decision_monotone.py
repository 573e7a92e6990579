"""The whole decision is monotone in risk evidence, through the service's own decision path.

A small generated world: its history in a real SQLite event store, a refund-abuse model and a
credit-tier model trained on that history, the shipped policy and tiers. Requests are the
world's own last refund requests (kept out of the history). Each is decided as the service
decides it (`serving.service.Service._decide_new`): features from the event store by the online
builder, the tier of the customer's latest monthly snapshot (`serving.tiers.TierScores`), both
models (`serving.scoring.score`), the request context with the exposure ledger and the
analysts' watch list (`request_context`), and the policy (`decide_scored`, tier pins included).

Hypothesis then adds risk evidence - a refund of the customer confirmed abusive, a "not
received" claim on a delivered order, a linked account with confirmed abuse (appended to the
event store as the shop would send them), a watch-list entry, a worse tier, a higher amount at
the same order, more value outstanding before return - and checks that the abuse score never
falls and the action never becomes more lenient, and that the guardrails hold: confirmed abuse,
the worst tiers and the watch list never receive a privilege.

Evidence appended to the store stays there, so a customer met again later carries it in its
starting point; every comparison is between the request just before and just after its own
evidence, which is what the property is about.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from built_once import built_once, load, private_copy, save
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_world import World, decision_body, settings_for

from data.generator import generate_world
from data.schema import NON_RETURNABLE_CATEGORIES
from features.batch import build_credit_snapshots, build_refund_features
from features.online import OnlineFeatureBuilder
from features.store import EventStore
from policy.context import RequestContext, Scores
from policy.evaluate import decide
from policy.model import DEFAULT_POLICY_PATH, Policy, load_policy
from policy.tiers import DEFAULT_TIERS_PATH, Tiers, load_tiers, parse_tiers
from policy.vocabulary import Action
from serving.events import order_links
from serving.exposure import ExposureLedger, pays_before_return
from serving.models import ModelSet, model_from_files
from serving.schemas import RefundDecisionRequest
from serving.scoring import Snapshot, decide_scored, load_policy_set, request_context, score
from serving.tiers import TierScores
from training.abuse import train_abuse
from training.dataset import build_abuse_dataset, plan_split
from training.run_abuse import scoring_card
from training.run_tier import tier_card
from training.tier import default_cutoff, train_tier_model

pytestmark = pytest.mark.slow

LENIENCE: dict[Action, int] = {
    Action.AUTO_APPROVE: 0,
    Action.REFUND_BEFORE_RETURN: 1,
    Action.PARTIAL_REFUND_OFFER: 2,
    Action.STANDARD_RETURN: 3,
    Action.MANUAL_REVIEW: 4,
}
"""Actions from most to least lenient: evidence may only move a decision down this list."""

HELD = 60
"""The world's last refund requests, kept out of the history and decided by the tests."""

EXAMPLES = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
"""Seeded and modest: the same examples on every run, a few seconds in all."""


@dataclass(repr=False)
class DecisionPath:
    """The pieces the service decides with, over one world's event store."""

    world: World
    builder: OnlineFeatureBuilder
    tier_scores: TierScores
    snapshot: Snapshot
    tier_names: tuple[str, ...]
    ids: itertools.count[int]
    claimed: set[str]

    def decide(
        self,
        body: dict[str, Any],
        *,
        outstanding: float = 0.0,
        watchlisted: bool = False,
        pinned_tier: str | None = None,
    ) -> tuple[float, Action, str, str]:
        """(abuse score, action, rule, tier) as the service decides the request."""
        request = RefundDecisionRequest.model_validate(body)
        row = self.builder.vector(request.refund_row())
        tier = self.tier_scores.score(
            self.snapshot.models, request.customer_id, request.requested_at
        )
        scored = score(self.snapshot.models, row, tier)
        context = request_context(request, row, outstanding, watchlisted=watchlisted)
        decision, _, degraded = decide_scored(self.snapshot, context, scored, pinned_tier)
        assert not degraded and scored.abuse_score is not None
        return scored.abuse_score, decision.action, decision.rule_id, decision.tier

    def __repr__(self) -> str:
        return f"DecisionPath({len(self.world.held)} held requests)"

    def new_id(self, prefix: str) -> str:
        """An id no event of the world uses."""
        return f"{prefix}-evidence-{next(self.ids)}"


def _train(tmp: Path) -> None:
    """The world's history in an event store under `tmp`, both models trained on it as the
    training commands would train them; their cards and the world's tables kept beside them."""
    settings_ = settings_for(tmp)
    tables = generate_world(6000, seed=5).tables
    refunds = tables["refund_requests"].sort_values("requested_at")
    held = refunds.tail(HELD)
    history = dict(tables)
    history["refund_requests"] = refunds.iloc[:-HELD]
    kept = set(history["refund_requests"]["refund_id"])
    history["outcomes"] = tables["outcomes"][tables["outcomes"]["refund_id"].isin(kept)]

    rows = build_refund_features(history)
    dataset = build_abuse_dataset(rows, history["outcomes"], plan_split(rows["requested_at"]))
    abuse_result = train_abuse(dataset, seed=1)
    abuse_result.model.booster_.save_model(str(tmp / "abuse.txt"))
    tiers = load_tiers(DEFAULT_TIERS_PATH)
    snapshots = pd.concat(list(build_credit_snapshots(history)), ignore_index=True)
    cutoff = default_cutoff(snapshots, 2)
    tier_result = train_tier_model(
        snapshots, train_end=cutoff, test_start=cutoff, seed=1, tiers=tiers
    )
    tier_result.model.booster_.save_model(str(tmp / "tier.txt"))

    assert settings_.database_url is not None
    store = EventStore.open(settings_.database_url)
    store.write_frames(history)
    store.dispose()
    save(
        (tables, held, scoring_card(abuse_result), tier_card(tier_result)),
        tmp / "trained.pickle",
    )


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> DecisionPath:
    """The decision path over the trained world: trained once per test run, by whichever
    worker asks first; each worker appends its evidence to its own copy of the store."""
    tmp = private_copy(
        built_once(tmp_path_factory, "decision-path", _train), tmp_path_factory, "decision-path"
    )
    tables, held, abuse_card, tier_card_ = load(tmp / "trained.pickle")
    settings_ = settings_for(tmp)
    abuse = model_from_files("refund-abuse", "1", "test", "champion", tmp / "abuse.txt", abuse_card)
    tier = model_from_files(
        "credit-tier",
        "1",
        "test",
        "champion",
        tmp / "tier.txt",
        tier_card_,
        history_feature="customer_orders_all_time",
    )
    assert settings_.database_url is not None
    store = EventStore.open(settings_.database_url)
    builder = OnlineFeatureBuilder(store)
    models = ModelSet(abuse, tier, {}, "champion")
    snapshot = Snapshot(models, load_policy_set())
    world = World(settings_, tables, held, {}, tmp / "data" / "service.db")
    names = load_tiers(DEFAULT_TIERS_PATH).names
    return DecisionPath(
        world, builder, TierScores(builder), snapshot, names, itertools.count(), set()
    )


def test_the_world_reaches_privileges_and_review_so_the_properties_can_fail(
    path: DecisionPath,
) -> None:
    # The properties below mean something only if the requests they start from reach both
    # ends of the action order: privileges that evidence must take away, and reviews. First in
    # the module, before any test appends evidence about the held customers.
    seen = set()
    for i in range(HELD):
        body = decision_body(path.world, path.world.held.iloc[i])
        body["amount_requested"] = round(max(float(body["order"]["amount"]) * 0.25, 1.0), 2)
        for pin in (None, "gold"):
            seen.add(path.decide(body, pinned_tier=pin)[1])
    assert Action.REFUND_BEFORE_RETURN in seen or Action.AUTO_APPROVE in seen
    assert Action.STANDARD_RETURN in seen


# --- evidence, appended to the event store as the shop would send it ----------------------------


def _past_order(
    path: DecisionPath, customer_id: str, base: dict[str, Any], at: pd.Timestamp
) -> dict[str, Any]:
    """A delivered order of the customer, placed at `at`, with the base order's fingerprints."""
    return {
        "order_id": path.new_id("o"),
        "customer_id": customer_id,
        "ordered_at": at.to_pydatetime(),
        "category": "electronics",
        "amount": 300.0,
        "item_count": 1,
        "payment_method": "card",
        "device_id": base["device_id"],
        "address_id": base["address_id"],
        "payment_fingerprint": base["payment_fingerprint"],
        "shipped_at": (at + pd.Timedelta(days=1)).to_pydatetime(),
        "delivered_at": (at + pd.Timedelta(days=3)).to_pydatetime(),
        "delivery_evidence": "signature",
    }


def _claim(order: dict[str, Any], at: pd.Timestamp, detail: str) -> dict[str, Any]:
    refund_only = detail == "not_received"
    return {
        "refund_id": f"{order['order_id']}-r",
        "order_id": order["order_id"],
        "customer_id": order["customer_id"],
        "requested_at": at.to_pydatetime(),
        "refund_type": "refund_only" if refund_only else "return_and_refund",
        "reason": "logistics" if refund_only else "not_as_described",
        "reason_detail": detail,
        "amount_requested": order["amount"],
        "photo_count": 0,
        "order_stage": "delivered",
    }


def _abusive(refund: dict[str, Any], at: pd.Timestamp, path: DecisionPath) -> dict[str, Any]:
    return {
        "outcome_id": path.new_id("x"),
        "refund_id": refund["refund_id"],
        "is_abusive": True,
        "known_at": at.to_pydatetime(),
        "source": "delivery_proof",
    }


def _earlier_order(path: DecisionPath, customer_id: str, before: pd.Timestamp) -> dict[str, Any]:
    """One of the customer's own orders delivered before `before` that no claim is about yet,
    so that evidence about it adds a claim and nothing else (a new order would also add
    history, which a model may rightly read as trust)."""
    orders = path.world.tables["orders"]
    claimed = set(path.world.tables["refund_requests"]["order_id"]) | path.claimed
    mine = orders[
        (orders["customer_id"] == customer_id)
        & (orders["delivered_at"] < before)
        & ~orders["order_id"].isin(claimed)
    ]
    if mine.empty:
        return {}
    order = mine.sort_values("delivered_at").iloc[-1].to_dict()
    path.claimed.add(order["order_id"])
    return order


def _open_refund(path: DecisionPath, customer_id: str, before: pd.Timestamp) -> str | None:
    """One of the customer's refund requests made before `before` whose outcome nobody knew
    by then (and no test has used yet)."""
    tables = path.world.tables
    refunds, outcomes = tables["refund_requests"], tables["outcomes"]
    known = set(outcomes.loc[outcomes["known_at"] < before, "refund_id"]) | path.claimed
    mine = refunds[
        (refunds["customer_id"] == customer_id)
        & (refunds["requested_at"] < before)
        & ~refunds["refund_id"].isin(known)
    ]
    if mine.empty:
        return None
    refund_id = str(mine.sort_values("requested_at")["refund_id"].iloc[-1])
    path.claimed.add(refund_id)
    return refund_id


def add_evidence(path: DecisionPath, kind: str, body: dict[str, Any]) -> bool:
    """Append one piece of risk evidence about the request's customer, known well before it
    (before the monthly snapshot its tier is read from, so both models see it).

    Returns whether the evidence is a claim alone: False when the customer had no earlier
    order to claim on and a new one was placed for it (a linked account's evidence adds
    nothing to the customer's own history, so it counts as alone).
    """
    when = pd.Timestamp(body["requested_at"]).tz_localize(None)
    placed, claimed, found = (when - pd.Timedelta(days=d) for d in (75, 70, 45))
    customer = body["customer_id"]
    if kind == "confirmed_abuse":
        # The purest form: a refund the customer asked for earlier is found abusive.
        refund_id = _open_refund(path, customer, claimed)
        if refund_id is not None:
            path.builder.append_many(
                {"outcomes": [_abusive({"refund_id": refund_id}, found, path)]}
            )
            return True
    if kind in ("confirmed_abuse", "not_received_claim"):
        order = _earlier_order(path, customer, claimed)
        alone = bool(order)
        rows: dict[str, list[dict[str, Any]]] = {"orders": [], "identity_links": []}
        if not order:
            order = _past_order(path, customer, body["order"], placed)
            rows = {"orders": [order], "identity_links": order_links(order)}
        detail = "not_received" if kind == "not_received_claim" else "not_as_described"
        claim = _claim(order, max(claimed, pd.Timestamp(order["delivered_at"])), detail)
        claim["refund_id"] = path.new_id("r")
        rows["refund_requests"] = [claim]
        if kind == "confirmed_abuse":
            rows["outcomes"] = [_abusive(claim, found, path)]
        path.builder.append_many({k: v for k, v in rows.items() if v})
        return alone
    elif kind == "linked_abuser":
        # A new account on the customer's device and address, with a refund confirmed abusive.
        other = path.new_id("c")
        order = _past_order(path, other, body["order"], placed)
        order["payment_fingerprint"] = path.new_id("p")
        claim = _claim(order, claimed, "not_received")
        rows = {
            "customers": [
                {
                    "customer_id": other,
                    "signup_at": (placed - pd.Timedelta(days=5)).to_pydatetime(),
                    "region": "north",
                }
            ],
            "orders": [order],
            "identity_links": order_links(order),
            "refund_requests": [claim],
            "outcomes": [_abusive(claim, found, path)],
        }
    else:
        raise AssertionError(kind)
    path.builder.append_many(rows)
    return True


STORE_EVIDENCE = ("confirmed_abuse", "linked_abuser")
CONTEXT_EVIDENCE = ("watchlisted", "worse_tier", "higher_amount", "more_outstanding")


@st.composite
def requests(draw: st.DrawFn, path: DecisionPath) -> dict[str, Any]:
    """A realistic request: one of the world's held requests, reshaped within what a shop sees
    (its amount, refund type, reason and the analyst's tier pin vary)."""
    refund = path.world.held.iloc[draw(st.integers(0, HELD - 1))]
    body = decision_body(path.world, refund)
    order_amount = float(body["order"]["amount"])
    share = draw(st.sampled_from([0.1, 0.25, 0.5, 1.0]))
    body["amount_requested"] = round(max(order_amount * share, 1.0), 2)
    if draw(st.booleans()):
        detail = draw(st.sampled_from(["not_as_described", "changed_mind", "not_received"]))
        body["reason_detail"] = detail
        body["reason"] = {"not_received": "logistics"}.get(detail, detail)
        body["refund_type"] = "refund_only" if detail == "not_received" else "return_and_refund"
    return body


def lenience_ok(before: Action, after: Action) -> bool:
    """Whether `after` is at most as lenient as `before`."""
    return LENIENCE[after] >= LENIENCE[before]


def privileged(action: Action, body: dict[str, Any]) -> bool:
    """A privilege: a refund before return, a partial offer, or approving shipped goods."""
    if action in (Action.REFUND_BEFORE_RETURN, Action.PARTIAL_REFUND_OFFER):
        return True
    return action == Action.AUTO_APPROVE and body["order_stage"] != "not_shipped"


@given(data=st.data())
@EXAMPLES
def test_more_risk_evidence_never_lowers_the_score_nor_makes_the_decision_more_lenient(
    path: DecisionPath, data: st.DataObject
) -> None:
    body = data.draw(requests(path), label="request")
    pin = data.draw(st.sampled_from([None, *path.tier_names]), label="pinned tier")
    outstanding = data.draw(st.sampled_from([0.0, 150.0, 290.0, 790.0]), label="outstanding")
    evidence = data.draw(
        st.lists(
            st.sampled_from(STORE_EVIDENCE + CONTEXT_EVIDENCE), min_size=1, max_size=3, unique=True
        ),
        label="evidence",
    )
    score_before, before, rule_before, tier_before = path.decide(
        body, outstanding=outstanding, pinned_tier=pin
    )

    after_body = dict(body)
    watchlisted, after_pin, after_outstanding = False, pin, outstanding
    alone = True
    for kind in evidence:
        if kind in STORE_EVIDENCE:
            alone &= add_evidence(path, kind, body)
        elif kind == "watchlisted":
            watchlisted = True
        elif kind == "worse_tier":
            worse = path.tier_names[path.tier_names.index(tier_before) + 1 :]
            after_pin = worse[0] if worse else tier_before
        elif kind == "higher_amount":
            after_body["amount_requested"] = float(body["order"]["amount"])
        elif kind == "more_outstanding":
            after_outstanding = outstanding + 200.0
    score_after, after, rule_after, tier_after = path.decide(
        after_body, outstanding=after_outstanding, watchlisted=watchlisted, pinned_tier=after_pin
    )

    what = f"{evidence}: {rule_before} ({before}, {score_before:.4f}, {tier_before}) -> "
    what += f"{rule_after} ({after}, {score_after:.4f}, {tier_after}); claim alone: {alone}"
    if not {"higher_amount", *STORE_EVIDENCE} & set(evidence):
        # Evidence the models do not read leaves the score as it was (the models' own evidence
        # is checked on its own below).
        assert score_after == score_before, what
    assert lenience_ok(before, after), what
    if {"confirmed_abuse", "linked_abuser", "watchlisted"} & set(evidence) or tier_after in (
        "watch",
        "restricted",
    ):
        assert not privileged(after, after_body), what


def decide_around_store_evidence(
    path: DecisionPath, data: st.DataObject
) -> tuple[str, bool, tuple[float, Action, str, str], tuple[float, Action, str, str]]:
    """A request decided before and after one piece of evidence arrives through the store."""
    body = data.draw(requests(path), label="request")
    kind = data.draw(st.sampled_from([*STORE_EVIDENCE, "not_received_claim"]), label="evidence")
    before = path.decide(body)
    alone = add_evidence(path, kind, body)
    after = path.decide(body)
    what = f"{kind}: {before[2]} ({before[1]}, {before[0]:.4f}, {before[3]}) -> "
    what += f"{after[2]} ({after[1]}, {after[0]:.4f}, {after[3]}); claim alone: {alone}"
    return what, alone, before, after


@given(data=st.data())
@EXAMPLES
def test_evidence_from_the_event_store_never_lowers_the_score(
    path: DecisionPath, data: st.DataObject
) -> None:
    what, _, before, after = decide_around_store_evidence(path, data)
    assert after[0] >= before[0] - 1e-9, what


@given(data=st.data())
@EXAMPLES
def test_evidence_from_the_event_store_never_betters_the_tier_nor_the_action(
    path: DecisionPath, data: st.DataObject
) -> None:
    what, alone, before, after = decide_around_store_evidence(path, data)
    if alone:
        assert path.tier_names.index(after[3]) >= path.tier_names.index(before[3]), what
    assert lenience_ok(before[1], after[1]), what


def test_no_piece_of_store_evidence_lowers_any_held_customers_tier_score(
    path: DecisionPath,
) -> None:
    # Every held request once per kind of evidence, compared on the tier model's probability
    # itself (a tier is a band of it, so a fall that crosses no boundary is caught too): a
    # customer's first claim moves features from missing to a value, which monotone
    # constraints do not order, so the tier inputs must not include such features.
    models = path.snapshot.models
    checked = 0
    for kind in (*STORE_EVIDENCE, "not_received_claim"):
        for i in range(HELD):
            body = decision_body(path.world, path.world.held.iloc[i])
            customer, when = body["customer_id"], pd.Timestamp(body["requested_at"])
            at = when.tz_localize(None).to_pydatetime()
            before = path.tier_scores.score(models, customer, at)
            alone = add_evidence(path, kind, body)
            after = path.tier_scores.score(models, customer, at)
            if before is None or after is None or not alone:
                continue
            checked += 1
            assert after >= before - 1e-12, f"{kind} on {customer}: {before:.5f} -> {after:.5f}"
    assert checked > HELD, "too few customers with a tier score to mean anything"


# --- the policy and the exposure ledger together -----------------------------------------------


@functools.cache
def shipped() -> tuple[Policy, Tiers]:
    """The shipped policy and tiers, read once."""
    tiers = load_tiers(DEFAULT_TIERS_PATH)
    return load_policy(DEFAULT_POLICY_PATH, tiers), tiers


@given(
    amounts=st.lists(st.floats(5.0, 240.0), min_size=1, max_size=12),
    tier=st.sampled_from(["gold", "silver"]),
    stages=st.lists(st.sampled_from(["in_transit", "delivered"]), min_size=12, max_size=12),
    refund_types=st.lists(
        st.sampled_from(["refund_only", "return_and_refund"]), min_size=12, max_size=12
    ),
)
@settings(max_examples=200, derandomize=True, database=None, deadline=None)
def test_money_paid_before_goods_are_back_never_passes_the_tiers_limit(
    amounts: list[float], tier: str, stages: list[str], refund_types: list[str]
) -> None:
    policy, tiers = shipped()
    limit = tiers.get(tier).max_outstanding_unreturned
    ledger = ExposureLedger()
    paid = 0.0
    for i, amount in enumerate(amounts):
        amount = round(amount, 2)
        context = RequestContext(
            order_stage=stages[i],
            order_amount=amount,
            amount_requested=amount,
            category="apparel",
            reason="changed_mind",
            reason_detail="changed_mind",
            refund_type=refund_types[i],
            days_since_delivery=3.0 if stages[i] == "delivered" else None,
            outstanding_unreturned_value=ledger.outstanding("c"),
        )
        decision = decide(context, Scores(abuse_score=0.01, tier=tier), policy, tiers)
        if pays_before_return(decision.action.value, stages[i]):
            ledger.open("c", f"r{i}", amount)
        # Counted here on its own, so that a ledger that forgets a payment is caught too.
        if decision.action in (Action.AUTO_APPROVE, Action.REFUND_BEFORE_RETURN):
            paid += amount
        assert paid <= limit + 1e-6, decision.rule_id


@st.composite
def contexts(draw: st.DrawFn) -> RequestContext:
    """Any valid request context of shipped goods, amounts around the policy's limits."""
    from data.schema import CATEGORIES, REASON_DETAILS

    detail = draw(st.sampled_from(sorted(REASON_DETAILS)))
    amount = draw(st.sampled_from([5.0, 20.0, 30.0, 79.0, 110.0, 240.0, 600.0, 999.0, 1500.0]))
    stage = draw(st.sampled_from(["in_transit", "delivered"]))
    return RequestContext(
        order_stage=stage,
        order_amount=amount,
        amount_requested=amount,
        category=draw(st.sampled_from(CATEGORIES)),
        reason=REASON_DETAILS[detail],
        reason_detail=detail,
        refund_type=draw(st.sampled_from(["refund_only", "return_and_refund"])),
        days_since_delivery=2.0 if stage == "delivered" else None,
        outstanding_unreturned_value=draw(st.sampled_from([0.0, 100.0, 500.0])),
        watchlisted=draw(st.booleans()),
        linked_abusive_accounts=draw(st.sampled_from([0, 0, 1, 2])),
        customer_confirmed_abusive_refunds=draw(st.sampled_from([0, 0, 1, 4])),
    )


@given(
    context=contexts(),
    score_=st.floats(0.0, 0.999),
    tier=st.sampled_from(["gold", "silver", "standard", "watch", "restricted"]),
)
@settings(max_examples=400, derandomize=True, database=None, deadline=None)
def test_confirmed_abuse_the_worst_tiers_and_the_watch_list_never_get_a_privilege(
    context: RequestContext, score_: float, tier: str
) -> None:
    policy, tiers = shipped()
    # Tiers as generous as a tiers file could make them, so the policy's own guardrails are
    # what is tested, not the shipped tiers' lack of privileges.
    generous = parse_tiers(
        {
            "version": 1,
            "default_tier": "standard",
            "tiers": [
                {
                    "name": t.name,
                    "max_loss_probability": t.max_loss_probability,
                    "refund_before_return_allowed": t.name in ("gold", "silver"),
                    "auto_approve_limit": 500.0,
                    "max_outstanding_unreturned": 2000.0,
                }
                for t in tiers.tiers
            ],
        }
    )
    decision = decide(context, Scores(abuse_score=score_, tier=tier), policy, generous)
    guarded = (
        context.watchlisted
        or context.linked_abusive_accounts > 0
        or context.customer_confirmed_abusive_refunds > 0
        or tier in ("watch", "restricted")
    )
    if guarded:
        assert not privileged(decision.action, dict(context)), decision.rule_id


@given(
    context=contexts(),
    score_=st.floats(0.0, 0.999),
    tier=st.sampled_from(["gold", "silver", "standard", "watch", "restricted"]),
    confirmed=st.integers(1, 5),
)
@settings(max_examples=200, derandomize=True, database=None, deadline=None)
def test_a_confirmed_abuser_asking_to_keep_the_goods_goes_to_a_person(
    context: RequestContext, score_: float, tier: str, confirmed: int
) -> None:
    # The commonest repeat abuse is a false "not received" or "damaged" claim: goods and money
    # kept. Once the account has confirmed abuse, such a claim on shipped goods is never decided
    # without a person, whatever the score and tier say.
    policy, tiers = shipped()
    keep = context.model_copy(
        update={"refund_type": "refund_only", "customer_confirmed_abusive_refunds": confirmed}
    )
    decision = decide(keep, Scores(abuse_score=score_, tier=tier), policy, tiers)
    assert decision.action == Action.MANUAL_REVIEW, decision.rule_id


@given(
    category=st.sampled_from(sorted(NON_RETURNABLE_CATEGORIES)),
    amount=st.floats(1.0, 900.0),
    score_=st.floats(0.0, 0.999),
    tier=st.sampled_from(["gold", "silver", "standard", "watch", "restricted"]),
    detail=st.sampled_from(["not_as_described", "damaged", "changed_mind", "not_received"]),
    # A caller may ask for a return of goods that cannot come back; the policy must not take it
    # up on it.
    refund_type=st.sampled_from(["refund_only", "return_and_refund"]),
)
@settings(max_examples=300, derandomize=True, database=None, deadline=None)
def test_goods_that_cannot_come_back_get_no_partial_offer_and_no_promise_of_a_return(
    category: str, amount: float, score_: float, tier: str, detail: str, refund_type: str
) -> None:
    from data.schema import REASON_DETAILS

    policy, tiers = shipped()
    amount = round(amount, 2)
    context = RequestContext(
        order_stage="delivered",
        order_amount=amount,
        amount_requested=amount,
        category=category,
        reason=REASON_DETAILS[detail],
        reason_detail=detail,
        refund_type=refund_type,
        days_since_delivery=2.0,
    )
    decision = decide(context, Scores(abuse_score=score_, tier=tier), policy, tiers)
    assert decision.action not in (Action.PARTIAL_REFUND_OFFER, Action.REFUND_BEFORE_RETURN)
    message = decision.customer_message.lower()
    assert "send it back" not in message and "send the item back" not in message, message
    if tier not in ("watch", "restricted"):
        # Outside the worst tiers' guardrail (whose standard return says instructions follow
        # only if the item is to come back), such goods have rules and messages of their own:
        # no return instructions announced.
        assert "return instructions" not in message, (decision.rule_id, message)
