"""Histories in memory shared by several processes (`serving.history`), on real PostgreSQL.

Two builders with their own memory stand for two processes on one schema. Random sequences of
appends (orders with shared devices, refund requests, outcomes, identity links, some written
by neither builder, as another process would) go through either of them; after each, one of
them computes a customer's feature row the way a decision does (the customer's lock, then
`fresh`), with a cache of two customers or of all, and the row must equal that of a builder
which has never held anything in memory.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.online import OnlineFeatureBuilder
from features.store import EventStore
from serving.history import SharedHistory, lock
from serving.metrics import Metrics

pytestmark = pytest.mark.postgres

START = datetime(2025, 3, 1)
CUSTOMERS = 4
DEVICES = 3


@pytest.fixture(scope="module")
def store(postgres_schema: tuple[str, str]) -> Iterator[EventStore]:
    url, session_schema = postgres_schema
    schema = f"{session_schema}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    opened = EventStore.open(url, schema=schema)
    try:
        yield opened
    finally:
        opened.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


class World:
    """One example's customers (ids unique to it), and what has been written of them."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.clock = 0
        self.orders: dict[int, list[str]] = {}
        self.refunds: list[str] = []

    def now(self) -> datetime:
        self.clock += 1
        return START + timedelta(hours=self.clock)

    def customer(self, n: int) -> str:
        return f"c-{self.tag}-{n}"

    def rows(self, op: tuple[str, int, int, bool]) -> dict[str, list[dict[str, Any]]]:
        kind, customer, other, flag = op
        cid = self.customer(customer)
        when = self.now()
        if kind == "order" or not self.orders.get(customer):
            order_id = f"o-{self.tag}-{self.clock}"
            self.orders.setdefault(customer, []).append(order_id)
            device = f"d-{self.tag}-{other % DEVICES}"
            order = {
                "order_id": order_id,
                "customer_id": cid,
                "ordered_at": when,
                "category": "apparel",
                "amount": 50.0 + other,
                "item_count": 1,
                "payment_method": "card",
                "device_id": device,
                "address_id": None,
                "payment_fingerprint": None,
                "shipped_at": None,
                "delivered_at": None,
                "delivery_evidence": "none",
            }
            link = {"customer_id": cid, "kind": "device", "fingerprint": device, "seen_at": when}
            return {"orders": [order], "identity_links": [link]}
        if kind == "refund" or not self.refunds:
            refund_id = f"r-{self.tag}-{self.clock}"
            self.refunds.append(refund_id)
            return {"refund_requests": [self.refund(customer, refund_id, when)]}
        if kind == "outcome":
            refund_id = self.refunds[other % len(self.refunds)]
            outcome = {
                "outcome_id": f"x-{self.tag}-{self.clock}",
                "refund_id": refund_id,
                "is_abusive": flag,
                "known_at": when,
                "source": "warehouse_check",
            }
            return {"outcomes": [outcome]}
        device = f"d-{self.tag}-{other % DEVICES}"
        return {
            "identity_links": [
                {"customer_id": cid, "kind": "device", "fingerprint": device, "seen_at": when}
            ]
        }

    def refund(self, customer: int, refund_id: str, when: datetime) -> dict[str, Any]:
        return {
            "refund_id": refund_id,
            "order_id": self.orders[customer][-1],
            "customer_id": self.customer(customer),
            "requested_at": when,
            "refund_type": "return_and_refund",
            "reason": "mistake",
            "reason_detail": "ordered_by_mistake",
            "amount_requested": 20.0,
            "photo_count": 0,
            "order_stage": "not_shipped",
        }


def _same(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    def equal(x: Any, y: Any) -> bool:
        if isinstance(x, float) and math.isnan(x):
            return isinstance(y, float) and math.isnan(y)
        return bool(x == y)

    return [name for name in a if not equal(a[name], b[name])]


OPS = st.lists(
    st.tuples(
        st.sampled_from(["order", "refund", "outcome", "link"]),
        st.integers(0, CUSTOMERS - 1),
        st.integers(0, 10),
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)
WHO = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1)), min_size=12, max_size=12)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=OPS,
    who=WHO,
    probes=st.lists(st.integers(0, CUSTOMERS - 1), min_size=12, max_size=12),
    capacity=st.sampled_from([2, 100]),
)
def test_a_decision_reads_what_every_process_committed(
    store: EventStore,
    ops: list[tuple[str, int, int, bool]],
    who: list[tuple[int, int]],
    probes: list[int],
    capacity: int,
) -> None:
    world = World()
    builders = [OnlineFeatureBuilder(store) for _ in range(2)]
    shared = [SharedHistory(b, store, capacity, metrics=Metrics()) for b in builders]
    for op, (writer, reader), probe in zip(ops, who, probes, strict=False):
        rows = world.rows(op)
        if writer < 2:
            builders[writer].append_many(rows)
        else:  # another process
            store.write(rows)
        if not world.orders.get(probe):
            continue
        request = world.refund(probe, f"probe-{world.tag}-{world.clock}", world.now())
        with store.engine.begin() as connection:
            lock(connection, request["customer_id"])
            shared[reader].fresh(connection, request["customer_id"])
            row = builders[reader].row(request)
        shared[reader].trim(keep=(request["customer_id"],))
        assert builders[reader].history_count() <= capacity
        expected = OnlineFeatureBuilder(store).row(request)
        assert _same(row, expected) == [], (op, writer, reader)


