"""The decision log's group transaction on a real database: SQLite, and PostgreSQL when one
answers (tests marked `postgres`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from serving_world import a_decision_row

from features.store import EVENT_TABLES, EventStore
from serving import db
from serving.recorder import record_group

StoreUrl = tuple[str, str | None]
Logged = tuple[EventStore, db.DecisionLog]

DECIDED_AT = datetime(2026, 3, 4, 5, 6, 7, 891011)


def _pair(refund_id: str, action: str, response: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A decision-log row and the refund request it appends."""
    review = action == "manual_review"
    row = a_decision_row(
        refund_id,
        decided_at=DECIDED_AT,
        action=action,
        degraded=review,
        abuse_score=None if review else 0.25,
        amount_requested=12.5,
        response=response,
        request=json.dumps({"refund_id": refund_id, "note": 'quotes " and {braces}'}),
        features='[1.5, null, "x"]',
    )
    refund = {
        "refund_id": refund_id,
        "order_id": "o1",
        "customer_id": "c1",
        "requested_at": DECIDED_AT,
        "refund_type": "refund_only",
        "reason": "logistics",
        "reason_detail": "not_received",
        "amount_requested": 12.5,
        "photo_count": 0,
        "order_stage": "delivered",
    }
    return row, refund


@pytest.fixture
def logged(store_url: StoreUrl) -> Iterator[Logged]:
    """An empty event store with the service's tables, and its decision log."""
    url, schema = store_url
    store = EventStore.open(url, schema=schema)
    db.migrate(store.engine)
    yield store, db.DecisionLog(store.engine)
    store.dispose()


def _record(store: EventStore, log: db.DecisionLog, pairs: list[Any]) -> Any:
    with store.engine.begin() as connection:
        return record_group(log, store, connection, [p[0] for p in pairs], [p[1] for p in pairs])


def test_a_group_records_the_new_decisions_and_reads_back_the_recorded_ones(
    logged: Logged,
) -> None:
    store, log = logged
    first = _pair("r1", "manual_review", '{"first": 1}')
    assert _record(store, log, [first]).inserted == {first[0]["decision_id"]}
    # The same group sent again records nothing new and opens no second case.
    repeated = _record(store, log, [first])
    assert repeated.inserted == frozenset() and repeated.stored == {"r1": '{"first": 1}'}

    again = _pair("r1", "auto_approve", '{"again": 1}')  # lost: r1 is recorded
    new_review = _pair("r2", "manual_review", '{"r2": 1}')
    new_plain = _pair("r3", "auto_approve", '{"r3": 1}')
    twin = _pair("r2", "auto_approve", '{"twin": 1}')  # the same id twice in one group
    outcome = _record(store, log, [again, new_review, new_plain, twin])

    assert outcome.inserted == {new_review[0]["decision_id"], new_plain[0]["decision_id"]}
    # The losers' answers: r1's earlier decision, and for the twin, the one recorded.
    assert outcome.stored == {"r1": '{"first": 1}', "r2": '{"r2": 1}'}
    with store.engine.connect() as connection:
        decisions = {
            r.refund_id: r._mapping
            for r in connection.execute(sa.select(db.DECISIONS).order_by(db.DECISIONS.c.refund_id))
        }
        cases = connection.execute(
            sa.select(db.REVIEW_CASES.c.case_id, db.REVIEW_CASES.c.refund_id)
        ).all()
        refunds = connection.execute(
            sa.select(EVENT_TABLES["refund_requests"].c.refund_id)
        ).scalars()
        appended = sorted(refunds)
        # What the service's reads filter and sort on compares as a time, not as text.
        recent = connection.execute(
            sa.select(sa.func.count())
            .select_from(db.DECISIONS)
            .where(db.DECISIONS.c.decided_at >= datetime(2026, 3, 4, 5, 6, 7, 891011))
        ).scalar_one()
    # The first row sent for an id is the one recorded, whole and with its types.
    assert sorted(decisions) == ["r1", "r2", "r3"]
    r2 = decisions["r2"]
    assert r2["decision_id"] == new_review[0]["decision_id"]
    assert r2["response"] == '{"r2": 1}' and r2["request"] == new_review[0]["request"]
    assert r2["decided_at"] == DECIDED_AT  # microseconds kept
    assert r2["degraded"] is True and r2["abuse_score"] is None
    assert decisions["r3"]["degraded"] is False and decisions["r3"]["abuse_score"] == 0.25
    assert recent == 3
    # One review case per recorded manual_review decision, none for the losers.
    assert sorted(cases) == sorted(
        [(first[0]["decision_id"], "r1"), (new_review[0]["decision_id"], "r2")]
    )
    assert appended == ["r1", "r2", "r3"]


