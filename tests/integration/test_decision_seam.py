"""The decision route is one FastAPI route: `DecisionRoute` reads a request that is simply
right in one step, and answers every request exactly as FastAPI's own handler for the route
does; the middleware stack, added middleware included, sees every decision request."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from serving_world import World, decision_body, held
from starlette.types import Message, Receive, Scope, Send

from refund_risk.settings import Settings
from serving.app import DECISION_PATH, AsScorer, DecisionRoute, create_app

pytestmark = [pytest.mark.slow]

VOLATILE = ("decision_id", "decided_at", "timing")
"""What differs between any two decisions made anew: their id, their time, their timings."""


def _copy(world: World, folder: Path) -> Settings:
    """The world's settings over a copy of its database, so two apps start from one state."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "service.db"
    with sqlite3.connect(world.db_path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return world.settings.model_copy(update={"database_url": f"sqlite:///{copy}"})


@pytest.fixture(scope="module")
def pair(
    serving_world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, TestClient, Path]]:
    """The app as served, and one whose decision requests all take FastAPI's own handler,
    each over its own copy of the world's database; and the first's database file."""
    folder = tmp_path_factory.mktemp("seam")
    direct, framework = _copy(serving_world, folder / "direct"), _copy(serving_world, folder / "fw")
    with (
        TestClient(create_app(direct, freeze_gc=False)) as a,
        TestClient(create_app(framework, freeze_gc=False, direct_decisions=False)) as b,
    ):
        yield a, b, folder / "direct" / "service.db"


def _answer(response: Any) -> tuple[int, dict[str, str], Any]:
    """Status, headers and body, the decision's volatile values left out."""
    body, headers = response.json(), dict(response.headers)
    assert int(headers["content-length"]) == len(response.content)
    if isinstance(body, dict) and "decision_id" in body:
        body = {k: v for k, v in body.items() if k not in VOLATILE}
        del headers["content-length"]  # the timings' digits vary
    return response.status_code, headers, body


def _requests(world: World) -> list[tuple[str, dict[str, str], bytes]]:
    """(what it is, headers, body): good and bad decision requests, in the order sent."""
    scorer, admin = world.keys["scorer"], world.keys["admin"]
    good = decision_body(world, held(world, 0))
    other = decision_body(world, held(world, 1))
    spaced = json.dumps(other, indent=2).encode()
    json_ = "application/json"

    def dump(body: dict[str, Any]) -> bytes:
        return json.dumps(body).encode()

    def changed(**changes: Any) -> bytes:
        return dump({**good, **changes})

    order = dict(good["order"])
    return [
        ("a new decision", {"X-API-Key": scorer, "Content-Type": json_}, dump(good)),
        ("the same again: replayed", {"X-API-Key": scorer, "Content-Type": json_}, dump(good)),
        ("replayed for an admin", {"X-API-Key": admin, "Content-Type": json_}, dump(good)),
        ("spaced JSON, new", {"X-API-Key": scorer, "Content-Type": json_}, spaced),
        (
            "a charset in the content type",
            {"X-API-Key": scorer, "Content-Type": "application/json; charset=utf-8"},
            spaced,
        ),
        (
            "same id, other amount",
            {"X-API-Key": scorer, "Content-Type": json_},
            changed(amount_requested=good["amount_requested"] / 2),
        ),
        ("no key", {"Content-Type": json_}, dump(good)),
        ("an unknown key", {"X-API-Key": "rk_nope", "Content-Type": json_}, dump(good)),
        (
            "a reviewer's key",
            {"X-API-Key": world.keys["reviewer"], "Content-Type": json_},
            dump(good),
        ),
        ("not JSON", {"X-API-Key": scorer, "Content-Type": json_}, b'{"refund_id": '),
        ("not UTF-8", {"X-API-Key": scorer, "Content-Type": json_}, b'{"refund_id": "\xff"}'),
        ("an empty body", {"X-API-Key": scorer, "Content-Type": json_}, b""),
        ("text/plain", {"X-API-Key": scorer, "Content-Type": "text/plain"}, dump(good)),
        (
            "a field missing",
            {"X-API-Key": scorer, "Content-Type": json_},
            dump({k: v for k, v in good.items() if k != "reason"}),
        ),
        (
            "an unknown field",
            {"X-API-Key": scorer, "Content-Type": json_},
            changed(refund_id="r-seam-1", colour="red"),
        ),
        (
            "a negative amount",
            {"X-API-Key": scorer, "Content-Type": json_},
            changed(refund_id="r-seam-2", amount_requested=-1),
        ),
        (
            "more than the order",
            {"X-API-Key": scorer, "Content-Type": json_},
            changed(refund_id="r-seam-3", amount_requested=order["amount"] * 10),
        ),
        (
            "another customer's order",
            {"X-API-Key": scorer, "Content-Type": json_},
            changed(refund_id="r-seam-4", customer_id=other["customer_id"]),
        ),
        ("a JSON array", {"X-API-Key": scorer, "Content-Type": json_}, b"[]"),
        (
            "over the body limit",
            {"X-API-Key": scorer, "Content-Type": json_},
            b"{" + b" " * (2 << 20) + b"}",
        ),
    ]


