"""The next-case hand-out on a real database: most urgent first, within each reviewer's limits,
never one case to two reviewers, stale claims back in the queue; SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_world import a_decision_row

from features.store import EventStore
from refund_risk.errors import ConfigurationError
from serving.db import API_KEYS, DECISIONS, REVIEW_CASES, migrate
from serving.errors import ConflictError
from serving.reviewers import load_reviewer_limits
from serving.reviews import ReviewQueue

START = datetime(2026, 12, 1, 8)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _queue(url: str, schema: str | None, clock: Clock) -> ReviewQueue:
    store = EventStore.open(url, schema=schema)
    migrate(store.engine)
    return ReviewQueue(store.engine, None, None, claim_minutes=15, clock=clock)  # type: ignore[arg-type]


def _open(queue: ReviewQueue, cases: list[tuple[float, float, float | None]]) -> list[str]:
    """Open one case per (hours before START, amount, abuse score); their ids, in that order."""
    decisions, rows = [], []
    for i, (hours, amount, score) in enumerate(cases):
        case_id = f"case{i:03d}"
        opened = START - timedelta(hours=hours)
        decisions.append(
            a_decision_row(
                f"r{i:03d}",
                decision_id=case_id,
                customer_id=f"c{i}",
                decided_at=opened,
                action="manual_review",
                rule_id="high_amount",
                abuse_score=score,
                amount_requested=amount,
            )
        )
        rows.append(
            {
                "case_id": case_id,
                "refund_id": f"r{i:03d}",
                "customer_id": f"c{i}",
                "opened_at": opened,
                "status": "open",
                "claimed_by": None,
                "claimed_until": None,
                "resolved_at": None,
                "version": 0,
            }
        )
    with queue.engine.begin() as connection:
        connection.execute(sa.insert(DECISIONS), decisions)
        connection.execute(sa.insert(REVIEW_CASES), rows)
        connection.execute(
            sa.insert(API_KEYS),
            [
                {
                    "key_id": f"rev{i}",
                    "role": "reviewer",
                    "name": f"reviewer {i}",
                    "salt": "s",
                    "secret_hash": "h",
                    "created_at": START,
                    "revoked_at": None,
                }
                for i in range(8)
            ],
        )
    return [r["case_id"] for r in rows]


def test_oldest_first_then_riskiest_within_the_amount_limit_and_the_cap(
    store_url: tuple[str, str | None],
) -> None:
    clock = Clock(START)
    queue = _queue(*store_url, clock)
    try:
        ids = _open(
            queue,
            [(5, 100, 0.2), (30, 2_000, 0.9), (30, 150, 0.4), (30, 150, 0.8), (1, 90, 0.99)],
        )
        # The 30-hour-old cases come first, the riskier of the two small ones before the other;
        # the 2,000 one is above this reviewer's limit of 500.
        got = [queue.next_case("rev0", max_open_claims=3, max_amount=500.0) for _ in range(3)]
        assert [g.case_id if g else None for g in got] == [ids[3], ids[2], ids[0]]
        assert all(g is not None and g.claimed_by == "rev0" for g in got)
        with pytest.raises(ConflictError, match="hold 3 open case"):
            queue.next_case("rev0", max_open_claims=3, max_amount=500.0)
        # A reviewer with no amount limit gets the large one.
        big = queue.next_case("rev1", max_open_claims=3)
        assert big is not None and big.case_id == ids[1]
        assert queue.held_by_reviewer() == {"rev0": 3, "rev1": 1}
        # Nothing within rev2's limit is free now but the youngest.
        last = queue.next_case("rev2", max_open_claims=3, max_amount=100.0)
        assert last is not None and last.case_id == ids[4]
        assert queue.next_case("rev2", max_open_claims=3, max_amount=100.0) is None
        # Claims left to lapse go back to the queue, oldest first again.
        clock.now = START + timedelta(minutes=16)
        back = queue.next_case("rev3", max_open_claims=1, max_amount=500.0)
        assert back is not None and back.case_id == ids[3]
    finally:
        queue.engine.dispose()


@pytest.mark.slow
def test_concurrent_reviewers_never_share_a_case_and_keep_their_caps(
    store_url: tuple[str, str | None],
) -> None:
    clock = Clock(START)
    queue = _queue(*store_url, clock)
    try:
        ids = _open(queue, [(i * 0.5, 50.0 + i, 0.5) for i in range(40)])
        handed: list[tuple[str, str]] = []
        refused: Counter[str] = Counter()
        lock = threading.Lock()
        barrier = threading.Barrier(6)

        def reviewer(who: str) -> None:
            barrier.wait()
            for _ in range(6):
                try:
                    case = queue.next_case(who, max_open_claims=5)
                except ConflictError:
                    with lock:
                        refused[who] += 1
                    continue
                if case is not None:
                    with lock:
                        handed.append((who, case.case_id))

        threads = [threading.Thread(target=reviewer, args=(f"rev{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        cases = [c for _, c in handed]
        assert len(cases) == len(set(cases)), "a case was handed to two reviewers"
        per = Counter(w for w, _ in handed)
        assert all(n == 5 for n in per.values()) and len(per) == 6  # each filled its cap exactly
        assert all(refused[w] == 1 for w in per)  # and its sixth ask was refused
        with queue.engine.connect() as connection:
            holders = dict(
                connection.execute(
                    sa.select(REVIEW_CASES.c.case_id, REVIEW_CASES.c.claimed_by).where(
                        REVIEW_CASES.c.claimed_by.is_not(None)
                    )
                ).all()
            )
        assert holders == {c: w for w, c in handed}
        # The 30 handed out are the 30 oldest.
        assert set(cases) == set(ids[-30:])
    finally:
        queue.engine.dispose()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cases=st.lists(
        st.tuples(st.floats(0, 100), st.floats(1, 3_000), st.one_of(st.none(), st.floats(0, 1))),
        min_size=1,
        max_size=12,
    ),
    limit=st.one_of(st.none(), st.floats(1, 3_000)),
    cap=st.integers(1, 4),
)
def test_the_hand_out_is_the_most_urgent_case_within_limits(
    tmp_path_factory: pytest.TempPathFactory,
    cases: list[tuple[float, float, float | None]],
    limit: float | None,
    cap: int,
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('next') / 'db.sqlite'}"
    queue = _queue(url, None, Clock(START))
    try:
        ids = _open(queue, cases)
        # A case's age is its opening time, stored to the microsecond: two ages a rounding
        # apart are the same age, and the score decides between them.
        eligible = sorted(
            (
                (START - timedelta(hours=hours), -(score or 0.0), case_id)
                for case_id, (hours, amount, score) in zip(ids, cases, strict=True)
                if limit is None or amount <= limit
            )
        )
        got = []
        for _ in range(cap):
            case = queue.next_case("rev0", max_open_claims=cap, max_amount=limit)
            if case is None:
                break
            assert limit is None or case.amount_requested <= limit
            got.append(case.case_id)
        want = [case_id for *_, case_id in eligible[:cap]]
        by_id = dict(zip(ids, cases, strict=True))

        # Same urgency (age, then score) in the same order; ties may come either way round.
        def urgency(case_id: str) -> tuple[datetime, float]:
            hours, _, score = by_id[case_id]
            return START - timedelta(hours=hours), score or 0.0

        assert [urgency(c) for c in got] == [urgency(c) for c in want]
    finally:
        queue.engine.dispose()


def test_limits_come_from_the_file_by_key_name_or_id(tmp_path: Path) -> None:
    path = tmp_path / "reviewers.yaml"
    path.write_text(
        "default: {max_amount: 500}\n"
        "reviewers:\n"
        "  senior team: {max_amount: 5000, max_open_claims: 6}\n"
        "  rev9: {max_open_claims: 1}\n",
        encoding="utf-8",
    )
    limits = load_reviewer_limits(path)
    assert limits.for_key("rev1", "senior team", 3) == (5000.0, 6)
    assert limits.for_key("rev9", "new joiner", 3) == (500.0, 1)
    assert limits.for_key("rev2", "anyone", 3) == (500.0, 3)
    assert load_reviewer_limits(None).for_key("x", None, 4) == (None, 4)
    path.write_text("reviewers:\n  a: {max_amount: -5}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"reviewers\.a\.max_amount"):
        load_reviewer_limits(path)
    path.write_text("reviewers:\n  a: {max_amonut: 5}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="max_amonut"):
        load_reviewer_limits(path)
