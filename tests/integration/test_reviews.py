"""The review queue and overrides API end to end, on the served world (a real model, SQLite).

Every case here is opened by a real `manual_review` decision: a held refund request sent again
under a refund id of the test's own, asking back an amount at the policy's review limit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from serving_world import (
    REVIEW_AMOUNT,
    World,
    a_decision_row,
    decision_body,
    key,
    review_body,
    shipped,
)

from features.store import EVENT_TABLES, create_store_engine
from refund_risk.errors import DataValidationError
from serving.app import create_app
from serving.auth import Role, create_key
from serving.db import REVIEW_CASES, REVIEW_RESOLUTIONS
from serving.errors import ConflictError
from serving.reviews import Resolution
from serving.service import Service

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def world(serving_world: World) -> World:
    return serving_world


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings, freeze_gc=False)) as c:
        yield c


@pytest.fixture(scope="module")
def second_reviewer(world: World) -> dict[str, str]:
    """The header of a second reviewer's key."""
    assert world.settings.database_url is not None
    engine = create_store_engine(world.settings.database_url)
    _, token = create_key(engine, Role.REVIEWER, "second reviewer")
    engine.dispose()
    return {"X-API-Key": token}


def service_of(client: TestClient) -> Service:
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    return service


_made = iter(range(10_000))


def open_case(world: World, client: TestClient, i: int, **changes: Any) -> dict[str, Any]:
    """Send a held request (the i-th shipped one) that the policy sends to review; its case."""
    refund = shipped(world)[i % len(shipped(world))]
    refund_id = f"rev-{refund['refund_id']}-{next(_made)}"
    body = review_body(world, refund, refund_id, **changes)
    r = client.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
    assert r.status_code == 200, r.text
    decision = r.json()
    assert decision["action"] == "manual_review", decision
    case = client.get(f"/v1/reviews/{decision['decision_id']}", headers=key(world, "reviewer"))
    assert case.status_code == 200, case.text
    return dict(case.json())


# --- the queue ------------------------------------------------------------------------------


def test_every_manual_review_decision_opens_a_case_with_what_a_reviewer_needs(
    world: World, client: TestClient
) -> None:
    detail = open_case(world, client, 0)
    case, decision = detail["case"], detail["decision"]
    assert case["case_id"] == decision["decision_id"]
    assert case["status"] == "open" and not case["claimed"] and case["version"] == 0
    assert case["amount_requested"] == 1500.0 and case["category"] and case["reason_detail"]
    assert decision["reasons"] and detail["request"]["refund_id"] == case["refund_id"]
    assert detail["tier"]["name"] == decision["tier"] and "privileges" in detail["tier"]
    kinds = {e["kind"] for e in detail["history"]}
    assert "order" in kinds  # the customer's past orders, from the event store
    assert isinstance(detail["linked_accounts"], list) and isinstance(detail["similar"], list)


