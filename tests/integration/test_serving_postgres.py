"""The service on PostgreSQL: migrations beside the event store's, decisions, races, events.

Runs without a model (the rules-only policy decides), so it needs no training: what is tested
here is the database layer, which is the same with or without a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from refund_risk.settings import Settings, load_settings
from serving.app import create_app
from serving.auth import Role, create_key
from serving.schemas import DECISION_REQUEST_EXAMPLE, EventsIn, RefundDecisionRequest
from serving.service import Service

pytestmark = pytest.mark.postgres

CUSTOMER = {"customer_id": "c0000042", "signup_at": "2024-03-05T14:22:00Z", "region": "north"}


@pytest.fixture
def settings(
    postgres_schema: tuple[str, str], new_schema: Callable[[], str], tmp_path: Path
) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        mlruns_dir=tmp_path / "no-registry",
        mlflow_tracking_uri=None,
        database_url=postgres_schema[0],
        database_schema=new_schema(),
        api_key_cache_seconds=0.0,
    )


def request(refund_id: str) -> RefundDecisionRequest:
    return RefundDecisionRequest.model_validate(
        {
            **DECISION_REQUEST_EXAMPLE,
            "refund_id": refund_id,
            "customer": {"signup_at": CUSTOMER["signup_at"], "region": CUSTOMER["region"]},
        }
    )


def test_migrations_keep_their_own_histories(settings: Settings) -> None:
    service = Service.start(settings)
    try:
        tables = set(sa.inspect(service.engine).get_table_names())
        assert {
            "features_alembic_version",
            "serving_alembic_version",
            "serving_decisions",
            "serving_api_keys",
            "event_orders",
        } <= tables
    finally:
        service.close()
    again = Service.start(settings)  # migrating twice changes nothing
    again.close()


def test_decisions_are_stored_replayed_and_appended(settings: Settings) -> None:
    service = Service.start(settings)
    try:
        first = asyncio.run(service.decide(request("r-pg-1")))
        second = asyncio.run(service.decide(request("r-pg-1")))
        assert not first.replayed and second.replayed and second.body == first.body
        assert service.log.count() == 1
        stored = service.stored_decision("r-pg-1")
        assert stored.decision.degraded and stored.request["order"]["order_id"] == "o000000017"
        counts = service.store.counts()
        assert counts["refund_requests"] == 1 and counts["orders"] == 1
        assert counts["customers"] == 1 and counts["identity_links"] == 3
    finally:
        service.close()


def test_two_services_racing_on_one_refund_record_one_decision(settings: Settings) -> None:
    one, two = Service.start(settings), Service.start(settings)
    try:

        async def both() -> list[Any]:
            return list(
                await asyncio.gather(one.decide(request("r-race")), two.decide(request("r-race")))
            )

        answers = asyncio.run(both())
        assert answers[0].body == answers[1].body
        assert sorted(a.replayed for a in answers) == [False, True]
        assert one.log.count() == 1
    finally:
        one.close()
        two.close()


def test_events_and_the_http_api_on_postgres(settings: Settings) -> None:
    service = Service.start(settings)
    order = {**DECISION_REQUEST_EXAMPLE["order"], "customer_id": "c0000042"}
    written = service.append_events(
        EventsIn.model_validate({"customers": [CUSTOMER], "orders": [order, order]})
    )
    assert written.written == {"customers": 1, "orders": 1, "identity_links": 3}
    _, token = create_key(service.engine, Role.SCORER)
    service.close()
    with TestClient(create_app(settings, freeze_gc=False)) as client:
        body = {**DECISION_REQUEST_EXAMPLE, "refund_id": "r-pg-http"}
        r = client.post("/v1/refund-decisions", json=body, headers={"X-API-Key": token})
        assert r.status_code == 200, r.text
        assert r.json()["degraded"] is True
        assert client.get("/readyz").json()["checks"]["database"]["detail"] == "postgresql"
