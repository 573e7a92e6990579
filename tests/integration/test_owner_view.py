"""The owner's figures, read from a real event store and decision log, against pandas on the same
rows: refund rate, money, reasons, categories, weeks, and the time each request waited."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_world import a_decision_row

from data.schema import REASON_DETAILS
from features.store import EventStore
from serving import owner
from serving.db import DECISIONS, REVIEW_CASES, migrate

Tables = dict[str, pd.DataFrame]


def _store(url: str, schema: str | None, tables: Tables) -> EventStore:
    store = EventStore.open(url, schema=schema)
    migrate(store.engine)
    store.write_frames(tables)
    return store


def _expected(tables: Tables, first: pd.Timestamp, last: pd.Timestamp) -> dict[str, Any]:
    """The period's figures computed straight from the raw frames."""
    orders, refunds = tables["orders"], tables["refund_requests"]
    o = orders[
        (orders.ordered_at.dt.normalize() >= first) & (orders.ordered_at.dt.normalize() <= last)
    ]
    r = refunds[
        (refunds.requested_at.dt.normalize() >= first)
        & (refunds.requested_at.dt.normalize() <= last)
    ].merge(orders[["order_id", "category"]], on="order_id")
    return {
        "orders": len(o),
        "requests": len(r),
        "sales": float(o.amount.sum()),
        "money": float(r.amount_requested.sum()),
        "by_category": r.groupby("category").size().to_dict(),
        "orders_by_category": o.groupby("category").size().to_dict(),
        "details": r.groupby("reason_detail").size().to_dict(),
    }


@pytest.mark.parametrize("days", [7, 30])
def test_the_period_matches_the_raw_rows(
    store_url: tuple[str, str | None], random_world: Callable[..., Tables], days: int
) -> None:
    tables = random_world(seed=3, n_customers=80)
    store = _store(*store_url, tables)
    try:
        view = owner.build(store.engine, days, datetime(2030, 1, 1), 24.0)
    finally:
        store.dispose()
    last = tables["refund_requests"].requested_at.max()
    assert view.as_of == last
    last_day = last.normalize()
    first_day = last_day - pd.Timedelta(days=days - 1)
    want = _expected(tables, first_day, last_day)
    assert (view.totals.orders, view.totals.requests) == (want["orders"], want["requests"])
    assert view.totals.sales == pytest.approx(want["sales"])
    assert view.totals.refund_money == pytest.approx(want["money"])
    if want["orders"]:
        assert view.totals.rate == pytest.approx(want["requests"] / want["orders"])
    else:
        assert view.totals.rate is None  # no orders: no rate, rather than an infinite one
    got_categories = {c.category: c.totals.requests for c in view.categories}
    assert {k: v for k, v in got_categories.items() if v} == want["by_category"]
    assert {r.detail: r.count for r in view.reasons if r.count} == want["details"]
    assert sum(r.share for r in view.reasons) == pytest.approx(1.0)
    for row in view.reasons:
        assert REASON_DETAILS[row.detail] == row.reason
    # The previous period is the same number of days just before.
    before = _expected(
        tables, first_day - pd.Timedelta(days=days), first_day - pd.Timedelta(days=1)
    )
    assert (view.previous.orders, view.previous.requests) == (before["orders"], before["requests"])
    # Days and weeks partition the requests they cover.
    assert sum(t.requests for _, t in view.daily) == want["requests"]
    assert [d for d, _ in view.daily][-1] == last_day.date().isoformat()
    assert len(view.weeks) == owner.TREND_WEEKS
    week_start = pd.Timestamp(view.weeks[0].start)
    in_trend = tables["refund_requests"].requested_at.dt.normalize() >= week_start
    assert sum(w.totals.requests for w in view.weeks) == int(in_trend.sum())
    for w in view.weeks:
        assert sum(w.reasons.values()) == w.totals.requests
    # The forecast starts the week after the last complete one: a week still running would
    # look like a fall.
    assert view.forecast is not None, view.forecast_note
    first_ahead = pd.Timestamp(view.forecast.weeks[0])
    assert first_ahead.weekday() == 0
    assert first_ahead - pd.Timedelta(days=1) <= last_day < first_ahead + pd.Timedelta(days=6)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), days=st.sampled_from([7, 14, 30, 90]))
def test_figures_match_pandas_on_any_world(
    tmp_path_factory: pytest.TempPathFactory,
    random_world: Callable[..., Tables],
    seed: int,
    days: int,
) -> None:
    tables = random_world(seed=seed, n_customers=25)
    if tables["refund_requests"].empty:
        return
    url = f"sqlite:///{tmp_path_factory.mktemp('owner') / 'events.db'}"
    store = _store(url, None, tables)
    try:
        view = owner.build(store.engine, days, datetime(2030, 1, 1), 24.0)
    finally:
        store.dispose()
    last_day = tables["refund_requests"].requested_at.max().normalize()
    want = _expected(tables, last_day - pd.Timedelta(days=days - 1), last_day)
    assert view.totals.requests == want["requests"]
    assert view.totals.orders == want["orders"]
    for row in view.categories:
        assert row.totals.orders == want["orders_by_category"].get(row.category, 0)
        assert row.totals.requests == want["by_category"].get(row.category, 0)
        if row.stands_out:
            assert row.totals.rate is not None and view.totals.rate is not None
            assert row.totals.rate > 2 * view.totals.rate and row.totals.requests >= 10
    # Only the week holding the last day can be unfinished, and it is exactly when that day
    # is not a Sunday: its days are those up to the last day; the weekly charts leave it out.
    last = view.weeks[-1]
    assert pd.Timestamp(last.start) <= last_day < pd.Timestamp(last.start) + pd.Timedelta(days=7)
    assert last.days == (last_day - pd.Timestamp(last.start)).days + 1
    assert last.complete == (last_day.weekday() == 6)
    assert all(w.complete for w in view.weeks[:-1])
    assert view.complete_weeks == (view.weeks if last.complete else view.weeks[:-1])
    assert view.week_so_far is (None if last.complete else last)


