"""The scoring API cannot be turned against a customer: end to end, on the served world.

A refund id is bound to its request (409 `idempotency_conflict` naming what differs, nothing of
the stored decision), an order belongs to its customer and keeps its fixed facts (409
`order_conflict`, nothing written), the order's stage comes from its own times, and a request
from the future is refused (422 naming the field to change). Real app, real model, SQLite.
"""

from __future__ import annotations

import copy
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from serving_world import World, decision_body, held, key, rows_for

from serving.app import create_app
from serving.schemas import RefundDecisionRequest

pytestmark = [pytest.mark.slow]

DECIDE = "/v1/refund-decisions"


@pytest.fixture(scope="module")
def world(serving_world: World) -> World:
    return serving_world


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings, freeze_gc=False)) as c:
        yield c


def own_id(prefix: str) -> str:
    """A refund id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def post(client: TestClient, world: World, body: dict[str, Any]) -> Any:
    return client.post(DECIDE, json=body, headers=key(world, "scorer"))


def fields_of(response: Any) -> list[str]:
    return [f["field"] for f in response.json()["error"]["fields"]]


def stored_owner(world: World, order_id: str) -> str:
    with sqlite3.connect(world.db_path) as con:
        (owner,) = con.execute(
            "SELECT customer_id FROM event_orders WHERE order_id = ?", (order_id,)
        ).fetchone()
    return str(owner)


def delivered_request(world: World) -> pd.Series:
    """A held request made after its order was delivered."""
    return next(r for _, r in world.held.iterrows() if r["order_stage"] == "delivered")


# --- idempotency ----------------------------------------------------------------------------


def test_a_used_refund_id_with_another_request_is_409_and_tells_nothing(
    world: World, client: TestClient
) -> None:
    body = decision_body(world, held(world, 31), refund_id=own_id("bound"))
    first = post(client, world, body)
    assert first.status_code == 200, first.text
    changed = post(client, world, {**body, "amount_requested": body["amount_requested"] / 2})
    assert changed.status_code == 409, changed.text
    error = changed.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert fields_of(changed) == ["amount_requested"]
    decision = first.json()
    for secret in (decision["decision_id"], decision["customer_message"], decision["action"]):
        assert secret not in changed.text
    someone = post(client, world, {**body, "customer_id": "c-someone-else"})
    assert someone.status_code == 409 and fields_of(someone) == ["customer_id"]
    assert body["customer_id"] not in someone.text  # not the other customer's id either
    again = post(client, world, body)
    assert again.text == first.text and again.headers["Idempotent-Replay"] == "true"
    assert rows_for(world, body["refund_id"]) == 1


def test_batch_items_are_bound_to_their_requests_one_by_one(
    world: World, client: TestClient
) -> None:
    decided = decision_body(world, held(world, 32), refund_id=own_id("batch-a"))
    assert post(client, world, decided).status_code == 200
    fresh = decision_body(world, held(world, 33), refund_id=own_id("batch-b"))
    r = client.post(
        "/v1/refund-decisions/batch",
        json={
            "requests": [
                {**decided, "photo_count": decided["photo_count"] + 1},
                fresh,
                {**fresh, "refund_type": "refund_only", "photo_count": 7},  # the same id, at once
                decided,
            ]
        },
        headers=key(world, "scorer"),
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [409, 200, 409, 200]
    assert results[0]["error"]["code"] == results[2]["error"]["code"] == "idempotency_conflict"
    assert [f["field"] for f in results[0]["error"]["fields"]] == ["photo_count"]
    assert {f["field"] for f in results[2]["error"]["fields"]} <= {"refund_type", "photo_count"}
    assert results[2]["decision"] is None and results[3]["replayed"] is True
    assert rows_for(world, fresh["refund_id"]) == 1


def _change(body: dict[str, Any], field: str) -> tuple[dict[str, Any], set[str]]:
    """`body` with one field given another valid value, and the fields that then differ."""
    changed = copy.deepcopy(body)
    order = changed["order"]
    later = lambda text: (pd.Timestamp(text) + pd.Timedelta(minutes=1)).isoformat()  # noqa: E731
    if field == "reason":
        changed["reason"], changed["reason_detail"] = (
            ("other", "other") if body["reason"] != "other" else ("changed_mind", "changed_mind")
        )
        return changed, {"reason", "reason_detail"}
    values: dict[str, Any] = {
        "customer_id": f"{body['customer_id']}-x",
        "requested_at": later(body["requested_at"]),
        "refund_type": "refund_only"
        if body["refund_type"] != "refund_only"
        else "return_and_refund",
        "amount_requested": round(body["amount_requested"] / 2, 2),
        "photo_count": body["photo_count"] + 1,
        "order_stage": "in_transit" if body["order_stage"] != "in_transit" else "delivered",
        "customer": {"signup_at": "2024-01-01T00:00:00Z", "region": "north"},
        "order.order_id": f"{order['order_id']}-x",
        "order.ordered_at": (pd.Timestamp(order["ordered_at"]) - pd.Timedelta(hours=1)).isoformat(),
        "order.category": "virtual" if order["category"] != "virtual" else "home",
        "order.amount": order["amount"] + 1.0,
        "order.item_count": order["item_count"] + 1,
        "order.payment_method": "bnpl" if order["payment_method"] != "bnpl" else "card",
        "order.device_id": f"{order['device_id']}-x",
        "order.address_id": f"{order['address_id']}-x",
        "order.payment_fingerprint": f"{order['payment_fingerprint']}-x",
        "order.delivered_at": None
        if order["delivered_at"]
        else (later(order["shipped_at"]) if order["shipped_at"] else None),
        "order.delivery_evidence": "signature"
        if order["delivery_evidence"] != "signature"
        else "scan",
    }
    value = values[field]
    if field.startswith("order."):
        order[field.removeprefix("order.")] = value
    else:
        changed[field] = value
    return changed, {field}


FIELDS = [
    "customer_id",
    "requested_at",
    "refund_type",
    "reason",
    "amount_requested",
    "photo_count",
    "order_stage",
    "customer",
    "order.order_id",
    "order.ordered_at",
    "order.category",
    "order.amount",
    "order.item_count",
    "order.payment_method",
    "order.device_id",
    "order.address_id",
    "order.payment_fingerprint",
    "order.delivered_at",
    "order.delivery_evidence",
]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.integers(min_value=0, max_value=39), st.sampled_from(FIELDS))
def test_any_change_to_any_field_of_a_sent_request_is_409_naming_that_field(
    world: World, client: TestClient, which: int, field: str
) -> None:
    body = decision_body(world, held(world, which), refund_id=own_id("prop"))
    changed, expected = _change(body, field)
    assume(changed != body)
    try:
        RefundDecisionRequest.model_validate(changed)
    except ValidationError:
        assume(False)  # not a request at all: refused 422 before the id is looked at
    first = post(client, world, body)
    assert first.status_code == 200, first.text
    r = post(client, world, changed)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "idempotency_conflict"
    assert set(fields_of(r)) == expected
    assert first.json()["decision_id"] not in r.text


# --- orders ---------------------------------------------------------------------------------


def test_a_decision_naming_another_customers_order_is_409_and_writes_nothing(
    world: World, client: TestClient
) -> None:
    refund = held(world, 34)
    thief = next(
        r["customer_id"]
        for _, r in world.held.iterrows()
        if r["customer_id"] != refund["customer_id"]
    )
    body = decision_body(world, refund, refund_id=own_id("thief"), customer_id=thief)
    r = post(client, world, body)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "order_conflict" and fields_of(r) == ["customer_id"]
    assert refund["order_id"] in error["message"]
    assert refund["customer_id"] not in r.text
    assert stored_owner(world, refund["order_id"]) == refund["customer_id"]
    assert rows_for(world, body["refund_id"]) == 0


def test_a_decision_rewriting_an_orders_facts_is_409_listing_them(
    world: World, client: TestClient
) -> None:
    body = decision_body(world, held(world, 35), refund_id=own_id("facts"))
    order = {**body["order"], "amount": body["order"]["amount"] + 100, "device_id": "d-new"}
    r = post(client, world, {**body, "order": order})
    assert r.status_code == 409, r.text
    assert fields_of(r) == ["order.amount", "order.device_id"]
    assert rows_for(world, body["refund_id"]) == 0


def test_events_naming_another_customers_order_are_409_and_write_nothing(
    world: World, client: TestClient
) -> None:
    body = decision_body(world, held(world, 36))
    new_order = {**body["order"], "order_id": own_id("o-new"), "customer_id": body["customer_id"]}
    stolen = {**body["order"], "customer_id": "c-thief"}
    r = client.post(
        "/v1/events", json={"orders": [new_order, stolen]}, headers=key(world, "scorer")
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "order_conflict"
    assert fields_of(r) == ["orders.1.customer_id"]
    assert stored_owner(world, body["order"]["order_id"]) == body["customer_id"]
    with sqlite3.connect(world.db_path) as con:
        written = con.execute(
            "SELECT count(*) FROM event_orders WHERE order_id = ?", (new_order["order_id"],)
        ).fetchone()[0]
    assert written == 0


# --- the order's stage, the clock, field names ----------------------------------------------


def test_a_stage_the_orders_times_contradict_is_422_naming_both(
    world: World, client: TestClient
) -> None:
    body = decision_body(world, delivered_request(world), refund_id=own_id("stage"))
    r = post(client, world, {**body, "order_stage": "not_shipped"})
    assert r.status_code == 422, r.text
    (problem,) = r.json()["error"]["fields"]
    assert problem["field"] == "order_stage" and problem["type"] == "stage_mismatch"
    assert "'not_shipped'" in problem["message"] and "'delivered'" in problem["message"]
    assert rows_for(world, body["refund_id"]) == 0


def test_delivered_without_a_delivery_is_422(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 37), refund_id=own_id("undelivered"))
    order = {
        **body["order"],
        "order_id": own_id("o-undelivered"),
        "shipped_at": None,
        "delivered_at": None,
        "delivery_evidence": "none",
    }
    r = post(client, world, {**body, "order": order, "order_stage": "delivered"})
    assert r.status_code == 422, r.text
    assert fields_of(r) == ["order_stage"]


def test_a_request_from_the_future_is_422_within_the_skew_it_is_decided(
    world: World, client: TestClient
) -> None:
    now = datetime.now(UTC)
    body = decision_body(world, held(world, 38), refund_id=own_id("future"))
    order = {
        **body["order"],
        "order_id": own_id("o-future"),
        "ordered_at": (now - timedelta(days=1)).isoformat(),
        "shipped_at": None,
        "delivered_at": None,
        "delivery_evidence": "none",
    }
    far = {**body, "order": order, "order_stage": "not_shipped"}
    r = post(client, world, {**far, "requested_at": (now + timedelta(days=5 * 365)).isoformat()})
    assert r.status_code == 422, r.text
    assert (
        fields_of(r) == ["requested_at"] and "future" in r.json()["error"]["fields"][0]["message"]
    )
    near = post(client, world, {**far, "requested_at": (now + timedelta(seconds=60)).isoformat()})
    assert near.status_code == 200, near.text


def test_cross_field_errors_name_the_field_to_change_in_plain_words(
    world: World, client: TestClient
) -> None:
    body = decision_body(world, held(world, 39), refund_id=own_id("words"))
    above = post(client, world, {**body, "amount_requested": body["order"]["amount"] + 1})
    assert above.status_code == 422 and fields_of(above) == ["amount_requested"]
    early = (pd.Timestamp(body["order"]["ordered_at"]) - pd.Timedelta(days=1)).isoformat()
    before = post(client, world, {**body, "requested_at": early, "order_stage": "not_shipped"})
    assert before.status_code == 422 and fields_of(before) == ["order.ordered_at"]
    detail = post(client, world, {**body, "reason": "mistake", "reason_detail": "late"})
    assert detail.status_code == 422 and fields_of(detail) == ["reason_detail"]
    for r in (above, before, detail):
        assert all(not f["message"].startswith("Value error") for f in r.json()["error"]["fields"])


def test_openapi_documents_the_conflicts_with_examples(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    decide = paths[DECIDE]["post"]["responses"]["409"]["content"]["application/json"]
    assert decide["examples"]["idempotency_conflict"]["value"]["error"]["code"] == (
        "idempotency_conflict"
    )
    events = paths["/v1/events"]["post"]["responses"]["409"]["content"]["application/json"]
    assert "order_of_another_customer" in events["examples"]
