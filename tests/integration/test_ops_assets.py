"""What a browser fetches besides the pages: the icon, without signing in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from serving_world import World

from serving.app import create_app

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving-model")]


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
