"""The dashboard reads the database off the event loop that answers decisions.

Every statement the service's engine runs while the dashboard page is built is recorded with
whether it ran on a thread with a running event loop (the loop serving requests). Only the API
keys, read to tell who is asking as for any request, may be read there; the dashboard's own
queries (decisions, cases, drift rows, the owner's aggregates, products, alerts) must not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from serving_world import World, key

from serving.app import create_app


@pytest.fixture(scope="module")
def client(serving_world: World) -> Iterator[TestClient]:
    with TestClient(create_app(serving_world.settings, freeze_gc=False)) as c:
        yield c


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("days", [14, 90])
def test_no_query_of_the_dashboard_runs_on_the_event_loop(
    serving_world: World, client: TestClient, days: int
) -> None:
    engine = client.app.state.service.engine  # type: ignore[attr-defined]
    ran: list[tuple[str, bool]] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        ran.append((statement, _on_loop()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        r = client.get(f"/ops/dashboard?days={days}", headers=key(serving_world, "reviewer"))
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert r.status_code == 200, r.text
    off_loop = [s for s, on in ran if not on]
    on_loop = [s.split()[0:8] for s, on in ran if on and "api_keys" not in s]
    assert len(off_loop) >= 5  # the dashboard did read the database
    assert on_loop == []
