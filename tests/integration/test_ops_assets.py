"""What a browser fetches besides the pages: the icon, without signing in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from serving_world import World

from serving.app import create_app

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def client(serving_world: World) -> Iterator[TestClient]:
    with TestClient(create_app(serving_world.settings, freeze_gc=False)) as c:
        yield c


def test_the_icon_is_served_at_the_conventional_path_and_linked_from_every_page(
    client: TestClient,
) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")
    login = client.get("/ops/login")
    assert 'rel="icon" href="/ops/static/favicon.svg"' in login.text
    assert client.get("/ops/static/favicon.svg").status_code == 200


def test_the_dashboard_is_built_off_the_event_loop_that_serves_decisions(
    serving_world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from serving import dashboard

    real_build = dashboard.build
    threads: list[str] = []

    def recording_build(*args: object, **kwargs: object) -> dashboard.Dashboard:
        threads.append(threading.current_thread().name)
        return real_build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dashboard, "build", recording_build)
    loop_thread: list[str] = []

    @client.app.get("/__loop-thread")  # type: ignore[attr-defined]
    async def loop_name() -> str:
        loop_thread.append(threading.current_thread().name)
        return "ok"

    client.get("/__loop-thread")
    page = client.get("/ops/dashboard", headers={"X-API-Key": serving_world.keys["reviewer"]})
    assert page.status_code == 200
    assert threads and loop_thread and threads[0] != loop_thread[0]