def test_of_twins_in_one_group_only_the_recorded_one_opens_a_review_case(
    logged: Logged,
) -> None:
    store, log = logged
    plain = _pair("r4", "auto_approve", '{"plain": 1}')
    review = _pair("r4", "manual_review", '{"review": 1}')
    outcome = _record(store, log, [plain, review])
    (recorded,) = outcome.inserted
    with store.engine.connect() as connection:
        stored = connection.execute(
            sa.select(db.DECISIONS.c.decision_id, db.DECISIONS.c.action)
        ).one()
        cases = connection.execute(sa.select(db.REVIEW_CASES.c.case_id)).scalars().all()
    assert stored.decision_id == recorded
    # A case exists only if the decision recorded is the review one, and it is that one's.
    assert cases == ([recorded] if stored.action == "manual_review" else [])
    winner = plain if recorded == plain[0]["decision_id"] else review
    assert outcome.stored == {"r4": winner[0]["response"]}  # the loser's answer is the winner's


def test_a_loser_with_a_different_request_gets_the_fields_that_differ_not_the_answer(
    logged: Logged,
) -> None:
    store, log = logged
    first = _pair("r1", "auto_approve", '{"first": 1}')
    _record(store, log, [first])
    other = a_decision_row(
        "r1",
        response='{"other": 1}',
        request=json.dumps({"refund_id": "r1", "note": "another request"}),
    )
    outcome = _record(store, log, [(other, first[1])])
    assert outcome.inserted == frozenset() and outcome.stored == {}
    assert outcome.conflicts == {"r1": ["note"]}
    with store.engine.connect() as connection:
        (fingerprint,) = connection.execute(
            sa.select(db.DECISIONS.c.request_hash).where(db.DECISIONS.c.refund_id == "r1")
        ).one()
    assert fingerprint == hashlib.sha256(first[0]["request"].encode()).hexdigest()


def test_open_exposure_is_every_payment_made_before_the_goods_are_back(logged: Logged) -> None:
    # Rebuilt at start-up: refunds before return and approvals of shipped orders stay open
    # until an outcome arrives; an approval before shipping, or a standard return, never opens.
    store, log = logged
    pairs = []
    for refund_id, action, stage in [
        ("rbr", "refund_before_return", "delivered"),
        ("approved", "auto_approve", "delivered"),
        ("in-transit", "auto_approve", "in_transit"),
        ("unshipped", "auto_approve", "not_shipped"),
        ("returned", "standard_return", "delivered"),
        ("settled", "auto_approve", "delivered"),
    ]:
        row, refund = _pair(refund_id, action, "{}")
        pairs.append((row, {**refund, "order_stage": stage}))
    _record(store, log, pairs)
    store.write_frames(
        {
            "outcomes": pd.DataFrame(
                [
                    {
                        "outcome_id": "x1",
                        "refund_id": "settled",
                        "is_abusive": False,
                        "known_at": DECIDED_AT,
                        "source": "delivery_proof",
                    }
                ]
            )
        }
    )
    assert sorted(log.open_exposures()) == [
        ("c1", "approved", 12.5),
        ("c1", "in-transit", 12.5),
        ("c1", "rbr", 12.5),
    ]