def test_cases_are_filtered_sorted_and_paged(world: World, client: TestClient) -> None:
    made = [
        open_case(world, client, 1 + i, amount_requested=1000.0 + 100 * i)["case"] for i in range(5)
    ]
    ids = {c["case_id"] for c in made}
    reviewer = key(world, "reviewer")

    def listing(**params: Any) -> list[dict[str, Any]]:
        r = client.get("/v1/reviews", params={"limit": 200, **params}, headers=reviewer)
        assert r.status_code == 200, r.text
        return [c for c in r.json()["items"] if c["case_id"] in ids]

    by_amount = listing(sort="amount")
    assert [c["amount_requested"] for c in by_amount] == [1400.0, 1300.0, 1200.0, 1100.0, 1000.0]
    ascending = listing(sort="amount", order="asc")
    assert [c["case_id"] for c in ascending] == [c["case_id"] for c in reversed(by_amount)]
    oldest_first = listing(sort="age")
    assert [c["case_id"] for c in oldest_first] == [c["case_id"] for c in made]
    assert {c["amount_requested"] for c in listing(min_amount=1250)} == {1300.0, 1400.0}
    category = made[0]["category"]
    assert {c["category"] for c in listing(category=category)} == {category}
    assert all(c["case_id"] in ids for c in listing(category=category) if c["category"] == category)
    detail = made[0]["reason_detail"]
    assert {c["reason_detail"] for c in listing(reason=detail)} == {detail}
    assert listing(min_age_hours=1) == []  # all opened just now
    assert listing(status="resolved") == []
    by_risk = listing(sort="risk")
    scores = [c["abuse_score"] for c in by_risk]
    assert scores == sorted(scores, reverse=True)
    # Pages never repeat or skip a case.
    seen: list[str] = []
    total = client.get("/v1/reviews", params={"limit": 1}, headers=reviewer).json()["total"]
    for offset in range(0, total, 3):
        page = client.get(
            "/v1/reviews", params={"limit": 3, "offset": offset}, headers=reviewer
        ).json()
        assert page["total"] == total and page["limit"] == 3
        seen += [c["case_id"] for c in page["items"]]
    assert len(seen) == len(set(seen)) == total and ids <= set(seen)


def test_a_claim_keeps_others_off_until_released_or_lapsed(
    world: World, client: TestClient, second_reviewer: dict[str, str]
) -> None:
    case_id = open_case(world, client, 6)["case"]["case_id"]
    first = key(world, "reviewer")
    claimed = client.post(f"/v1/reviews/{case_id}/claim", headers=first)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["claimed"] is True and claimed.json()["claimed_until"]
    assert client.post(f"/v1/reviews/{case_id}/claim", headers=first).status_code == 200  # renew
    taken = client.post(f"/v1/reviews/{case_id}/claim", headers=second_reviewer)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "conflict"
    assert "claimed by" in taken.json()["error"]["message"]
    blocked = client.post(
        f"/v1/reviews/{case_id}/resolve", json={"decision": "approve"}, headers=second_reviewer
    )
    assert blocked.status_code == 409
    assert client.post(f"/v1/reviews/{case_id}/release", headers=second_reviewer).status_code == 409
    claimed_now = client.get(
        "/v1/reviews", params={"status": "claimed", "limit": 200}, headers=first
    ).json()["items"]
    assert case_id in {c["case_id"] for c in claimed_now}
    released = client.post(f"/v1/reviews/{case_id}/release", headers=first)
    assert released.status_code == 200 and released.json()["claimed"] is False
    assert client.post(f"/v1/reviews/{case_id}/claim", headers=second_reviewer).status_code == 200
    # The claim lapses after the claim period: then the first reviewer may take the case.
    queue = service_of(client).reviews
    real = queue.clock
    minutes = world.settings.review_claim_minutes
    queue.clock = lambda: real() + timedelta(minutes=minutes + 1)
    try:
        retaken = client.post(f"/v1/reviews/{case_id}/claim", headers=first)
        assert retaken.status_code == 200, retaken.text
    finally:
        queue.clock = real


