"""A request cannot make the service lie or rewrite what it knows, on SQLite and PostgreSQL.

The refund id is bound to its request (a different request under a used id is a conflict, even
across a restart or a race of two services), an order belongs to its customer and keeps its
fixed facts, and the service's tables migrate on a database that already holds decisions.
Runs without a model (the rules-only policy decides): what is tested is the same either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from features.store import EVENT_TABLES, create_store_engine
from refund_risk.errors import FactConflictError, IdempotencyConflictError
from refund_risk.settings import Settings, load_settings
from serving import db
from serving.schemas import DECISION_REQUEST_EXAMPLE, EventsIn, RefundDecisionRequest
from serving.service import DecisionResult, Service

StoreUrl = tuple[str, str | None]

CUSTOMER = {"signup_at": "2024-03-05T14:22:00Z", "region": "north"}


@pytest.fixture
def settings(store_url: StoreUrl, tmp_path: Path) -> Settings:
    url, schema = store_url
    return load_settings(
        data_dir=tmp_path / "data",
        mlruns_dir=tmp_path / "no-registry",
        mlflow_tracking_uri=None,
        database_url=url,
        database_schema=schema,
    )


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    started = Service.start(settings)
    yield started
    started.close()


def request(refund_id: str, **changes: Any) -> RefundDecisionRequest:
    """The documented example under `refund_id`, with `changes` (an `order` dict is merged)."""
    order = {**DECISION_REQUEST_EXAMPLE["order"], **changes.pop("order", {})}
    return RefundDecisionRequest.model_validate(
        {
            **DECISION_REQUEST_EXAMPLE,
            "refund_id": refund_id,
            "customer": CUSTOMER,
            "order": order,
            **changes,
        }
    )


def decide(service: Service, body: RefundDecisionRequest) -> DecisionResult:
    return asyncio.run(service.decide(body))


def conflict_fields(caught: pytest.ExceptionInfo[Any]) -> list[str]:
    return [field for field, _, _ in caught.value.fields]


def stored_order(service: Service, order_id: str) -> dict[str, Any]:
    orders = EVENT_TABLES["orders"]
    with service.engine.connect() as connection:
        row = connection.execute(sa.select(orders).where(orders.c.order_id == order_id)).one()
    return dict(row._mapping)


# --- idempotency ----------------------------------------------------------------------------


def test_a_used_refund_id_with_a_different_request_is_a_conflict(service: Service) -> None:
    first = decide(service, request("r-bound"))
    assert decide(service, request("r-bound")) == DecisionResult(first.body, replayed=True)
    with pytest.raises(IdempotencyConflictError) as caught:
        decide(service, request("r-bound", amount_requested=20.0, photo_count=2))
    assert conflict_fields(caught) == ["amount_requested", "photo_count"]
    # Nothing of the stored decision is told: not its id, amounts, customer or message.
    stored = json.loads(first.body)
    told = f"{caught.value} {caught.value.fields}"
    for secret in (stored["decision_id"], "59.9", stored["customer_message"]):
        assert secret not in told
    with pytest.raises(IdempotencyConflictError) as other:
        decide(service, request("r-bound", customer_id="c-someone-else"))
    assert conflict_fields(other) == ["customer_id"]
    assert "c0000042" not in f"{other.value} {other.value.fields}"
    assert service.log.count() == 1
    assert decide(service, request("r-bound")).body == first.body  # the original still replays


def test_the_binding_survives_a_restart(settings: Settings) -> None:
    # A new process remembers nothing: the decision log's unique refund id and the stored
    # fingerprint decide, in the transaction that records (the recorder's; on PostgreSQL the
    # one holding the customer's lock).
    one = Service.start(settings)
    try:
        first = decide(one, request("r-restart"))
    finally:
        one.close()
    two = Service.start(settings)
    try:
        assert (two.writer.recorder is not None) == (two.history is None)
        with pytest.raises(IdempotencyConflictError) as caught:
            decide(two, request("r-restart", reason="other", reason_detail="other"))
        assert conflict_fields(caught) == ["reason", "reason_detail"]
        again = decide(two, request("r-restart"))
        assert again == DecisionResult(first.body, replayed=True)
        assert two.log.count() == 1
    finally:
        two.close()


def test_concurrent_requests_for_one_new_id_share_one_decision_or_conflict(
    service: Service,
) -> None:
    async def three() -> list[Any]:
        return list(
            await asyncio.gather(
                service.decide(request("r-race")),
                service.decide(request("r-race", amount_requested=10.0)),
                service.decide(request("r-race")),
                return_exceptions=True,
            )
        )

    first, changed, same = asyncio.run(three())
    assert isinstance(first, DecisionResult) and not first.replayed
    assert isinstance(changed, IdempotencyConflictError)  # not the other request's answer
    assert [f for f, _, _ in changed.fields] == ["amount_requested"]
    assert isinstance(same, DecisionResult) and same == DecisionResult(first.body, True)
    assert service.log.count() == 1


def test_two_services_racing_with_different_requests_record_one(settings: Settings) -> None:
    one, two = Service.start(settings), Service.start(settings)
    try:

        async def both() -> list[Any]:
            return list(
                await asyncio.gather(
                    one.decide(request("r-two")),
                    two.decide(request("r-two", photo_count=4)),
                    return_exceptions=True,
                )
            )

        answers = asyncio.run(both())
        decided = [a for a in answers if isinstance(a, DecisionResult)]
        refused = [a for a in answers if isinstance(a, IdempotencyConflictError)]
        assert len(decided) == len(refused) == 1, answers
        assert not decided[0].replayed
        assert [f for f, _, _ in refused[0].fields] == ["photo_count"]
        assert one.log.count() == 1
    finally:
        one.close()
        two.close()


# --- orders belong to their customer and keep their facts -----------------------------------


def test_an_order_of_another_customer_is_refused_and_left_alone(service: Service) -> None:
    decide(service, request("r-owner"))
    before = stored_order(service, "o000000017")
    counts = service.store.counts()
    with pytest.raises(FactConflictError) as caught:
        decide(service, request("r-thief", customer_id="c-thief"))
    assert [(f, kind) for f, _, kind in caught.value.fields] == [
        ("customer_id", "order_of_another_customer")
    ]
    assert "belongs to another customer" in caught.value.fields[0][1]
    assert "o000000017" in str(caught.value) and "c0000042" not in str(caught.value)
    assert stored_order(service, "o000000017") == before  # the order still belongs to c0000042
    assert service.store.counts() == counts  # no links, account or refund of the thief
    assert service.log.get("r-thief") is None


def test_an_orders_fixed_facts_are_not_rewritten_by_a_decision(service: Service) -> None:
    decide(service, request("r-facts-1"))
    before = stored_order(service, "o000000017")
    with pytest.raises(FactConflictError) as caught:
        decide(service, request("r-facts-2", order={"amount": 5000.0, "category": "electronics"}))
    assert conflict_fields(caught) == ["order.category", "order.amount"]
    with pytest.raises(FactConflictError) as back:
        decide(
            service,
            request(
                "r-facts-3",
                order={"delivered_at": None, "delivery_evidence": "none"},
                order_stage="in_transit",
            ),
        )
    assert conflict_fields(back) == ["order.delivered_at"]
    assert stored_order(service, "o000000017") == before
    assert service.log.count() == 1


def test_events_may_move_an_order_forward_but_not_rewrite_it(service: Service) -> None:
    placed = {
        **DECISION_REQUEST_EXAMPLE["order"],
        "order_id": "o-ev",
        "customer_id": "c-ev",
        "shipped_at": None,
        "delivered_at": None,
        "delivery_evidence": "none",
    }
    shipped = {**placed, "shipped_at": "2025-02-12T16:00:00Z"}
    delivered = {**shipped, "delivered_at": "2025-02-14T11:10:00Z", "delivery_evidence": "photo"}
    for order in (placed, shipped, delivered):
        service.append_events(EventsIn.model_validate({"orders": [order]}))
    assert stored_order(service, "o-ev")["delivered_at"] == datetime(2025, 2, 14, 11, 10)
    counts = service.store.counts()
    new = {**placed, "order_id": "o-ev-new"}
    bad = [
        new,
        {**delivered, "customer_id": "c-other"},
        {**delivered, "amount": 1.0, "shipped_at": None, "delivered_at": None},
    ]
    with pytest.raises(FactConflictError) as caught:
        service.append_events(EventsIn.model_validate({"orders": bad}))
    assert conflict_fields(caught) == [
        "orders.1.customer_id",
        "orders.2.amount",
        "orders.2.shipped_at",
        "orders.2.delivered_at",
    ]
    assert service.store.counts() == counts  # nothing of the call, not even the new order
    assert stored_order(service, "o-ev")["customer_id"] == "c-ev"


# --- migrating a database that holds decisions ----------------------------------------------


def test_the_fingerprint_column_is_added_and_filled_on_an_existing_log(
    settings: Settings,
) -> None:
    assert settings.database_url is not None
    engine = create_store_engine(settings.database_url, schema=settings.database_schema)
    with engine.begin() as connection:
        command.upgrade(db.alembic_config(connection), "0002_reviews")
    old = request("r-old")
    stored_request = old.model_dump_json()
    body = '{"decision": "as an older version answered"}'
    decisions = sa.table(
        "serving_decisions",
        *(sa.column(c.name) for c in db.DECISIONS.columns if c.name != "request_hash"),
    )
    row = db.decision_row(
        decision_id=db.new_decision_id(),
        refund_id="r-old",
        customer_id=old.customer_id,
        decided_at=datetime(2026, 1, 1),
        action="standard_return",
        rule_id="default",
        degraded=True,
        abuse_score=None,
        tier="standard",
        amount_requested=old.amount_requested,
        abuse_model_version=None,
        tier_model_version=None,
        policy_hash="h",
        feature_version="v",
        response=body,
        request=stored_request,
        features="[]",
    )
    row.pop("request_hash")
    with engine.begin() as connection:
        connection.execute(sa.insert(decisions), [row])
    engine.dispose()

    service = Service.start(settings)  # migrates to the latest
    try:
        with service.engine.connect() as connection:
            (fingerprint,) = connection.execute(
                sa.select(db.DECISIONS.c.request_hash).where(db.DECISIONS.c.refund_id == "r-old")
            ).one()
        assert fingerprint == hashlib.sha256(stored_request.encode()).hexdigest()
        replay = decide(service, request("r-old"))
        assert replay == DecisionResult(body, replayed=True)
        with pytest.raises(IdempotencyConflictError) as caught:
            decide(service, request("r-old", photo_count=9))
        assert conflict_fields(caught) == ["photo_count"]
    finally:
        service.close()
