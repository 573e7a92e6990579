"""The API against its own contract: bounded input, plain errors, no 5xx, an exact OpenAPI.

Targeted cases check what a payment-grade API owes its callers (a body over the limit refused
before it is read, malformed JSON named by line and column, bounded numbers, times that carry
their zone, booleans and timestamps that refuse lookalikes, a sign-in robust to any cookie);
then schemathesis drives the real service under uvicorn, over every documented operation with
each role's key, and checks that nothing answers 5xx and every answer matches the document.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from serving_world import World, decision_body, held, key, running_app

from serving.app import create_app
from serving.sessions import SessionSigner

pytestmark = [pytest.mark.slow]

LIMIT = 1 << 20


@pytest.fixture(scope="module")
def world(serving_world: World) -> World:
    return serving_world


@pytest.fixture(scope="module")
def own_settings(world: World, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The world's settings over a copy of its database: what these tests write (random
    events, pins, decisions) stays out of the other tests' way."""
    copy = tmp_path_factory.mktemp("contract") / "service.db"
    with sqlite3.connect(world.db_path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return world.settings.model_copy(update={"database_url": f"sqlite:///{copy}"})


@pytest.fixture(scope="module")
def client(own_settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(own_settings, freeze_gc=False)) as c:
        yield c


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    return dict(body["error"])


# --- bounded input -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/refund-decisions", "/v1/events", "/ops/login"])
def test_a_declared_body_over_the_limit_is_refused_before_the_key_is_checked(
    client: TestClient, path: str
) -> None:
    r = client.post(
        path,
        content=b"{" + b" " * LIMIT + b"}",
        headers={"Content-Type": "application/json"},  # and no key at all
    )
    assert r.status_code == 413, r.text
    error = _error(r)
    assert error["code"] == "too_large" and "1,048,576 bytes" in error["message"]


def test_a_body_over_the_limit_is_not_read_past_it(world: World, client: TestClient) -> None:
    """A declared length over the limit is answered before a byte is read; a body sent in
    chunks (no length declared) is read only up to the limit. Both on the decision route's
    direct path (a scorer's key, JSON) and through the framework."""
    app = client.app
    chunk = b" " * (64 * 1024)
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def scope_of(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-api-key", world.keys["scorer"].encode()),
                *headers,
            ],
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
        }

    for path in ("/v1/refund-decisions", "/v1/refund-decisions/batch", "/v1/events"):
        pulled, sent = 0, []
        declared = scope_of(path, [(b"content-length", str(64 << 20).encode())])
        asyncio.run(app(declared, receive, send))  # type: ignore[arg-type]
        assert sent[0]["status"] == 413 and pulled == 0, (path, sent)
        pulled, sent = 0, []
        asyncio.run(app(scope_of(path, []), receive, send))  # type: ignore[arg-type]
        assert sent[0]["status"] == 413, (path, sent)
        assert pulled <= LIMIT // len(chunk) + 1, path  # 64 MB offered, 1 MiB read


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/reviews", {"offset": "99999999999999999999"}, "query.offset"),
        ("/v1/reviews", {"max_age_hours": "1e9"}, "query.max_age_hours"),
        ("/v1/reviews", {"min_age_hours": "1e308"}, "query.min_age_hours"),
        ("/v1/reviews", {"min_amount": "inf"}, "query.min_amount"),
        ("/v1/customers/c1/tier", {"as_of": "0"}, "query.as_of"),
        ("/v1/customers/c1/tier", {"as_of": "0001-01-01T00:00:00Z"}, "query.as_of"),
    ],
)
def test_numbers_and_times_in_a_query_are_bounded(
    world: World, client: TestClient, path: str, params: dict[str, str], field: str
) -> None:
    r = client.get(path, params=params, headers=key(world, "admin"))
    assert r.status_code == 422, r.text
    assert field in {f["field"] for f in _error(r)["fields"]}


def test_the_queue_page_ignores_numbers_out_of_bounds(world: World, client: TestClient) -> None:
    for params in (
        {"min_age_hours": "1e308"},
        {"max_age_hours": "1e9", "page": "99999999999999999999"},
        {"page": "²"},
        {"min_amount": "-1e400"},
    ):
        r = client.get("/ops/queue", params=params, headers=key(world, "reviewer"))
        assert r.status_code == 200, (params, r.text[:300])


def test_a_case_version_past_the_bound_is_refused_not_a_server_error(
    world: World, client: TestClient
) -> None:
    r = client.post(
        "/v1/reviews/nope/resolve",
        json={"decision": "approve", "expected_version": 2**63},
        headers=key(world, "reviewer"),
    )
    assert r.status_code == 422, r.text
    assert {f["field"] for f in _error(r)["fields"]} == {"expected_version"}


