"""The next-case hand-out through the API and the queue page, on the served world."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from serving_world import World, key, review_body, shipped

from features.store import create_store_engine
from serving.app import create_app
from serving.auth import Role, create_key

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def client(serving_world: World) -> Iterator[TestClient]:
    with TestClient(create_app(serving_world.settings, freeze_gc=False)) as c:
        yield c


def _new_reviewer(world: World) -> tuple[str, dict[str, str]]:
    assert world.settings.database_url is not None
    engine = create_store_engine(world.settings.database_url)
    made, token = create_key(engine, Role.REVIEWER, "next-case reviewer")
    engine.dispose()
    return made.key_id, {"X-API-Key": token}


def test_a_reviewer_takes_cases_one_by_one_up_to_the_cap(
    serving_world: World, client: TestClient
) -> None:
    world = serving_world
    for i, refund in enumerate(shipped(world)[:4]):
        body = review_body(world, refund, f"next-{i}-{refund['refund_id']}")
        r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
        assert r.status_code == 200 and r.json()["action"] == "manual_review", r.text
    who, headers = _new_reviewer(world)
    cap = world.settings.review_max_open_claims
    taken = []
    for n in range(1, cap + 1):
        r = client.post("/v1/reviews/next", headers=headers)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["case"] is not None and out["case"]["claimed_by"] == who
        assert out["held"] == n and out["max_open_claims"] == cap and out["max_amount"] is None
        taken.append(out["case"]["case_id"])
    assert len(set(taken)) == cap
    refused = client.post("/v1/reviews/next", headers=headers)
    error = refused.json()["error"]
    assert refused.status_code == 409 and "resolve or release one first" in error["message"]
    # The page button says the same in words, on the queue page.
    page = client.post("/ops/queue/next", headers=headers, follow_redirects=False)
    assert page.status_code == 303 and "/ops/queue" in page.headers["location"]
    assert client.post("/v1/reviews/next", headers=key(world, "scorer")).status_code == 403
    board = client.get("/ops/dashboard", headers=headers)
    assert board.status_code == 200
    row = board.text.split('id="reviewer-load"')[1].split("</section>")[0]
    assert f'<td>next-case reviewer</td><td class="num">{cap}</td>' in row