def test_a_fingerprint_another_decision_read_again_is_read_again_here(store: EventStore) -> None:
    # D and C each share a device with L, not with each other. This process holds D and L; L
    # changes elsewhere; C's decision here reads L again (and who uses L's devices); D's next
    # decision must still count L as linked.
    world = World()
    builder = OnlineFeatureBuilder(store)
    shared = SharedHistory(builder, store, 100, metrics=Metrics())
    d, c, l_ = 0, 1, 2
    for customer, device in ((d, 0), (l_, 0), (l_, 1), (c, 1)):
        store.write(world.rows(("order", customer, device, False)))

    def row(customer: int) -> dict[str, Any]:
        request = world.refund(customer, f"probe-{world.tag}-{world.clock}", world.now())
        with store.engine.begin() as connection:
            lock(connection, request["customer_id"])
            shared.fresh(connection, request["customer_id"])
            got = builder.row(request)
        assert _same(got, OnlineFeatureBuilder(store).row(request)) == []
        return got

    assert row(d)["linked_accounts_by_device"] == 1
    store.write(world.rows(("refund", l_, 0, False)))  # another process
    row(c)
    assert row(d)["linked_accounts_by_device"] == 1


def test_the_cache_stays_within_its_size_and_counts_in_metrics(store: EventStore) -> None:
    world = World()
    builder = OnlineFeatureBuilder(store)
    metrics = Metrics()
    shared = SharedHistory(builder, store, 2, metrics=metrics)
    for customer in range(DEVICES):  # each on a device of their own
        store.write(world.rows(("order", customer, customer, False)))

    def decide(customer: int) -> None:
        request = world.refund(customer, f"probe-{world.tag}-{world.clock}", world.now())
        with store.engine.begin() as connection:
            lock(connection, request["customer_id"])
            shared.fresh(connection, request["customer_id"])
            builder.row(request)
        shared.trim(keep=(request["customer_id"],))
        assert builder.history_count() <= 2

    for customer in (0, 1, 0, 2, 0):
        decide(customer)
    # 0 and 1 read, 0 held; 2 read, and 0 and 1 go (down to 90% of 2, keeping 2); 0 read again.
    assert (shared.hits, shared.misses, shared.evictions) == (1, 4, 2)
    text = metrics.render().decode()
    assert "refund_risk_history_cache_hits_total 1.0" in text
    assert "refund_risk_history_cache_misses_total 4.0" in text
    assert "refund_risk_history_cache_evictions_total 2.0" in text
    assert "refund_risk_history_cache_customers 2.0" in text


def test_an_arriving_order_links_its_new_customer_to_what_other_processes_committed(
    store: EventStore,
) -> None:
    # L orders on device 0 and is read here; another process then confirms L's refund
    # abusive. N's first order arrives on device 0: the database does not link N to L until
    # that order is written, yet N's features must count L's confirmed abuse as committed.
    world = World()
    builder = OnlineFeatureBuilder(store)
    shared = SharedHistory(builder, store, 100, metrics=Metrics())
    l_, n = 0, 1
    store.write(world.rows(("order", l_, 0, False)))
    store.write(world.rows(("refund", l_, 0, False)))
    with store.engine.begin() as connection:
        lock(connection, world.customer(l_))
        shared.fresh(connection, world.customer(l_))
    store.write(world.rows(("outcome", l_, 0, True)))  # another process
    arriving = world.rows(("order", n, 0, False))
    request = world.refund(n, f"probe-{world.tag}", world.now())
    with store.engine.begin() as connection:
        lock(connection, world.customer(n))
        keys = [(link["kind"], link["fingerprint"]) for link in arriving["identity_links"]]
        shared.fresh(connection, world.customer(n), keys)
        store.write(arriving, connection)
        builder.remember(arriving)
        got = builder.row(request)
    expected = OnlineFeatureBuilder(store).row(request)
    assert expected["linked_accounts_confirmed_abusive_refunds_by_device"] == 1
    assert _same(got, expected) == []