def test_an_error_quotes_only_a_prefix_of_a_long_value(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 20))
    body["order"] = {**body["order"], "category": "x" * 500_000}
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 422
    assert len(r.content) < 2_000
    (bad,) = _error(r)["fields"]
    assert bad["field"] == "order.category" and bad["message"].startswith("unknown category 'xx")


# --- malformed JSON, plain messages --------------------------------------------------------------

JSON_ROUTES = [
    "/v1/refund-decisions",
    "/v1/refund-decisions/batch",
    "/v1/events",
    "/v1/admin/reload",
    "/v1/reviews/some-case/resolve",
    "/v1/overrides/tier-pins",
    "/v1/overrides/watchlist",
]


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_malformed_json_is_one_400_naming_line_and_column(
    world: World, client: TestClient, path: str
) -> None:
    r = client.post(
        path,
        content=b'{\n  "refund_id": "r1",\n  "amount": ,\n}',
        headers={**key(world, "admin"), "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    error = _error(r)
    assert error["code"] == "malformed_json"
    assert "line 3, column 13" in error["message"]
    assert [f["field"] for f in error["fields"]] == ["body"]


@pytest.mark.parametrize("path", ["/v1/refund-decisions", "/v1/refund-decisions/batch"])
def test_a_body_that_is_not_utf8_is_malformed_json(
    world: World, client: TestClient, path: str
) -> None:
    r = client.post(
        path,
        content=b'{"refund_id": "\xff\xfe"}',
        headers={**key(world, "scorer"), "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert _error(r)["code"] == "malformed_json"


def test_errors_name_the_field_in_plain_words(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 21))
    body["reason_detail"] = "late" if body["reason"] != "logistics" else "wrong_size"
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 422
    (bad,) = _error(r)["fields"]
    assert bad["field"] == "reason_detail"
    assert "Value error" not in bad["message"] and "is a detail of" in bad["message"]
    batch = client.post(
        "/v1/refund-decisions/batch",
        json={"requests": [decision_body(world, held(world, 22)), 7, "text"]},
        headers=key(world, "scorer"),
    )
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    for index in (1, 2):
        (bad,) = results[index]["error"]["fields"]
        assert bad == {
            "field": f"requests.{index}",
            "message": "must be a JSON object",
            "type": "model_type",
        }


# --- lookalike values ----------------------------------------------------------------------------


@pytest.mark.parametrize("when", [0, 1_700_000_000, 1.7e12, "1700000000", True])
def test_a_timestamp_must_be_iso_text_never_a_bare_number(
    world: World, client: TestClient, when: Any
) -> None:
    body = decision_body(world, held(world, 23), requested_at=when)
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 422, r.text
    assert "requested_at" in {f["field"] for f in _error(r)["fields"]}
    events = client.post(
        "/v1/events",
        json={"customers": [{"customer_id": "c-epoch", "signup_at": when, "region": "north"}]},
        headers=key(world, "scorer"),
    )
    assert events.status_code == 422, events.text
    assert {f["field"] for f in _error(events)["fields"]} == {"customers.0.signup_at"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/reviews/x/resolve", {"decision": "approve", "expected_version": False}, None),
        ("/v1/admin/reload", {"policy": "yes"}, "policy"),
        ("/v1/admin/reload", {"policy": 1}, "policy"),
        (
            "/v1/events",
            {
                "outcomes": [
                    {
                        "outcome_id": "x1",
                        "refund_id": "r1",
                        "is_abusive": "true",
                        "known_at": "2025-02-24T10:00:00Z",
                        "source": "warehouse_check",
                    }
                ]
            },
            "outcomes.0.is_abusive",
        ),
    ],
)
def test_booleans_and_whole_numbers_refuse_each_other(
    world: World, client: TestClient, path: str, body: dict[str, Any], field: str | None
) -> None:
    r = client.post(path, json=body, headers=key(world, "admin"))
    assert r.status_code == 422, r.text
    assert {f["field"] for f in _error(r)["fields"]} == {field or "expected_version"}


def test_a_count_refuses_a_boolean(world: World, client: TestClient) -> None:
    body = decision_body(world, held(world, 24), photo_count=True)
    body["order"] = {**body["order"], "item_count": True}
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 422
    assert {f["field"] for f in _error(r)["fields"]} == {"photo_count", "order.item_count"}


# --- times carry their zone ----------------------------------------------------------------------


def test_every_time_answered_carries_its_zone(world: World, client: TestClient) -> None:
    reviewer = key(world, "reviewer")
    customer = str(held(world, 25)["customer_id"])
    pin = client.post(
        "/v1/overrides/tier-pins",
        json={
            "customer_id": customer,
            "tier": "gold",
            "expires_at": "2099-01-01T02:00:00+02:00",
            "reason": "key account",
        },
        headers=reviewer,
    )
    assert pin.status_code == 200, pin.text
    assert pin.json()["expires_at"] == "2099-01-01T00:00:00Z"
    assert pin.json()["created_at"].endswith("Z")
    watch = client.post(
        "/v1/overrides/watchlist",
        json={"customer_id": customer, "reason": "shares a device"},
        headers=reviewer,
    )
    assert watch.json()["created_at"].endswith("Z")
    listed = client.get("/v1/overrides", headers=reviewer).json()
    assert all(p["created_at"].endswith("Z") for p in listed["pins"])
    assert all(w["created_at"].endswith("Z") for w in listed["watchlist"])
    tier = client.get(f"/v1/customers/{customer}/tier", headers=reviewer)
    assert tier.json()["as_of"].endswith("Z")


# --- sessions and sign-in ------------------------------------------------------------------------


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.text() | st.binary().map(lambda b: b.decode("latin-1")))
def test_any_cookie_is_no_session_unless_signed(cookie: str) -> None:
    signer = SessionSigner("secret", 3600)
    assert signer.read(cookie) is None
    assert signer.sign_in_ok(cookie, cookie) is False
    # Bytes added to a real cookie never make it read as anything but what was signed.
    session, real = signer.open("k1", "reviewer")
    assert signer.read(real + cookie) in (None, session)
    assert signer.read(cookie + real) in (None, session)


@pytest.mark.parametrize("raw", ["rr_ops_session=é".encode(), b"rr_ops_session=\xff\x00."])
def test_a_cookie_of_any_bytes_sends_to_sign_in_not_an_error(
    client: TestClient, raw: bytes
) -> None:
    r = client.get("/ops/queue", headers={b"cookie": raw}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ops/login")
    posted = client.post(
        "/ops/login",
        data={"api_key": "rr_x_y", "csrf": "z"},
        headers={b"cookie": raw.replace(b"rr_ops_session", b"rr_ops_sign_in")},
    )
    assert posted.status_code == 403


# --- the document, and the service against it ----------------------------------------------------


def test_metrics_are_documented_as_prometheus_text(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    decide = spec["paths"]["/v1/refund-decisions"]["post"]["responses"]
    assert {"200", "400", "401", "403", "413", "422", "503"} <= set(decide)


def test_the_order_documents_its_optional_product(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    order = spec["components"]["schemas"]["OrderDetails"]
    assert {"product_id", "product_name"} <= set(order["properties"])
    assert not {"product_id", "product_name"} & set(order.get("required", []))
    assert "product" in order["properties"]["product_id"]["description"]
    assert order["examples"][0]["product_id"]


@dataclass
class Running:
    """The app under uvicorn on a loopback port."""

    url: str


@pytest.fixture(scope="module")
def server(own_settings: Any) -> Iterator[Running]:
    """The real app on a free loopback port, in a thread; stopped after the module."""
    with running_app(own_settings, "contract-server") as url:
        yield Running(url)


EXAMPLES = {"admin": 12, "reviewer": 5, "scorer": 5}
"""Generated cases per operation and role: the admin key reaches every operation's body; the
others mostly check that their role's doors open and close as documented."""


def test_every_operation_keeps_to_its_document_for_every_role(
    world: World, server: Running, tmp_path: Path
) -> None:
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    for role, examples in EXAMPLES.items():
        for operation in operations:
            modes = [GenerationMode.POSITIVE]
            if role == "admin":
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                # Negative cases (bodies and parameters that break the schema) must be refused
                # with a 4xx, never a 5xx; positive ones must match the document exactly.
                wanted = checks if mode == GenerationMode.POSITIVE else [not_a_server_error]
                try:
                    _drive(server.url, key(world, role), operation, mode, examples, wanted)
                except Unsatisfiable:
                    assert mode == GenerationMode.NEGATIVE  # no parameter to make wrong
                except Exception as exc:
                    failures.append(f"{role} {operation.label} {mode.value}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)


def _drive(
    url: str, headers: dict[str, str], operation: Any, mode: Any, examples: int, checks: list[Any]
) -> None:
    """Send `examples` generated cases of one operation (seeded: the same cases every run) and
    check each answer."""

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30)
        case.validate_response(response, checks=checks)

    run()