def test_the_decision_route_answers_like_the_framework_handler(
    serving_world: World, pair: tuple[TestClient, TestClient, Path]
) -> None:
    """Same status, headers and body from `DecisionRoute` as from FastAPI's own handler, for
    each request of a table of good and bad ones, sent in turn to two apps over copies of
    one database (a decision made anew differs only in its id, time and timings)."""
    direct, framework, _ = pair
    statuses = set()
    for what, headers, body in _requests(serving_world):
        a = direct.post(DECISION_PATH, content=body, headers=headers)
        b = framework.post(DECISION_PATH, content=body, headers=headers)
        assert _answer(a) == _answer(b), what
        statuses.add(a.status_code)
    # The table covers a decision, a replay and each kind of refusal.
    assert {200, 400, 401, 403, 409, 413, 422} <= statuses


def test_a_simply_right_request_skips_fastapis_request_handling(
    serving_world: World, pair: tuple[TestClient, TestClient, Path]
) -> None:
    """The one-step read is taken: a scorer's valid JSON request is decided without FastAPI
    resolving the route's dependencies, which it does for the same request with a charset in
    its content type (left to FastAPI's handler)."""
    direct, _, _ = pair
    app: Any = direct.app
    resolved: list[str] = []

    async def noted(request: Request) -> Any:
        resolved.append(request.headers["content-type"])
        return request.app.state.service

    app.dependency_overrides[get_args(AsScorer)[1].dependency] = noted
    try:
        for i, content_type in ((5, "application/json"), (6, "application/json; charset=utf-8")):
            body = json.dumps(decision_body(serving_world, held(serving_world, i))).encode()
            headers = {"X-API-Key": serving_world.keys["scorer"], "Content-Type": content_type}
            r = direct.post(DECISION_PATH, content=body, headers=headers)
            assert r.status_code == 200, r.text
    finally:
        app.dependency_overrides.clear()
    assert resolved == ["application/json; charset=utf-8"]


class Seen:
    """A plain ASGI middleware noting each HTTP request's path, route and answer status."""

    def __init__(self, app: Any, notes: list[tuple[str, Any, int]]) -> None:
        self.app = app
        self.notes = notes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.notes.append((scope["path"], scope.get("route"), message["status"]))
            await send(message)

        await self.app(scope, receive, noting)


def test_an_added_middleware_sees_the_decision_route(serving_world: World, tmp_path: Path) -> None:
    """Middleware added to the app sees a valid decision request, routed to `DecisionRoute`,
    as it sees a refused one."""
    notes: list[tuple[str, Any, int]] = []
    app: FastAPI = create_app(_copy(serving_world, tmp_path), freeze_gc=False)
    app.add_middleware(Seen, notes=notes)
    body = decision_body(serving_world, held(serving_world, 3))
    headers = {"X-API-Key": serving_world.keys["scorer"], "Content-Type": "application/json"}
    with TestClient(app) as client:
        valid = client.post(DECISION_PATH, json=body, headers=headers)
        refused = client.post(DECISION_PATH, json=body, headers={})
    assert [(path, status) for path, _, status in notes] == [
        (DECISION_PATH, 200),
        (DECISION_PATH, 401),
    ]
    assert all(isinstance(route, DecisionRoute) for _, route, _ in notes)
    assert (valid.status_code, refused.status_code) == (200, 401), valid.text


def test_a_slow_dashboard_query_does_not_delay_a_decision(
    serving_world: World, tmp_path: Path
) -> None:
    """The dashboard's queries run off the event loop: a decision is answered while one of
    them is still waiting in the database."""
    app = create_app(_copy(serving_world, tmp_path), freeze_gc=False)
    waiting, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "GROUP BY" in statement and "serving_decisions" in statement and not waiting.is_set():
            waiting.set()
            release.wait(20)
            finished.set()

    body = decision_body(serving_world, held(serving_world, 4))
    headers = {"X-API-Key": serving_world.keys["scorer"]}
    pages: list[Any] = []
    with TestClient(app) as client:
        sa.event.listen(app.state.service.engine, "before_cursor_execute", slow)
        looking = threading.Thread(
            target=lambda: pages.append(
                client.get("/ops/dashboard", headers={"X-API-Key": serving_world.keys["reviewer"]})
            )
        )
        looking.start()
        try:
            assert waiting.wait(60), "the dashboard never queried the decisions"
            decided = client.post(DECISION_PATH, json=body, headers=headers)
            answered_meanwhile = not finished.is_set()
        finally:
            release.set()
            looking.join(60)
    assert decided.status_code == 200, decided.text
    assert answered_meanwhile
    assert [page.status_code for page in pages] == [200]