def test_two_reviewers_resolving_the_same_case_exactly_one_wins(
    world: World, client: TestClient, second_reviewer: dict[str, str]
) -> None:
    case_id = open_case(world, client, 7)["case"]["case_id"]
    barrier = threading.Barrier(2)
    answers: list[Any] = [None, None]
    bodies = [
        ({"decision": "reject_abuse", "note": "photo shows delivery"}, key(world, "reviewer")),
        ({"decision": "approve", "note": "looks fine"}, second_reviewer),
    ]

    def resolve(i: int) -> None:
        barrier.wait()
        body, headers = bodies[i]
        answers[i] = client.post(f"/v1/reviews/{case_id}/resolve", json=body, headers=headers)

    threads = [threading.Thread(target=resolve, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 200).json()
    loser = next(a for a in answers if a.status_code == 409).json()
    assert "already resolved" in loser["error"]["message"]
    with service_of(client).engine.connect() as connection:
        stored = connection.execute(
            sa.select(REVIEW_RESOLUTIONS).where(REVIEW_RESOLUTIONS.c.case_id == case_id)
        ).all()
        outcomes = connection.execute(
            sa.select(EVENT_TABLES["outcomes"]).where(
                EVENT_TABLES["outcomes"].c.outcome_id == winner["outcome_id"]
            )
        ).all()
    assert len(stored) == 1 and stored[0].decision == winner["decision"]
    assert len(outcomes) == 1
    again = client.post(
        f"/v1/reviews/{case_id}/resolve", json={"decision": "approve"}, headers=second_reviewer
    )
    assert again.status_code == 409  # the winner's decision is never overwritten


def test_concurrent_resolutions_race_in_the_database_too(world: World, client: TestClient) -> None:
    """The compare-and-set holds with real concurrent transactions (threads, no event loop)."""
    case_id = open_case(world, client, 8)["case"]["case_id"]
    queue = service_of(client).reviews
    barrier = threading.Barrier(4)
    results: list[Any] = [None] * 4

    def resolve(i: int) -> None:
        barrier.wait()
        try:
            results[i] = queue.resolve(case_id, f"reviewer-{i}", Resolution.REQUIRE_RETURN, "")
        except ConflictError as exc:
            results[i] = exc

    threads = [threading.Thread(target=resolve, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [r for r in results if not isinstance(r, ConflictError)]
    assert len(winners) == 1, results
    with queue.engine.connect() as connection:
        case = connection.execute(
            sa.select(REVIEW_CASES).where(REVIEW_CASES.c.case_id == case_id)
        ).one()
    assert case.status == "resolved" and case.claimed_by == winners[0].reviewer


def test_a_resolution_is_an_outcome_with_source_reviewer_for_features_and_training(
    world: World, client: TestClient, tmp_path: Path
) -> None:
    from features.labels import final_labels

    detail = open_case(world, client, 9)
    case = detail["case"]
    r = client.post(
        f"/v1/reviews/{case['case_id']}/resolve",
        json={"decision": "reject_abuse", "note": "empty box"},
        headers=key(world, "reviewer"),
    )
    assert r.status_code == 200, r.text
    resolution = r.json()
    assert resolution["decision"] == "reject_abuse" and resolution["note"] == "empty box"
    service = service_of(client)
    with service.engine.connect() as connection:
        rows = connection.execute(
            sa.select(EVENT_TABLES["outcomes"]).where(
                EVENT_TABLES["outcomes"].c.refund_id == case["refund_id"]
            )
        ).all()
    assert len(rows) == 1
    outcome = rows[0]
    assert outcome.source == "reviewer" and outcome.is_abusive is True
    assert outcome.outcome_id == resolution["outcome_id"]
    assert abs((datetime.now(UTC).replace(tzinfo=None) - outcome.known_at).total_seconds()) < 60
    # The online builder holds it too: the next decision's features see it.
    history = service.store.histories([case["customer_id"]])
    assert resolution["outcome_id"] in {o["outcome_id"] for o in history["outcomes"]}
    # The training table's label carries the source, so it can be weighed or left out.
    outcomes = pd.DataFrame([dict(o._mapping) for o in rows])
    labels = final_labels(pd.DataFrame({"refund_id": [case["refund_id"]]}), outcomes)
    assert labels["label_source"].tolist() == ["reviewer"]
    assert labels["label_is_abusive_final"].tolist() == [True]
    # `refund-risk events export` hands it to `features build`, label source and all.
    from data.storage import read_world
    from features.batch import build_refund_features
    from serving.cli import export_events

    assert world.settings.database_url is not None
    exported = tmp_path / "raw"
    written = export_events(world.settings, exported)
    assert written["outcomes"] >= 1 and written["refund_requests"] >= 1
    table = build_refund_features(read_world(exported))
    row = table.loc[table["refund_id"] == case["refund_id"]].iloc[0]
    assert row["label_source"] == "reviewer" and bool(row["label_is_abusive_final"]) is True
    after = client.get(f"/v1/reviews/{case['case_id']}", headers=key(world, "reviewer")).json()
    assert after["case"]["status"] == "resolved" and after["resolution"]["decision"] == (
        "reject_abuse"
    )
    assert any("found abusive (reviewer)" in e["text"] for e in after["history"])


def test_a_partial_refund_needs_an_amount_within_the_request(
    world: World, client: TestClient
) -> None:
    case_id = open_case(world, client, 10)["case"]["case_id"]
    reviewer = key(world, "reviewer")
    path = f"/v1/reviews/{case_id}/resolve"
    missing = client.post(path, json={"decision": "approve_partial"}, headers=reviewer)
    assert missing.status_code == 422
    too_much = client.post(
        path, json={"decision": "approve_partial", "amount": 5000}, headers=reviewer
    )
    assert too_much.status_code == 422
    stale = client.post(path, json={"decision": "approve", "expected_version": 7}, headers=reviewer)
    assert stale.status_code == 409
    ok = client.post(
        path,
        json={"decision": "approve_partial", "amount": 300, "expected_version": 0},
        headers=reviewer,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["amount"] == 300.0
    assert client.get("/v1/reviews/nope", headers=reviewer).status_code == 404


def test_the_queue_domain_refuses_bad_amounts() -> None:
    from serving.reviews import _checked_amount

    with pytest.raises(DataValidationError):
        _checked_amount(Resolution.APPROVE_PARTIAL, None, 10.0)
    assert _checked_amount(Resolution.APPROVE, None, 10.0) == 10.0
    assert _checked_amount(Resolution.REJECT_ABUSE, 3.0, 10.0) is None


# --- overrides ------------------------------------------------------------------------------


def test_a_tier_pin_and_the_watch_list_are_honoured_by_the_next_decision(
    world: World, client: TestClient
) -> None:
    reviewer = key(world, "reviewer")
    scorer = key(world, "scorer")
    refunds = shipped(world)
    pinned, watched = refunds[11], refunds[12]
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    pin = client.post(
        "/v1/overrides/tier-pins",
        json={
            "customer_id": pinned["customer_id"],
            "tier": "gold",
            "expires_at": expires,
            "reason": "key account, checked by phone",
        },
        headers=reviewer,
    )
    assert pin.status_code == 200, pin.text
    unknown = client.post(
        "/v1/overrides/tier-pins",
        json={**pin.json(), "tier": "platinum"} | {"customer_id": "c1"},
        headers=reviewer,
    )
    assert unknown.status_code == 422
    body = decision_body(world, pinned, refund_id=f"pin-{pinned['refund_id']}")
    d = client.post("/v1/refund-decisions", json=body, headers=scorer).json()
    assert d["tier"] == "gold" and d["tier_source"] == "pinned"
    assert any("pinned to gold" in r and "key account" in r for r in d["reasons"])

    watch = client.post(
        "/v1/overrides/watchlist",
        json={"customer_id": watched["customer_id"], "reason": "shares a device with a ring"},
        headers=reviewer,
    )
    assert watch.status_code == 200, watch.text
    body = decision_body(world, watched, refund_id=f"watch-{watched['refund_id']}")
    d = client.post("/v1/refund-decisions", json=body, headers=scorer).json()
    assert d["action"] == "manual_review" and d["rule_id"] == "watchlisted"
    assert any("shares a device with a ring" in r for r in d["reasons"])
    assert d["tier_source"] in {"model", "default"}

    listed = client.get("/v1/overrides", headers=reviewer).json()
    assert pinned["customer_id"] in {p["customer_id"] for p in listed["pins"]}
    assert watched["customer_id"] in {w["customer_id"] for w in listed["watchlist"]}
    # Stored: a service started afresh knows them.
    from serving.overrides import Overrides

    fresh = Overrides(service_of(client).engine)
    fresh.load()
    active = fresh.active(watched["customer_id"])
    assert active is not None and active.watchlisted
    assert fresh.active(pinned["customer_id"]) is not None

    assert (
        client.delete(f"/v1/overrides/watchlist/{watched['customer_id']}", headers=reviewer)
    ).status_code == 204
    assert (
        client.delete(f"/v1/overrides/tier-pins/{pinned['customer_id']}", headers=reviewer)
    ).status_code == 204
    assert (
        client.delete(f"/v1/overrides/tier-pins/{pinned['customer_id']}", headers=reviewer)
    ).status_code == 404
    body = decision_body(world, watched, refund_id=f"unwatched-{watched['refund_id']}")
    d = client.post("/v1/refund-decisions", json=body, headers=scorer).json()
    assert d["rule_id"] != "watchlisted"
    body = decision_body(world, pinned, refund_id=f"unpinned-{pinned['refund_id']}")
    d = client.post("/v1/refund-decisions", json=body, headers=scorer).json()
    assert d["tier_source"] != "pinned"


def test_an_expired_pin_no_longer_applies(world: World, client: TestClient) -> None:
    overrides = service_of(client).overrides
    refund = shipped(world)[13]
    customer = refund["customer_id"]
    overrides.pin_tier(
        customer,
        "gold",
        datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=60),
        "short trial",
        "test",
        ("gold", "standard"),
    )
    assert overrides.active(customer) is not None
    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=5)
    assert overrides.active(customer, at=later) is None
    overrides.unpin(customer)


# --- roles ----------------------------------------------------------------------------------


def test_roles_are_checked_on_the_queue_overrides_and_pages(
    world: World, client: TestClient
) -> None:
    scorer, reviewer = key(world, "scorer"), key(world, "reviewer")
    for method, path in (
        ("get", "/v1/reviews"),
        ("get", "/v1/reviews/x"),
        ("post", "/v1/reviews/x/claim"),
        ("post", "/v1/reviews/x/resolve"),
        ("get", "/v1/overrides"),
        ("delete", "/v1/overrides/watchlist/c1"),
    ):
        r = client.request(method, path, headers=scorer, json={"decision": "approve"})
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
        assert client.request(method, path).status_code == 401
    page = client.get("/ops/queue", headers=scorer, follow_redirects=False)
    assert page.status_code == 403 and "reviewer key" in page.text
    assert client.get("/v1/reviews", headers=key(world, "admin")).status_code == 200
    assert client.post("/v1/admin/reload", headers=reviewer).status_code == 403
    forced = client.post("/v1/reviews/x/release", params={"force": True}, headers=reviewer)
    assert forced.status_code == 403


def test_the_case_page_says_the_amount_asked_back_once(world: World, client: TestClient) -> None:
    # The rule's reason quotes the amount; the model's reasons may name it again as a feature.
    asked = f"Asks back {REVIEW_AMOUNT:,.2f}"
    pages = []
    for i in range(12):
        # A customer of the test's own, so other tests' customers' histories stay as they were.
        changes = {"customer_id": f"reasons-page-{i}-{next(_made)}"}
        case_id = open_case(world, client, 41 + 3 * i, **changes)["case"]["case_id"]
        page = client.get(f"/ops/cases/{case_id}", headers=key(world, "reviewer"))
        assert page.status_code == 200
        listed = page.text.split('id="reasons">')[1].split("</ol>")[0]
        reasons = [r.split("</li>")[0].strip() for r in listed.split("<li>")[1:]]
        assert sum(r.startswith(asked) for r in reasons) <= 1, reasons
        assert len(reasons) == len(set(reasons))
        pages.append(reasons)
    said = [r for r in pages if r[0].startswith(f"{asked}, at or above the review limit")]
    assert said and all(len(r) >= 2 for r in said)  # the model's reasons still follow the rule's


def sign_in_token(client: TestClient) -> str:
    """The token of a freshly served sign-in form (its cookie is now in the client's jar)."""
    page = client.get("/ops/login")
    return page.text.split('name="csrf" value="')[1].split('"')[0]


def test_pages_need_a_session_or_key_and_forms_need_the_session_token(
    world: World, client: TestClient
) -> None:
    case_id = open_case(world, client, 14)["case"]["case_id"]
    anonymous = TestClient(client.app)
    first = anonymous.get("/ops/queue", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/ops/login")
    unvouched = anonymous.post("/ops/login", data={"api_key": world.keys["reviewer"]})
    assert unvouched.status_code == 403 and "sign in again" in unvouched.text
    refused = anonymous.post(
        "/ops/login", data={"api_key": world.keys["scorer"], "csrf": sign_in_token(anonymous)}
    )
    assert refused.status_code == 401 and "reviewer key" in refused.text
    wrong = anonymous.post(
        "/ops/login", data={"api_key": "rr_nope_nope", "csrf": sign_in_token(anonymous)}
    )
    assert wrong.status_code == 401
    signed = anonymous.post(
        "/ops/login",
        data={
            "api_key": world.keys["reviewer"],
            "next": f"/ops/cases/{case_id}",
            "csrf": sign_in_token(anonymous),
        },
        follow_redirects=False,
    )
    assert signed.status_code == 303 and signed.headers["location"] == f"/ops/cases/{case_id}"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Path=/ops" in cookie
    page = anonymous.get(f"/ops/cases/{case_id}")
    assert page.status_code == 200 and "Why it is here" in page.text
    forged = anonymous.post(
        f"/ops/cases/{case_id}/resolve",
        data={"decision": "approve", "csrf": "guess"},
        headers={"referer": f"http://testserver/ops/cases/{case_id}"},
    )
    # A stale form says so and offers the page again; it is not a role problem.
    assert forged.status_code == 403
    assert "This form has expired" in forged.text and "Nothing was changed" in forged.text
    assert f'id="retry" href="/ops/cases/{case_id}"' in forged.text
    assert "may not open" not in forged.text and "reviewer key" not in forged.text
    elsewhere = anonymous.post(
        "/ops/overrides/unpin",
        data={"customer_id": "c1"},
        headers={"referer": "https://evil.example/ops/x"},
    )
    assert elsewhere.status_code == 403 and 'id="retry" href="/ops/x"' in elsewhere.text
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    done = anonymous.post(
        f"/ops/cases/{case_id}/resolve",
        data={"decision": "require_return", "csrf": token, "note": "send it back"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    assert "Resolved" in done.headers["location"] or "msg=" in done.headers["location"]
    assert "/ops/login" not in anonymous.get("/ops/dashboard").url.path
    # Overrides from their page, with the same token.
    customer = world.held.iloc[-1]["customer_id"]
    pinned = anonymous.post(
        "/ops/overrides/pin",
        data={
            "csrf": token,
            "customer_id": customer,
            "tier": "silver",
            "expires_at": (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M"),
            "reason": "goodwill after a lost parcel",
        },
    )
    assert pinned.status_code == 200 and f"Pinned {customer} to silver" in pinned.text
    assert "goodwill after a lost parcel" in pinned.text
    ended = anonymous.post("/ops/overrides/unpin", data={"csrf": token, "customer_id": customer})
    assert f"Unpinned {customer}" in ended.text
    evil = anonymous.post(
        "/ops/login",
        data={
            "api_key": world.keys["reviewer"],
            "next": "https://evil.example",
            "csrf": sign_in_token(anonymous),
        },
        follow_redirects=False,
    )
    assert evil.headers["location"] == "/ops/queue"


def test_the_dashboard_counts_requests_reviews_and_drift(world: World, client: TestClient) -> None:
    from serving import dashboard

    reviewer = key(world, "reviewer")
    service = service_of(client)
    assert service.snapshot.models.abuse is not None
    reference = service.snapshot.models.abuse.card["drift_reference"]

    def today() -> dashboard.Day:
        return dashboard.build(service.engine, 7, reference).days[-1]

    # Other tests share this service, so the test counts what it adds itself.
    before = today()
    for i, decision in enumerate(("reject_abuse", "approve", "require_return")):
        case = open_case(world, client, 20 + i)["case"]
        r = client.post(
            f"/v1/reviews/{case['case_id']}/resolve",
            json={"decision": decision, "note": "dashboard check"},
            headers=reviewer,
        )
        assert r.status_code == 200, r.text
    after = today()
    assert after.requests == before.requests + 3
    assert after.actions.get("manual_review", 0) == before.actions.get("manual_review", 0) + 3
    assert after.resolved == before.resolved + 3
    assert after.caught == before.caught + 1

    page = client.get("/ops/dashboard", headers=reviewer)
    assert page.status_code == 200, page.text
    text = page.text
    assert "<svg" in text and "decided without a person" in text
    assert "score PSI" in text and "Feature drift" in text
    assert "https://" not in text  # nothing fetched from the internet
    board = dashboard.build(service.engine, 7, reference)
    assert board.drift and board.score_drift is not None
    assert board.drift == sorted(board.drift, key=lambda x: -x.psi)
    assert {x.level for x in board.drift} <= {"stable", "watch", "shifted"}


def test_cases_of_decisions_logged_before_the_queue_existed_are_opened_by_the_migration(
    tmp_path: Any,
) -> None:
    from alembic import command

    from serving import db

    engine = create_store_engine(f"sqlite:///{tmp_path / 'old.db'}")
    from features.store import EventStore

    EventStore(engine).migrate()
    with engine.begin() as connection:
        command.upgrade(db.alembic_config(connection), "0001_decision_log")
        row = a_decision_row(
            "r1",
            decision_id="d1",
            action="manual_review",
            rule_id="high_amount",
            abuse_score=0.2,
            amount_requested=1200.0,
        )
        row.pop("request_hash")  # a column of a later migration
        connection.execute(
            sa.insert(db.DECISIONS),
            [row, {**row, "decision_id": "d2", "refund_id": "r2", "action": "auto_approve"}],
        )
    db.migrate(engine)
    with engine.connect() as connection:
        cases = connection.execute(sa.select(REVIEW_CASES)).all()
    engine.dispose()
    assert [(c.case_id, c.status) for c in cases] == [("d1", "open")]


def test_a_resolution_whose_commit_fails_leaves_the_builders_memory_as_it_was(
    world: World, client: TestClient
) -> None:
    """The builder's memory changes after the commit, never before: a resolution the database
    did not take leaves the customer's features as they were (and the case open); the same
    resolution once committed changes them."""
    case = open_case(world, client, 12)["case"]
    service = service_of(client)
    later = datetime.now(UTC) + timedelta(days=1)

    def features() -> list[float]:
        vector = service.builder.customer_vector(case["customer_id"], later)
        assert vector is not None
        return vector

    before = features()

    def refuse(connection: Any) -> None:
        raise RuntimeError("the disk is full")

    sa.event.listen(service.engine, "commit", refuse)
    try:
        with pytest.raises(RuntimeError, match="disk is full"):
            service.reviews.resolve(case["case_id"], "reviewer", Resolution.REJECT_ABUSE)
    finally:
        sa.event.remove(service.engine, "commit", refuse)
    np.testing.assert_array_equal(features(), before)
    detail = client.get(f"/v1/reviews/{case['case_id']}", headers=key(world, "reviewer"))
    assert detail.json()["case"]["status"] == "open"

    service.reviews.resolve(case["case_id"], "reviewer", Resolution.REJECT_ABUSE)
    assert not np.array_equal(features(), before, equal_nan=True)
