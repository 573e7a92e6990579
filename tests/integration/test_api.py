"""The scoring API end to end: a real world, a real trained model, a real SQLite database.

The world (see `tests/serving_world.py`): a small generated world whose history is in the
event store (all but the last refund requests, which the tests send), a refund-abuse model
trained into a local MLflow store, and one key per role. Tests share one running app; those
that need their own (degraded mode, a broken database) make it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serving_world import World, decision_body, held, iso, key, rows_for

from features.definitions import FEATURE_NAMES
from refund_risk.settings import load_settings
from serving.app import create_app
from serving.schemas import DecisionOut, RefundDecisionRequest

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def world(serving_world: World) -> World:
    return serving_world


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings, freeze_gc=False)) as c:
        yield c


# --- deciding -------------------------------------------------------------------------------


def test_a_decision_carries_everything_and_is_stored(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 0))
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["refund_id"] == body["refund_id"] and d["customer_id"] == body["customer_id"]
    assert d["action"] in {
        "auto_approve",
        "refund_before_return",
        "partial_refund_offer",
        "standard_return",
        "manual_review",
    }
    assert 0.0 <= d["abuse_score"] <= 1.0 and d["abuse_band"]
    assert d["degraded"] is False
    assert d["tier"] == "standard" and d["tier_score"] is None  # no tier model registered
    assert d["reasons"] and d["customer_message"] and d["rule_id"]
    assert "score" not in d["customer_message"].lower()
    assert d["versions"]["abuse_model"].startswith("refund-abuse/")
    assert d["versions"]["tier_model"] is None
    assert d["versions"]["policy"].startswith("default v")
    assert d["timing"]["total_ms"] > 0
    assert r.headers.get("Idempotent-Replay") is None
    # Byte for byte what the documented schema writes (fields, order, formats).
    assert DecisionOut.model_validate_json(r.text).model_dump_json() == r.text
    assert rows_for(world, body["refund_id"]) == 1


def test_the_same_refund_id_returns_the_stored_decision(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 1))
    first = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    again = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert first.status_code == again.status_code == 200
    assert again.text == first.text
    assert again.headers["Idempotent-Replay"] == "true"
    assert rows_for(world, body["refund_id"]) == 1


def test_a_batch_answers_each_request_on_its_own(world: World, client: TestClient) -> None:
    good = decision_body(world, held(world, 2))
    bad = decision_body(world, held(world, 3), amount_requested=-5, colour="red")
    duplicate = dict(good)
    r = client.post(
        "/v1/refund-decisions/batch",
        json={"requests": [good, bad, duplicate, "not an object"]},
        headers=key(world, "scorer"),
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [200, 422, 200, 422]
    assert results[0]["decision"]["refund_id"] == good["refund_id"]
    assert {f["field"] for f in results[1]["error"]["fields"]} == {"amount_requested", "colour"}
    assert results[1]["refund_id"] == bad["refund_id"]
    assert results[2]["replayed"] is True
    assert results[2]["decision"]["decision_id"] == results[0]["decision"]["decision_id"]
    assert rows_for(world, good["refund_id"]) == 1
    assert rows_for(world, bad["refund_id"]) == 0


def test_one_customers_requests_in_one_batch_see_each_other(
    world: World, client: TestClient
) -> None:
    # A batch is decided concurrently; one customer's requests still go one after the other,
    # so the second counts the first among the customer's refund requests.
    first = decision_body(world, held(world, 30))
    later = pd.Timestamp(first["requested_at"]) + pd.Timedelta(minutes=1)
    second = {
        **first,
        "refund_id": f"{first['refund_id']}-again",
        "requested_at": later.isoformat(),
    }
    r = client.post(
        "/v1/refund-decisions/batch",
        json={"requests": [first, second]},
        headers=key(world, "scorer"),
    )
    assert [x["status"] for x in r.json()["results"]] == [200, 200], r.text
    counts = []
    for body in (first, second):
        stored = client.get(
            f"/v1/refund-decisions/{body['refund_id']}", headers=key(world, "reviewer")
        ).json()
        counts.append(stored["features"]["customer_refund_requests_7d"])
    assert counts[1] == counts[0] + 1


def test_a_batch_over_the_limit_is_refused(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 4))
    many = [dict(body, refund_id=f"limit-{i}") for i in range(51)]
    r = client.post(
        "/v1/refund-decisions/batch", json={"requests": many}, headers=key(world, "scorer")
    )
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "requests"


def test_a_stored_decision_comes_with_its_inputs_and_features(
    world: World, client: TestClient
) -> None:
    body = decision_body(world, held(world, 5))
    made = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer")).json()
    r = client.get(f"/v1/refund-decisions/{made['decision_id']}", headers=key(world, "reviewer"))
    assert r.status_code == 200, r.text
    stored = r.json()
    assert stored["decision"] == made
    assert stored["request"]["refund_id"] == body["refund_id"]
    assert stored["request"]["order"]["order_id"] == body["order"]["order_id"]
    assert list(stored["features"]) == list(FEATURE_NAMES)
    assert stored["features"]["request_amount"] == pytest.approx(body["amount_requested"])
    by_refund = client.get(
        f"/v1/refund-decisions/{body['refund_id']}", headers=key(world, "reviewer")
    )
    assert by_refund.json()["decision"]["decision_id"] == made["decision_id"]
    missing = client.get("/v1/refund-decisions/nope", headers=key(world, "reviewer"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_stored_request_is_written_as_the_schema_writes_it(
    world: World, client: TestClient
) -> None:
    # Sent with an offset time, spaces and a default left out; the recorder process writes
    # the stored request from these bytes, in the schema's own form.
    body = decision_body(world, held(world, 24))
    body.pop("photo_count", None)
    when = (
        pd.Timestamp(body["requested_at"])
        .tz_localize("UTC")
        .tz_convert("Europe/Berlin")
        .isoformat()
    )
    raw = json.dumps({**body, "requested_at": when}, indent=2).encode()
    headers = {**key(world, "scorer"), "Content-Type": "application/json"}
    r = client.post("/v1/refund-decisions", content=raw, headers=headers)
    assert r.status_code == 200, r.text
    assert client.app.state.service.writer.recorder is not None  # type: ignore[attr-defined]
    with sqlite3.connect(world.db_path) as con:
        (stored,) = con.execute(
            "SELECT request FROM serving_decisions WHERE refund_id = ?", (body["refund_id"],)
        ).fetchone()
    assert stored == RefundDecisionRequest.model_validate_json(raw).model_dump_json()
    written = json.loads(stored)
    assert "+" not in written["requested_at"]  # in UTC, as every stored time
    assert pd.Timestamp(written["requested_at"]) == pd.Timestamp(body["requested_at"])
    assert written["photo_count"] == 0


def test_a_customers_tier_is_the_default_without_a_tier_model(
    world: World, client: TestClient
) -> None:
    customer = held(world, 6)["customer_id"]
    r = client.get(f"/v1/customers/{customer}/tier", headers=key(world, "reviewer"))
    assert r.status_code == 200, r.text
    tier = r.json()
    assert tier["tier"] == "standard" and tier["score"] is None and tier["tier_model"] is None
    assert tier["privileges"]["refund_before_return_allowed"] is False
    assert tier["outstanding_unreturned_value"] == 0.0
    unknown = client.get("/v1/customers/nobody/tier", headers=key(world, "scorer"))
    assert unknown.status_code == 404


# --- events ---------------------------------------------------------------------------------


def test_events_are_appended_once_and_seen_by_the_next_decision(
    world: World, client: TestClient
) -> None:
    refund = held(world, 7)
    body = decision_body(world, refund)
    requested = pd.Timestamp(refund["requested_at"])
    # A burst of orders by this customer in the hour before the request.
    burst = [
        {
            **body["order"],
            "order_id": f"burst-{i}",
            "customer_id": refund["customer_id"],
            "ordered_at": (requested - pd.Timedelta(minutes=50 - i)).isoformat(),
            "shipped_at": None,
            "delivered_at": None,
            "delivery_evidence": "none",
        }
        for i in range(5)
    ]
    sent = client.post(
        "/v1/events", json={"orders": burst + burst[:2]}, headers=key(world, "scorer")
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["written"]["orders"] == 5  # the two sent twice count once
    again = client.post("/v1/events", json={"orders": burst}, headers=key(world, "scorer"))
    assert again.status_code == 200
    decided = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert decided.status_code == 200, decided.text
    stored = client.get(
        f"/v1/refund-decisions/{body['refund_id']}", headers=key(world, "reviewer")
    ).json()
    before = (
        (world.tables["orders"]["customer_id"] == refund["customer_id"])
        & (world.tables["orders"]["ordered_at"] >= requested - pd.Timedelta(days=7))
        & (world.tables["orders"]["ordered_at"] < requested)
    )
    assert stored["features"]["customer_orders_7d"] == int(before.sum()) + 5


def test_an_outcome_of_an_unknown_refund_is_held_and_used_when_the_refund_arrives(
    world: World, client: TestClient
) -> None:
    refund = held(world, 8)
    requested = pd.Timestamp(refund["requested_at"])
    later = iso(requested + pd.Timedelta(days=2))
    abusive, resolved = "customer_confirmed_abusive_refunds", "customer_refunds_with_known_outcome"

    def features_of(refund_id: str) -> dict[str, Any]:
        body = decision_body(world, refund, refund_id=refund_id, requested_at=later)
        r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
        assert r.status_code == 200, r.text
        stored = client.get(f"/v1/refund-decisions/{refund_id}", headers=key(world, "reviewer"))
        features: dict[str, Any] = stored.json()["features"]
        return features

    # What the customer's later requests see before the outcome exists.
    before = features_of("r-before-held-outcome")

    outcome = {
        "outcome_id": "x-t1",
        "refund_id": refund["refund_id"],
        "is_abusive": True,
        "known_at": iso(requested + pd.Timedelta(days=1)),
        "source": "warehouse_check",
    }
    r = client.post("/v1/events", json={"outcomes": [outcome]}, headers=key(world, "scorer"))
    # The store keeps an outcome that arrives before its refund request.
    assert r.status_code == 200, r.text
    assert r.json()["written"] == {"outcomes": 1}

    decided = client.post(
        "/v1/refund-decisions", json=decision_body(world, refund), headers=key(world, "scorer")
    )
    assert decided.status_code == 200, decided.text
    # Once the refund has arrived, its held outcome counts for the customer's later requests.
    after = features_of("r-after-held-outcome")
    assert after[abusive] == before[abusive] + 1, (before[abusive], after[abusive])
    assert after[resolved] == before[resolved] + 1, (before[resolved], after[resolved])


# --- input checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_requested": 0}, "amount_requested"),
        ({"reason": "mistake", "reason_detail": "late"}, "reason_detail"),
        ({"order_stage": "lost"}, "order_stage"),
        ({"requested_at": "yesterday"}, "requested_at"),
        ({"refund_id": ""}, "refund_id"),
        ({"surprise": True}, "surprise"),
        ({"amount_requested": 1e12}, "amount_requested"),
    ],
)
def test_bad_input_is_answered_422_naming_the_field(
    world: World, client: TestClient, change: dict[str, Any], field: str
) -> None:
    body = decision_body(world, held(world, 9), **change)
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert field in {f["field"] for f in error["fields"]}


def test_bad_orders_name_the_nested_field(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 9))
    body["order"] = {**body["order"], "amount": -1, "extra": 1}
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 422
    assert {"order.amount", "order.extra"} <= {f["field"] for f in r.json()["error"]["fields"]}


def test_a_product_name_without_its_id_is_refused_naming_the_field(
    world: World, client: TestClient
) -> None:
    body = decision_body(world, held(world, 9))
    body["order"] = {**body["order"], "product_name": "Slim jeans"}
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 422, r.text
    fields = r.json()["error"]["fields"]
    assert [f["field"] for f in fields] == ["order.product_name"]
    assert "product_name needs product_id" in fields[0]["message"]


def _stored_product(world: World, order_id: str) -> tuple[str | None, str | None]:
    with sqlite3.connect(world.db_path) as con:
        row = con.execute(
            "SELECT product_id, product_name FROM event_orders WHERE order_id = ?", (order_id,)
        ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def test_an_orders_product_is_stored_and_kept_when_the_order_comes_again_without_it(
    world: World, client: TestClient
) -> None:
    refund = held(world, 14)
    body = decision_body(world, refund, refund_id="product-store-1")
    order_id = "product-store-1-order"
    body["order"] = {
        **body["order"],
        "order_id": order_id,
        "product_id": "sku-mug",
        "product_name": "Ceramic mug",
    }
    body["amount_requested"] = min(body["amount_requested"], body["order"]["amount"] / 2)
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 200, r.text
    assert _stored_product(world, order_id) == ("sku-mug", "Ceramic mug")
    # The same order in a second request, from a system that sends no product: kept.
    again = {**body, "refund_id": "product-store-2"}
    again["order"] = {
        k: v for k, v in body["order"].items() if k not in ("product_id", "product_name")
    }
    r = client.post("/v1/refund-decisions", json=again, headers=key(world, "scorer"))
    assert r.status_code == 200, r.text
    assert _stored_product(world, order_id) == ("sku-mug", "Ceramic mug")
    # Another product for the same order: refused with the reason, nothing written; the
    # product-less request before it did not make the service forget the recorded one.
    other = {**body, "refund_id": "product-store-3"}
    other["order"] = {**body["order"], "product_id": "sku-vase", "product_name": "Glass vase"}
    r = client.post("/v1/refund-decisions", json=other, headers=key(world, "scorer"))
    assert r.status_code == 409, r.text
    fields = r.json()["error"]["fields"]
    assert [(f["field"], f["type"]) for f in fields] == [("order.product_id", "fixed_fact")]
    assert "'sku-mug'" in fields[0]["message"] and "'sku-vase'" in fields[0]["message"]
    assert _stored_product(world, order_id) == ("sku-mug", "Ceramic mug")
    assert rows_for(world, "product-store-3") == 0


def test_an_order_recorded_without_a_product_gets_the_first_one_sent_and_keeps_it(
    world: World, client: TestClient
) -> None:
    refund = held(world, 15)
    body = decision_body(world, refund, refund_id="product-late-1")
    order_id = "product-late-1-order"
    body["order"] = {**body["order"], "order_id": order_id}
    body["amount_requested"] = min(body["amount_requested"], body["order"]["amount"] / 2)
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 200, r.text
    assert _stored_product(world, order_id) == (None, None)
    placed = {**body["order"], "customer_id": body["customer_id"]}
    events = {"orders": [{**placed, "product_id": "sku-mug"}]}
    r = client.post("/v1/events", json=events, headers=key(world, "scorer"))
    assert r.status_code == 200, r.text
    assert _stored_product(world, order_id) == ("sku-mug", None)
    # In one call, a row without the product and then one with another: the second refused.
    events = {"orders": [placed, {**placed, "product_id": "sku-vase"}]}
    r = client.post("/v1/events", json=events, headers=key(world, "scorer"))
    assert r.status_code == 409, r.text
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["orders.1.product_id"]
    assert _stored_product(world, order_id) == ("sku-mug", None)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'{"refund_id": 1}'])
def test_malformed_bodies_never_answer_500(world: World, client: TestClient, raw: bytes) -> None:
    r = client.post(
        "/v1/refund-decisions",
        content=raw,
        headers={**key(world, "scorer"), "Content-Type": "application/json"},
    )
    # Not JSON at all is 400 (`malformed_json`); JSON of the wrong shape is 422.
    assert r.status_code == (400 if raw == b"{" else 422)
    assert "error" in r.json()


# --- keys and roles -------------------------------------------------------------------------


def test_keys_and_roles_are_checked(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 10))
    none = client.post("/v1/refund-decisions", json=body)
    assert none.status_code == 401 and none.json()["error"]["code"] == "unauthenticated"
    assert "WWW-Authenticate" in none.headers
    wrong = client.post("/v1/refund-decisions", json=body, headers={"X-API-Key": "rr_x_y"})
    assert wrong.status_code == 401
    reviewer = client.post("/v1/refund-decisions", json=body, headers=key(world, "reviewer"))
    assert reviewer.status_code == 403 and reviewer.json()["error"]["code"] == "forbidden"
    scorer_reads = client.get("/v1/refund-decisions/x", headers=key(world, "scorer"))
    assert scorer_reads.status_code == 403
    admin = client.post("/v1/refund-decisions", json=body, headers=key(world, "admin"))
    assert admin.status_code == 200
    assert client.post("/v1/admin/reload", headers=key(world, "scorer")).status_code == 403


def test_a_revoked_key_stops_working(world: World, client: TestClient) -> None:
    from features.store import create_store_engine
    from serving.auth import Role, create_key, revoke_key

    assert world.settings.database_url is not None
    engine = create_store_engine(world.settings.database_url)
    made, token = create_key(engine, Role.SCORER, "to revoke")
    customer = held(world, 11)["customer_id"]
    path = f"/v1/customers/{customer}/tier"
    assert client.get(path, headers={"X-API-Key": token}).status_code == 200
    revoke_key(engine, made.key_id)
    engine.dispose()
    r = client.get(path, headers={"X-API-Key": token})
    assert r.status_code == 401


# --- health, metrics, administration --------------------------------------------------------


def test_ready_and_live(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    checks = r.json()["checks"]
    assert r.json()["status"] == "ready"
    assert r.json()["ready"] is True and r.json()["degraded"] is False
    assert r.json()["models"] == [{"name": "refund-abuse", "version": "1", "alias": "champion"}]
    assert r.json()["policy"].startswith("default v")
    assert checks["database"]["ok"] and checks["abuse_model"]["ok"]
    assert "default tier" in checks["tier_model"]["detail"]


def test_metrics_show_latency_decisions_and_models(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 12))
    client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    text = client.get("/metrics").text
    assert (
        'refund_risk_http_request_duration_seconds_bucket{le="0.005",method="POST",'
        'route="/v1/refund-decisions",status="200"}' in text
    )
    assert "refund_risk_decisions_total{action=" in text
    order = body["order"]
    labels = (
        f'category="{order["category"]}",reason="{body["reason"]}",'
        f'reason_detail="{body["reason_detail"]}"'
    )
    assert f"refund_risk_refund_requests_total{{{labels}}}" in text
    assert (
        f'refund_risk_refund_requested_amount_total{{category="{order["category"]}",'
        f'reason="{body["reason"]}"}}' in text
    )
    assert 'refund_risk_model_info{alias="champion",model="refund-abuse",version="1"} 1.0' in text
    assert "refund_risk_degraded 0.0" in text


def test_admin_reload_switches_or_refuses_without_dropping(
    world: World, client: TestClient
) -> None:
    r = client.post("/v1/admin/reload", json={}, headers=key(world, "admin"))
    assert r.status_code == 200, r.text
    assert r.json()["abuse_model"] == "refund-abuse/1" and r.json()["degraded"] is False
    refused = client.post(
        "/v1/admin/reload", json={"alias": "nothing-here"}, headers=key(world, "admin")
    )
    assert refused.status_code == 409
    assert "kept" in refused.json()["error"]["message"]
    body = decision_body(world, held(world, 13))
    after = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert after.status_code == 200 and after.json()["degraded"] is False


def test_openapi_documents_the_api_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/refund-decisions",
        "/v1/refund-decisions/batch",
        "/v1/refund-decisions/{decision_id}",
        "/v1/customers/{customer_id}/tier",
        "/v1/events",
        "/v1/admin/reload",
        "/readyz",
        "/healthz",
        "/metrics",
    ):
        assert path in paths, path
    schemas = spec["components"]["schemas"]
    assert schemas["RefundDecisionRequest"]["examples"]
    assert schemas["DecisionOut"]["examples"]
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]


# --- failure --------------------------------------------------------------------------------


def test_a_database_that_refuses_the_decision_gives_503_and_no_decision(
    world: World, client: TestClient
) -> None:
    body = decision_body(world, held(world, 14))
    with sqlite3.connect(world.db_path) as con:
        con.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON serving_decisions "
            "BEGIN SELECT RAISE(ABORT, 'disk is full'); END"
        )
    try:
        r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == str(world.settings.retry_after_seconds)
        assert r.json()["error"]["code"] == "database_unavailable"
        assert "decision_id" not in r.text
        assert rows_for(world, body["refund_id"]) == 0
        assert (
            'refund_risk_http_request_duration_seconds_count{method="POST",'
            'route="/v1/refund-decisions",status="503"}' in client.get("/metrics").text
        )
        with sqlite3.connect(world.db_path) as con:
            appended = con.execute(
                "SELECT count(*) FROM event_refund_requests WHERE refund_id = ?",
                (body["refund_id"],),
            ).fetchone()[0]
        assert appended == 0  # the refund request went with the decision: not recorded
        batch = client.post(
            "/v1/refund-decisions/batch", json={"requests": [body]}, headers=key(world, "scorer")
        )
        assert batch.status_code == 503 and "Retry-After" in batch.headers
    finally:
        with sqlite3.connect(world.db_path) as con:
            con.execute("DROP TRIGGER refuse")
    retried = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert retried.status_code == 200
    assert rows_for(world, body["refund_id"]) == 1


@contextmanager
def stopped_recorder(
    world: World, client: TestClient, body: dict[str, Any], then: signal.Signals
) -> Iterator[Future[Any]]:
    """A decision request whose group the recorder process holds while stopped (SIGSTOP);
    when the block ends, the process gets `then`, whatever happened, so the request ends."""
    service = client.app.state.service  # type: ignore[attr-defined]
    pid = service.writer.recorder.pid
    os.kill(pid, signal.SIGSTOP)
    pool = ThreadPoolExecutor(1)
    try:
        answer = pool.submit(
            client.post, "/v1/refund-decisions", json=body, headers=key(world, "scorer")
        )
        deadline = time.monotonic() + 30
        while service.writer.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        yield answer
    finally:
        os.kill(pid, then)
        pool.shutdown(wait=True)


def test_a_recorder_process_that_dies_fails_its_decisions_with_503_and_is_replaced(
    world: World, client: TestClient
) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    recorder = service.writer.recorder
    assert recorder is not None and recorder.running
    dead = recorder.pid
    body = decision_body(world, held(world, 17))
    # It takes the group, then dies before committing it.
    with stopped_recorder(world, client, body, then=signal.SIGKILL) as answer:
        in_flight = service.writer.in_flight
    assert in_flight == 1
    r = answer.result()
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == str(world.settings.retry_after_seconds)
    assert r.json()["error"]["code"] == "database_unavailable"
    assert rows_for(world, body["refund_id"]) == 0
    retried = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert retried.status_code == 200, retried.text
    assert retried.headers.get("Idempotent-Replay") is None
    assert rows_for(world, body["refund_id"]) == 1
    assert recorder.running and recorder.pid != dead


def test_a_caller_that_goes_away_leaves_its_decision_recorded_and_waited_for(
    world: World, client: TestClient
) -> None:
    # The caller is cancelled while its group is in flight (the recorder is stopped): the
    # decision is still recorded, and the customer's next decision still waits for it.
    service = client.app.state.service  # type: ignore[attr-defined]
    pid = service.writer.recorder.pid
    body = decision_body(world, held(world, 25))
    request = RefundDecisionRequest.model_validate(body)
    seen: dict[str, bool] = {}

    async def scenario() -> None:
        caller = asyncio.ensure_future(service.decide(request))
        deadline = time.monotonic() + 30
        while service.writer.in_flight == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        caller.cancel()
        await asyncio.sleep(0.05)
        seen["caller_cancelled"] = caller.cancelled()
        waiting = asyncio.ensure_future(service.writer.settled(request.customer_id))
        await asyncio.sleep(0.1)
        seen["next_waits_meanwhile"] = not waiting.done()
        os.kill(pid, signal.SIGCONT)
        await asyncio.wait_for(waiting, 30)

    os.kill(pid, signal.SIGSTOP)
    try:
        client.portal.call(scenario)  # type: ignore[union-attr]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert seen == {"caller_cancelled": True, "next_waits_meanwhile": True}
    assert rows_for(world, body["refund_id"]) == 1
    retried = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert retried.status_code == 200, retried.text
    assert retried.headers["Idempotent-Replay"] == "true"


def test_a_decision_not_recorded_in_time_is_answered_503_and_kept_for_the_retry(
    world: World,
) -> None:
    settings = world.settings.model_copy(update={"record_timeout_seconds": 0.5})
    first = decision_body(world, held(world, 26))
    later = pd.Timestamp(first["requested_at"]) + pd.Timedelta(minutes=1)
    second = {**first, "refund_id": f"{first['refund_id']}-next", "requested_at": later.isoformat()}
    # Two other customers' requests: the first forms the group that waits behind the one in
    # flight, the second joins that group after its first member's time is up.
    others = [decision_body(world, held(world, i)) for i in (27, 28)]
    assert len({first["customer_id"], *(o["customer_id"] for o in others)}) == 3
    scorer = key(world, "scorer")
    with TestClient(create_app(settings, freeze_gc=False)) as fresh:
        pid = fresh.app.state.service.writer.recorder.pid  # type: ignore[attr-defined]

        def each() -> list[tuple[Any, float]]:
            answers = []
            for body in (first, second, *others):
                started = time.monotonic()
                answer = fresh.post("/v1/refund-decisions", json=body, headers=scorer)
                answers.append((answer, time.monotonic() - started))
            return answers

        os.kill(pid, signal.SIGSTOP)  # the database goes quiet
        pool = ThreadPoolExecutor(1)
        try:
            answers = pool.submit(each).result(timeout=30)
        finally:
            os.kill(pid, signal.SIGCONT)  # a service that waits forever fails the test, not CI
            pool.shutdown(wait=True)
        for answer, waited in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == str(settings.retry_after_seconds)
            assert answer.json()["error"]["code"] == "database_unavailable"
            assert waited >= 0.5  # each waited its half second, no less
        late, blocked, pending, joined = (a.json()["error"]["message"] for a, _ in answers)
        assert "not recorded within 0.5 s" in late
        # The same customer's next request waited for the first to be recorded, then gave up.
        assert "previous decision is not recorded yet" in blocked
        assert "not recorded within 0.5 s" in pending and "not recorded within 0.5 s" in joined
        # The decisions stayed in their groups: recorded once the database answers again, and
        # the refund system's retry gets each back instead of a second decision.
        recorded = [first, *others]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            rows_for(world, body["refund_id"]) for body in recorded
        ):
            time.sleep(0.05)
        for body in recorded:
            retried = fresh.post("/v1/refund-decisions", json=body, headers=scorer)
            assert retried.status_code == 200, retried.text
            assert retried.headers["Idempotent-Replay"] == "true"
            assert rows_for(world, body["refund_id"]) == 1
        # The blocked one was never decided: its retry is a new decision.
        again = fresh.post("/v1/refund-decisions", json=second, headers=scorer)
        assert again.status_code == 200, again.text
        assert again.headers.get("Idempotent-Replay") is None
        assert rows_for(world, second["refund_id"]) == 1
        # Ops see each request that ran out of time.
        metrics = fresh.get("/metrics").text
        assert "refund_risk_decision_record_timeouts_total 4.0" in metrics


def test_a_service_that_cannot_record_says_it_is_not_ready_until_it_can(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(world.settings, freeze_gc=False)) as fresh:
        service = fresh.app.state.service  # type: ignore[attr-defined]
        recorder = service.writer.recorder
        assert fresh.get("/readyz").json()["checks"]["decision_log"] == {
            "ok": True,
            "detail": "decisions are recorded in the recorder process",
        }
        bodies = [decision_body(world, held(world, i)) for i in (19, 20, 21, 22)]
        r = fresh.post("/v1/refund-decisions", json=bodies[3], headers=key(world, "scorer"))
        assert r.status_code == 200, r.text  # the loop now watches this process's pipe
        # Every recorder process started from now on dies at once (an unknown database kind),
        # while the service's own database connection stays well.
        url, recorder.url = recorder.url, "nosuchdatabase://"
        recorder.discard()
        for body in bodies[:2]:
            r = fresh.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
            assert r.status_code == 503, r.text
        assert fresh.get("/readyz").status_code == 200  # two failures may be a passing blip
        r = fresh.post("/v1/refund-decisions", json=bodies[2], headers=key(world, "scorer"))
        assert r.status_code == 503, r.text
        ready = fresh.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        check = ready.json()["checks"]["decision_log"]
        assert check["ok"] is False
        assert "the last 3 groups of decisions could not be recorded" in check["detail"]
        assert ready.json()["checks"]["database"]["ok"] is True
        # With no traffic it is tried again once the failures are old enough...
        monkeypatch.setattr("serving.writer.FAILURE_MEMORY_SECONDS", 0.0)
        assert fresh.get("/readyz").status_code == 200
        monkeypatch.undo()
        assert fresh.get("/readyz").status_code == 503
        # ...and once mended, the next decision is recorded and it is ready again (after the
        # pause a recorder that kept dying is restarted after).
        recorder.url = url
        time.sleep(recorder.restarts_in)
        r = fresh.post("/v1/refund-decisions", json=bodies[0], headers=key(world, "scorer"))
        assert r.status_code == 200, r.text
        assert fresh.get("/readyz").status_code == 200
    recorded = [rows_for(world, b["refund_id"]) for b in bodies]
    assert recorded == [1, 0, 0, 1]


def test_a_recorder_that_stops_answering_makes_the_service_unready_meanwhile(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("serving.writer.STUCK_SECONDS", 0.2)
    with TestClient(create_app(world.settings, freeze_gc=False)) as fresh:
        body = decision_body(world, held(world, 23))
        # A lock held elsewhere, a database gone quiet: then it answers again.
        with stopped_recorder(world, fresh, body, then=signal.SIGCONT) as answer:
            time.sleep(0.3)
            ready = fresh.get("/readyz")
        assert ready.status_code == 503, ready.text
        detail = ready.json()["checks"]["decision_log"]["detail"]
        assert "a group of 1 decisions has waited" in detail
        assert answer.result().status_code == 200  # it answers once the recorder does
        assert fresh.get("/readyz").status_code == 200
    assert rows_for(world, body["refund_id"]) == 1


def test_a_group_larger_than_the_pipe_buffer_is_recorded_and_replayed_whole(
    world: World, tmp_path: Path
) -> None:
    # Hundreds of decisions in one group: the group sent to the recorder process and the reply
    # carrying every stored answer (a second service, which recorded none of them, replays
    # them all) are each far larger than a socket buffer, so both cross the pipe in parts.
    # Under uvloop, as served: its watch on the pipe makes the pipe non-blocking. On a copy of
    # the world's database, so that the other tests' queues and counts are left as they were.
    copy = tmp_path / "copy.db"
    with sqlite3.connect(world.db_path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    settings = world.settings.model_copy(update={"database_url": f"sqlite:///{copy}"})
    refunds = world.tables["refund_requests"].drop_duplicates("customer_id").head(300)
    bodies = [
        decision_body(world, r, refund_id=f"{r['refund_id']}-large") for _, r in refunds.iterrows()
    ]
    settings = settings.model_copy(update={"batch_limit": len(bodies)})
    answers = []
    for _ in range(2):
        app = create_app(settings, freeze_gc=False)
        with TestClient(app, backend_options={"use_uvloop": True}) as fresh:
            recorder = fresh.app.state.service.writer.recorder  # type: ignore[attr-defined]
            pid = recorder.pid
            # One decision first, so the loop watches the pipe before the large group goes.
            warm = fresh.post("/v1/refund-decisions", json=bodies[0], headers=key(world, "scorer"))
            assert warm.status_code == 200, warm.text
            r = fresh.post(
                "/v1/refund-decisions/batch",
                json={"requests": bodies},
                headers=key(world, "scorer"),
            )
            assert r.status_code == 200, r.text[:500]
            answers.append(r.json()["results"])
            assert recorder.pid == pid  # never lost and restarted
    first, second = answers
    assert [x["status"] for x in first] == [200] * len(bodies), first[0]
    assert [x["replayed"] for x in first] == [True] + [False] * (len(bodies) - 1)
    assert [x["status"] for x in second] == [200] * len(bodies), second[0]
    assert all(x["replayed"] for x in second)
    assert [x["decision"] for x in second] == [x["decision"] for x in first]
    with sqlite3.connect(copy) as con:
        stored = con.execute(
            "SELECT count(*), count(DISTINCT refund_id) FROM serving_decisions "
            "WHERE refund_id LIKE '%-large'"
        ).fetchone()
    assert stored == (len(bodies), len(bodies))


def test_decisions_can_be_recorded_on_the_event_loop_instead(world: World) -> None:
    settings = world.settings.model_copy(update={"record_in_process": False})
    with TestClient(create_app(settings, freeze_gc=False)) as inline:
        assert inline.app.state.service.writer.recorder is None  # type: ignore[attr-defined]
        # A customer and order of the test's own: no other test's requests touch its history.
        first = decision_body(world, held(world, 18))
        first["customer_id"] = "recorded-on-the-event-loop"
        first["order"] = {**first["order"], "order_id": "recorded-on-the-event-loop-order"}
        later = pd.Timestamp(first["requested_at"]) + pd.Timedelta(minutes=1)
        second = {**first, "refund_id": f"{first['refund_id']}-again", "requested_at": str(later)}
        r = inline.post(
            "/v1/refund-decisions/batch",
            json={"requests": [first, second, first]},
            headers=key(world, "scorer"),
        )
        results = r.json()["results"]
        assert [x["status"] for x in results] == [200, 200, 200], r.text
        assert results[2]["replayed"] is True
        counts = [
            inline.get(
                f"/v1/refund-decisions/{b['refund_id']}", headers=key(world, "reviewer")
            ).json()["features"]["customer_refund_requests_7d"]
            for b in (first, second)
        ]
    assert counts[1] == counts[0] + 1
    assert rows_for(world, first["refund_id"]) == rows_for(world, second["refund_id"]) == 1


def test_without_a_model_the_service_decides_by_rules_and_says_so(
    world: World, tmp_path: Path
) -> None:
    settings = load_settings(
        data_dir=world.settings.data_dir,
        database_url=world.settings.database_url,
        mlruns_dir=tmp_path / "no-registry",
        mlflow_tracking_uri=None,
        api_key_cache_seconds=0.0,
    )
    with TestClient(create_app(settings, freeze_gc=False)) as degraded:
        # Degraded is still ready: the rules-only fallback must stay in rotation.
        ready = degraded.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded"
        assert ready.json()["ready"] is True and ready.json()["degraded"] is True
        assert ready.json()["models"] == []
        assert ready.json()["policy"].startswith("degraded v")
        assert "rules-only" in ready.json()["checks"]["abuse_model"]["detail"]
        body = decision_body(world, held(world, 15))
        r = degraded.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["degraded"] is True and d["abuse_score"] is None and d["abuse_band"] is None
        assert d["versions"]["abuse_model"] is None
        assert DecisionOut.model_validate_json(r.text).model_dump_json() == r.text
        assert d["versions"]["policy"].startswith("degraded v")
        assert d["action"] in {"auto_approve", "standard_return", "manual_review"}
        assert "refund_risk_degraded 1.0" in degraded.get("/metrics").text


def test_stored_response_is_json_the_schema_accepts(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 16))
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 200, r.text
    with sqlite3.connect(world.db_path) as con:
        (stored,) = con.execute(
            "SELECT response FROM serving_decisions WHERE refund_id = ?", (body["refund_id"],)
        ).fetchone()
    # The decision log holds the answer the caller got, in a form the published schema accepts
    # without loss (extra or renamed fields are refused, so a drifted log fails here).
    decision = DecisionOut.model_validate_json(stored)
    assert json.loads(decision.model_dump_json()) == json.loads(stored)
    assert json.loads(stored) == r.json()
    assert decision.refund_id == body["refund_id"]


def test_an_order_without_fingerprints_is_decided_with_linked_features_missing(
    world: World, client: TestClient
) -> None:
    # A shop that records no device, address or card: a new customer's first request.
    body = decision_body(world, held(world, 6), refund_id="r-nofp", customer_id="c-nofp")
    order = {k: v for k, v in body["order"].items() if k not in FINGERPRINTS}
    body["order"] = order | {"order_id": "o-nofp"}
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 200, r.text
    stored = client.get(
        f"/v1/refund-decisions/{r.json()['decision_id']}", headers=key(world, "reviewer")
    ).json()
    linked = {k: v for k, v in stored["features"].items() if k.startswith("linked_accounts")}
    assert len(linked) == 8 and all(v is None for v in linked.values()), linked
    assert stored["request"]["order"]["device_id"] is None

    # With only a device sent, the device features are known (nobody shares it), the rest not.
    body = body | {"refund_id": "r-dev", "customer_id": "c-dev"}
    body["order"] = order | {"order_id": "o-dev", "device_id": "d-only-mine"}
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 200, r.text
    features = client.get(
        f"/v1/refund-decisions/{r.json()['decision_id']}", headers=key(world, "reviewer")
    ).json()["features"]
    assert features["linked_accounts_by_device"] == 0
    assert features["linked_accounts_by_any"] == 0
    assert features["linked_accounts_by_payment"] is None


FINGERPRINTS = ("device_id", "address_id", "payment_fingerprint")