def test_an_empty_store_reports_nothing_rather_than_zero_rates(sqlite_url: str) -> None:
    store = EventStore.open(sqlite_url)
    migrate(store.engine)
    try:
        view = owner.build(store.engine, 14, datetime(2030, 1, 1), 24.0)
    finally:
        store.dispose()
    assert view.empty and view.totals.rate is None and view.weeks == []


def test_time_to_a_decision_counts_automated_requests_at_once_and_reviews_when_resolved(
    sqlite_url: str,
) -> None:
    store = EventStore.open(sqlite_url)
    migrate(store.engine)
    now = datetime(2026, 12, 3, 12)
    rows, cases = [], []

    def decision(i: int, action: str, hours_ago: float) -> None:
        decided = now - timedelta(hours=hours_ago)
        rows.append(a_decision_row(f"r{i}", decision_id=f"d{i}", decided_at=decided, action=action))

    def case(i: int, opened_hours_ago: float, waited: float | None) -> None:
        opened = now - timedelta(hours=opened_hours_ago)
        cases.append(
            {
                "case_id": f"k{i}",
                "refund_id": f"r{i}",
                "customer_id": "c1",
                "opened_at": opened,
                "status": "open" if waited is None else "resolved",
                "claimed_by": None,
                "claimed_until": None,
                "resolved_at": None if waited is None else opened + timedelta(hours=waited),
                "version": 1,
            }
        )

    for i in range(6):
        decision(i, "auto_approve", 10 + i)
    for i, waited in zip(range(6, 11), (24.0, 30.0, 72.0, 200.0, None), strict=True):
        decision(i, "manual_review", 250)
        case(i, 250, waited)
    decision(11, "auto_approve", 24 * 20)  # outside the 14-day window
    with store.engine.begin() as connection:
        connection.execute(sa.insert(DECISIONS), rows)
        connection.execute(sa.insert(REVIEW_CASES), cases)
    try:
        view = owner.build(store.engine, 14, now, 24.0)
    finally:
        store.dispose()
    s = view.settling
    assert (s.decided, s.automated, s.reviewed, s.still_open) == (11, 6, 5, 1)
    # A bucket includes its upper bound: 24 h exactly is within 24 h, 72 h exactly is 1-3 days.
    assert s.buckets == {"within 24 h": 7, "1-3 days": 2, "3-7 days": 0, "over 7 days": 1}
    assert s.mean_hours == pytest.approx((24 + 30 + 72 + 200) / 10)
    assert s.reviewed_within_sla == pytest.approx(1 / 4)  # 24 h exactly is within a 24 h SLA
    assert s.automated_share == pytest.approx(6 / 11)


def test_a_category_stands_out_when_its_rate_is_over_twice_the_shops(
    sqlite_url: str, make_tables: Callable[..., Tables]
) -> None:
    start = datetime(2026, 3, 2, 9)
    orders, refunds = [], []
    # apparel: 100 orders, 20 refunds (20%); home: 400 orders, 14 refunds (3.5%); shop 6.8%.
    for category, n_orders, n_refunds in (("apparel", 100, 20), ("home", 400, 14)):
        for i in range(n_orders):
            oid = f"{category}-{i}"
            orders.append(
                {
                    "order_id": oid,
                    "customer_id": "c1",
                    "ordered_at": start + timedelta(minutes=i),
                    "category": category,
                    "amount": 50.0,
                    "item_count": 1,
                    "payment_method": "card",
                    "device_id": "d",
                    "address_id": "a",
                    "payment_fingerprint": "p",
                    "shipped_at": None,
                    "delivered_at": None,
                    "delivery_evidence": "none",
                }
            )
            if i < n_refunds:
                refunds.append(
                    {
                        "refund_id": f"r-{oid}",
                        "order_id": oid,
                        "customer_id": "c1",
                        "requested_at": start + timedelta(hours=12, minutes=i),
                        "refund_type": "refund_only",
                        "reason": "mistake",
                        "reason_detail": "ordered_twice",
                        "amount_requested": 50.0,
                        "photo_count": 0,
                        "order_stage": "not_shipped",
                    }
                )
    tables = make_tables(
        {
            "customers": [{"customer_id": "c1", "signup_at": datetime(2025, 1, 1), "region": "n"}],
            "orders": orders,
            "refund_requests": refunds,
        }
    )
    store = _store(sqlite_url, None, tables)
    try:
        view = owner.build(store.engine, 7, datetime(2030, 1, 1), 24.0)
    finally:
        store.dispose()
    assert view.totals.rate == pytest.approx(34 / 500)
    flagged = {c.category: c.stands_out for c in view.categories}
    assert flagged == {"apparel": True, "home": False}
    assert [c.category for c in view.categories] == ["apparel", "home"]  # highest rate first
