"""The service's parts without HTTP: keys, schemas, error mapping, models, scoring, the log."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from serving_world import a_decision_row

from features.definitions import CUSTOMER_FEATURES, FEATURE_NAMES, FEATURE_VERSION
from features.store import create_store_engine
from policy.context import RequestContext
from refund_risk.errors import (
    ConfigurationError,
    DataValidationError,
    FactConflictError,
    IdempotencyConflictError,
    InvalidFieldsError,
    NotFoundError,
)
from serving import db
from serving.auth import KeyRing, Role, create_key, list_keys, revoke_key, split_token
from serving.errors import DatabaseUnavailableError, RequestTooLargeError, http_error
from serving.exposure import ExposureLedger
from serving.models import BoosterPredictor, FastPredictor, ModelSet, model_from_files
from serving.schemas import DECISION_REQUEST_EXAMPLE, RefundDecisionRequest
from serving.scoring import (
    Scored,
    Snapshot,
    decide_scored,
    load_policy_set,
    request_context,
    tier_score,
)
from serving.tiers import TierScores, snapshot_at


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    e = create_store_engine(f"sqlite:///{tmp_path / 'service.db'}")
    db.migrate(e)
    yield e
    e.dispose()


# --- keys -----------------------------------------------------------------------------------


def test_a_key_is_shown_once_and_stored_hashed(engine: Any) -> None:
    key, token = create_key(engine, Role.SCORER, "shop")
    key_id, secret = split_token(token) or ("", "")
    assert key_id == key.key_id
    with engine.connect() as c:
        stored = " ".join(str(v) for v in c.execute(sa.select(db.API_KEYS)).one())
    assert secret not in stored and token not in stored
    ring = KeyRing(engine, max_age=60)
    principal = ring.authenticate(token)
    assert principal is not None and principal.role == Role.SCORER
    assert ring.authenticate(f"rr_{key_id}_wrong") is None
    assert ring.authenticate("rr_nobody_x") is None
    assert ring.authenticate("not a token") is None
    assert ring.authenticate(None) is None


def test_a_revoked_key_is_refused_once_the_copy_is_refreshed(engine: Any) -> None:
    now = [0.0]
    key, token = create_key(engine, Role.ADMIN)
    ring = KeyRing(engine, max_age=5.0, clock=lambda: now[0])
    assert ring.authenticate(token) is not None
    revoked = revoke_key(engine, key.key_id)
    assert revoked.revoked_at is not None
    assert ring.authenticate(token) is not None  # the copy is 0 s old: still trusted
    now[0] = 5.0
    assert ring.authenticate(token) is None
    assert [k.active for k in list_keys(engine)] == [False]
    with pytest.raises(NotFoundError):
        revoke_key(engine, "missing")


# --- schemas --------------------------------------------------------------------------------


def test_times_with_an_offset_become_utc_without_one() -> None:
    body = {**DECISION_REQUEST_EXAMPLE, "requested_at": "2025-02-16T22:05:00+02:00"}
    request = RefundDecisionRequest.model_validate(body)
    assert request.requested_at == datetime(2025, 2, 16, 20, 5)
    assert request.order.ordered_at.tzinfo is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"order": {**DECISION_REQUEST_EXAMPLE["order"], "delivered_at": "2025-02-12T00:00:00"}},
            ("order", "delivered_at"),
        ),
        (
            {"order": {**DECISION_REQUEST_EXAMPLE["order"], "shipped_at": None}},
            ("order", "delivered_at"),
        ),
        (
            {"order": {**DECISION_REQUEST_EXAMPLE["order"], "category": "cars"}},
            ("order", "category"),
        ),
        ({"photo_count": -1}, ("photo_count",)),
        ({"amount_requested": float("inf")}, ("amount_requested",)),
    ],
)
def test_invalid_requests_name_the_field(change: dict[str, Any], field: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        RefundDecisionRequest.model_validate({**DECISION_REQUEST_EXAMPLE, **change})
    assert field in {tuple(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_the_documented_example_is_valid() -> None:
    request = RefundDecisionRequest.model_validate(DECISION_REQUEST_EXAMPLE)
    assert request.refund_row()["order_id"] == request.order.order_id
    assert request.order_row()["customer_id"] == request.customer_id


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (DatabaseUnavailableError("x"), 503, "database_unavailable"),
        (sa.exc.OperationalError("SELECT 1", {}, Exception("gone")), 503, "database_unavailable"),
        (NotFoundError("x"), 404, "not_found"),
        (DataValidationError("x"), 422, "invalid_data"),
        (RequestTooLargeError("x", field="requests"), 422, "too_many_items"),
        (InvalidFieldsError("x", [("order_stage", "m", "t")]), 422, "validation_error"),
        (IdempotencyConflictError("x", [("order.amount", "m", "t")]), 409, "idempotency_conflict"),
        (FactConflictError("x", [("customer_id", "m", "t")]), 409, "order_conflict"),
        (ConfigurationError("x"), 409, "configuration_error"),
        (RuntimeError("boom"), 500, "internal_error"),
    ],
)
def test_every_error_has_one_status_and_body(error: Exception, status: int, code: str) -> None:
    answer = http_error(error, retry_after=7)
    assert answer.status == status and answer.body.code == code
    if status == 503:
        assert answer.headers["Retry-After"] == "7"
    if status == 500:
        assert "boom" not in answer.body.message  # no internals leak out


# --- exposure -------------------------------------------------------------------------------


def test_exposure_opens_with_a_refund_before_return_and_closes_with_an_outcome() -> None:
    ledger = ExposureLedger()
    ledger.load([("c1", "r1", 40.0), ("c1", "r2", 60.0), ("c2", "r3", 10.0)])
    assert ledger.outstanding("c1") == 100.0
    ledger.close(["r1", "unknown"])
    assert ledger.outstanding("c1") == 60.0
    ledger.open("c1", "r4", 5.0)
    assert ledger.outstanding("c1") == 65.0 and ledger.outstanding("nobody") == 0.0
    ledger.close(["r2", "r4"])
    assert ledger.outstanding("c1") == 0.0 and len(ledger) == 1


# --- models ---------------------------------------------------------------------------------


def _booster(tmp_path: Path, names: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, len(names)))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + rng.normal(0, 0.5, 400) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 7},
        lgb.Dataset(x, y, feature_name=names),
        num_boost_round=20,
    )
    path = tmp_path / f"model-{seed}.txt"
    booster.save_model(str(path))
    return path


def test_fast_prediction_matches_booster_predict(tmp_path: Path) -> None:
    names = list(FEATURE_NAMES)
    booster = lgb.Booster(model_file=str(_booster(tmp_path, names)))
    fast, reference = FastPredictor(booster, len(names)), BoosterPredictor(booster)
    rng = np.random.default_rng(1)
    for _ in range(50):
        row = rng.normal(size=len(names))
        row[rng.random(len(names)) < 0.2] = np.nan
        assert fast.raw(list(row)) == pytest.approx(reference.raw(row), abs=1e-12)


def test_a_card_for_other_features_is_refused(tmp_path: Path) -> None:
    names = list(FEATURE_NAMES)
    path = _booster(tmp_path, names)
    card = {
        "features": names,
        "feature_version": "something-else",
        "calibration": {"slope": 1.0, "intercept": 0.0},
    }
    with pytest.raises(ConfigurationError, match="retrain"):
        model_from_files("refund-abuse", "1", "run", "champion", path, card)
    card = {**card, "feature_version": FEATURE_VERSION, "features": [*names[:-1], "invented"]}
    with pytest.raises(ConfigurationError, match="invented"):
        model_from_files("refund-abuse", "1", "run", "champion", path, card)


def test_a_tier_model_reads_its_own_features_and_skips_new_customers(tmp_path: Path) -> None:
    tier_names = [n for n in FEATURE_NAMES if n.startswith("customer_")][:10]
    card = {
        "features": tier_names,
        "feature_version": FEATURE_VERSION,
        "calibration": {"slope": 0.5, "intercept": -1.0},
    }
    model = model_from_files(
        "credit-tier",
        "2",
        "run",
        "champion",
        _booster(tmp_path, tier_names, seed=3),
        card,
        history_feature="customer_orders_all_time",
    )
    row = [0.5] * len(FEATURE_NAMES)
    history = FEATURE_NAMES.index("customer_orders_all_time")
    assert model.indices is not None and model.has_history(row)
    booster = lgb.Booster(model_file=str(_booster(tmp_path, tier_names, seed=3)))
    raw = booster.predict(np.array([[0.5] * len(tier_names)]), raw_score=True)[0]
    assert model.probability(row) == pytest.approx(1 / (1 + np.exp(-(0.5 * raw - 1.0))))
    models = ModelSet(None, model, {}, "champion")
    assert tier_score(models, row) == model.probability(row)
    row[history] = 0.0  # no order before the snapshot: a new customer, left to the default tier
    assert not model.has_history(row)
    assert tier_score(models, row) is None


# --- scoring and deciding -------------------------------------------------------------------


def _row(**values: float) -> list[float]:
    row = [0.0] * len(FEATURE_NAMES)
    for name, value in values.items():
        row[FEATURE_NAMES.index(name)] = value
    return row


def test_the_context_reads_delivery_and_linked_abusers_off_the_row() -> None:
    request = RefundDecisionRequest.model_validate(DECISION_REQUEST_EXAMPLE)
    row = _row(
        order_days_since_delivery=2.5,
        linked_accounts_confirmed_abusive_refunds_by_any=4.0,
        linked_accounts_by_any=2.0,
    )
    context = request_context(request, row, outstanding=120.0)
    assert context["days_since_delivery"] == 2.5
    assert context["linked_abusive_accounts"] == 2  # at most the linked accounts
    assert context["outstanding_unreturned_value"] == 120.0
    # The fields are those of the policy's request context, and valid as it checks them.
    assert RequestContext(**context).model_dump() == context
    empty = _row(order_days_since_delivery=float("nan"))
    assert request_context(request, empty, 0.0)["days_since_delivery"] is None


def test_without_an_abuse_model_the_rules_only_policy_decides() -> None:
    policies = load_policy_set()
    snapshot = Snapshot(ModelSet(None, None, {"refund-abuse": "none"}, "champion"), policies)
    request = RefundDecisionRequest.model_validate(
        {**DECISION_REQUEST_EXAMPLE, "refund_type": "refund_only"}
    )
    context = request_context(request, _row(), 0.0)
    decision, reasons, degraded = decide_scored(snapshot, context, Scored(None, None, ()))
    assert degraded and decision.policy_name == "degraded"
    assert decision.action == "manual_review" and reasons == list(decision.reasons)
    unshipped = RefundDecisionRequest.model_validate(
        {**DECISION_REQUEST_EXAMPLE, "order_stage": "not_shipped"}
    )
    decision, _, _ = decide_scored(
        snapshot, request_context(unshipped, _row(), 0.0), Scored(None, None, ())
    )
    assert decision.action == "auto_approve"


def test_the_service_says_a_high_amount_once_among_its_reasons() -> None:
    from policy.reasons import Contribution

    policies = load_policy_set()
    snapshot = Snapshot(ModelSet(None, None, {}, "champion"), policies)
    request = RefundDecisionRequest.model_validate(
        {
            **DECISION_REQUEST_EXAMPLE,
            "amount_requested": 1114.62,
            "order": {**DECISION_REQUEST_EXAMPLE["order"], "amount": 1200.0},
        }
    )
    context = request_context(request, _row(), 0.0)
    scored = Scored(
        0.01,
        None,
        (
            Contribution("request_amount", 1114.62, 0.02),
            Contribution("order_amount", 1200.0, 0.01),
        ),
    )
    decision, reasons, _ = decide_scored(snapshot, context, scored)
    assert decision.rule_id == "high_amount"
    assert reasons == [
        "Asks back 1,114.62, at or above the review limit of 1,000.00.",
        "Order value 1,200.00",
    ]


def test_the_service_decides_as_the_policy_does_from_a_validated_context() -> None:
    # The service decides from the context's fields without building the policy's models;
    # over a grid of requests, scores, tiers and pins it gives the policy's own decisions.
    from policy.context import Scores
    from policy.evaluate import decide

    policies = load_policy_set()
    snapshot = Snapshot(ModelSet(None, None, {}, "champion"), policies)
    rng = np.random.default_rng(3)
    tiers = policies.tiers
    compared = 0
    kinds = [
        {"order_stage": stage, "refund_type": refund_type, "reason_detail": detail}
        for stage in ("not_shipped", "in_transit", "delivered")
        for refund_type in ("refund_only", "return_and_refund")
        for detail in ("not_as_described", "damaged")
    ]
    for kind in kinds:
        request = RefundDecisionRequest.model_validate({**DECISION_REQUEST_EXAMPLE, **kind})
        for _ in range(40):
            amount = float(rng.choice([5.0, 40.0, 79.0, 150.0, 900.0]))
            row = _row(
                order_days_since_delivery=float(rng.choice([np.nan, 0.5, 12.0, 60.0])),
                linked_accounts_confirmed_abusive_refunds_by_any=float(rng.integers(0, 3)),
                linked_accounts_by_any=float(rng.integers(0, 3)),
            )
            changed = request.model_copy(update={"amount_requested": amount})
            context = request_context(
                changed, row, float(rng.choice([0.0, 300.0])), bool(rng.random() < 0.1)
            )
            abuse = float(rng.random() ** 3)  # most requests are of low risk
            loss = None if rng.random() < 0.3 else float(rng.random())
            pin = None if rng.random() < 0.8 else str(rng.choice(list(tiers.names)))
            decision, _, _ = decide_scored(snapshot, context, Scored(abuse, loss, ()), pin)
            expected = decide(
                RequestContext(**context),
                Scores(abuse_score=abuse, tier_loss_probability=loss, tier=pin),
                policies.policy,
                tiers,
            )
            assert decision == expected
            compared += 1
    assert compared == 480


def test_reasons_follow_the_rule_in_contribution_order() -> None:
    from policy.reasons import Contribution

    policies = load_policy_set()
    snapshot = Snapshot(ModelSet(None, None, {}, "champion"), policies)
    request = RefundDecisionRequest.model_validate(DECISION_REQUEST_EXAMPLE)
    contributions = (
        Contribution("customer_orders_7d", 3.0, 0.4),
        Contribution("request_photo_count", 0.0, 0.1),
    )
    decision, reasons, degraded = decide_scored(
        snapshot, request_context(request, _row(), 0.0), Scored(0.02, None, contributions)
    )
    assert not degraded and decision.policy_name == "default"
    assert reasons[0] == decision.reasons[0]
    assert len(reasons) == 3 and "3" in reasons[1]


# --- the decision log -----------------------------------------------------------------------


def test_racing_writers_record_one_decision_per_refund(engine: Any) -> None:
    log = db.DecisionLog(engine)
    won: list[set[str]] = []
    start = threading.Barrier(6)

    def write(i: int) -> None:
        start.wait()
        with engine.begin() as connection:
            won.append(
                log.insert_new(connection, [a_decision_row("r-race", response=f'{{"w": {i}}}')])
            )

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(w) for w in won) == 1
    assert log.count() == 1
    stored = log.response_for("r-race")
    with engine.connect() as connection:
        assert log.responses(connection, ["r-race"]) == {"r-race": stored}


def test_decision_ids_sort_by_creation() -> None:
    ids = [db.new_decision_id() for _ in range(5)]
    assert len(set(ids)) == 5 and all(len(i) == 32 for i in ids)
    assert ids[0][:12] <= ids[-1][:12]
    # The random parts come from a buffer of the system's random bytes, refilled as it runs
    # out: thousands of ids have thousands of different random parts.
    randoms = {db.new_decision_id()[12:] for _ in range(3000)}
    assert len(randoms) == 3000


def test_a_forked_process_does_not_repeat_its_parents_decision_ids() -> None:
    db.new_decision_id()  # the buffer holds bytes the child would otherwise hand out too
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id to the parent, then gone
        os.write(write, db.new_decision_id()[12:].encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 20 and child != db.new_decision_id()[12:]


# --- credit tiers at decision time ----------------------------------------------------------


def test_the_snapshot_is_the_latest_month_start_strictly_before() -> None:
    assert snapshot_at(datetime(2026, 3, 17, 9, 30)) == datetime(2026, 3, 1)
    assert snapshot_at(datetime(2026, 3, 1, 0, 0, 0, 1)) == datetime(2026, 3, 1)
    # At the first instant of a month, that month's snapshot is not yet before the request.
    assert snapshot_at(datetime(2026, 3, 1)) == datetime(2026, 2, 1)
    assert snapshot_at(datetime(2026, 1, 1)) == datetime(2025, 12, 1)


def _tier_model(tmp_path: Path) -> Any:
    names = [f.name for f in CUSTOMER_FEATURES]
    card = {
        "features": names,
        "feature_version": FEATURE_VERSION,
        "calibration": {"slope": 0.5, "intercept": -1.0},
    }
    return model_from_files(
        "credit-tier",
        "1",
        "run",
        "champion",
        _booster(tmp_path, names, seed=4),
        card,
        history_feature="customer_orders_all_time",
    )


def test_tier_scores_come_from_the_month_start_and_are_remembered(
    tmp_path: Path, random_world: Any
) -> None:
    from features.batch import BatchBuilder, snapshot_dates
    from features.online import OnlineFeatureBuilder
    from features.store import EventStore

    tables = random_world(seed=8, n_customers=80)
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    store.write_frames(tables)
    builder = OnlineFeatureBuilder(store)
    builder.preload()
    model = _tier_model(tmp_path)
    models = ModelSet(None, model, {}, "champion")
    tiers = TierScores(builder)
    at = snapshot_dates(tables)[-1]
    snapshot = BatchBuilder(tables).snapshot_rows(at).set_index("customer_id")
    names = list(model.feature_names)
    with_history = snapshot[snapshot["customer_orders_all_time"] > 0]
    assert len(with_history) > 10
    when = at.to_pydatetime() + pd.Timedelta(days=9, hours=5)
    for customer_id, features in with_history.iterrows():
        expected = model.predictor.raw(features[names].to_numpy(dtype=np.float64))
        got = tiers.score(models, str(customer_id), when)
        assert got == pytest.approx(1 / (1 + np.exp(-(0.5 * expected - 1.0))), abs=1e-12)
    assert (tiers.hits, tiers.misses) == (0, len(with_history))
    customer_id = str(with_history.index[0])
    first = tiers.score(models, customer_id, when)
    assert tiers.score(models, customer_id, when + pd.Timedelta(days=3)) == first
    assert tiers.hits == 2  # the same month: no features computed again
    # A customer without history at the snapshot has none; nor has one who is unknown.
    if (snapshot["customer_orders_all_time"] == 0).any():
        new = str(snapshot.index[snapshot["customer_orders_all_time"] == 0][0])
        assert tiers.score(models, new, when) is None
    assert tiers.score(models, "nobody", when) is None
    assert tiers.score(ModelSet(None, None, {}, "champion"), customer_id, when) is None
    # An order of the customer placed before the snapshot, appended late, is seen.
    orders_before = tiers.misses
    late = tables["orders"][tables["orders"]["customer_id"] == customer_id].iloc[0].to_dict()
    late.update(order_id="late-order", ordered_at=at - pd.Timedelta(days=2))
    late.update(shipped_at=None, delivered_at=None, delivery_evidence="none")
    builder.append("orders", [late])
    assert tiers.score(models, customer_id, when) is not None
    assert tiers.misses == orders_before + 1
    # One appended after the snapshot changes nothing remembered.
    late.update(order_id="new-order", ordered_at=when)
    builder.append("orders", [late])
    tiers.score(models, customer_id, when)
    assert tiers.misses == orders_before + 1
    store.dispose()
