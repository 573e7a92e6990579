"""The event store and the online builder on a real database: SQLite, and PostgreSQL when one
answers (tests marked `postgres`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from features.batch import BatchBuilder
from features.definitions import FEATURE_NAMES
from features.online import OnlineFeatureBuilder
from features.replay import TIME_COLUMNS
from features.store import VERSION_TABLE, EventStore, metadata
from refund_risk.errors import DataValidationError, NotFoundError

Tables = dict[str, pd.DataFrame]
StoreUrl = tuple[str, str | None]


def _open(store_url: StoreUrl) -> EventStore:
    url, schema = store_url
    return EventStore.open(url, schema=schema)


def _record(tables: Tables, refund_id: str) -> dict[str, Any]:
    refunds = tables["refund_requests"]
    return refunds[refunds["refund_id"] == refund_id].to_dict("records")[0]


def _same_row(a: dict[str, Any], b: pd.Series) -> list[str]:
    def same(x: Any, y: Any) -> bool:
        if isinstance(x, float) and np.isnan(x):
            return bool(np.isnan(y))
        return bool(x == y)

    return [n for n in FEATURE_NAMES if not same(a[n], b[n])]


def test_migrations_create_exactly_the_declared_tables(store_url: StoreUrl) -> None:
    store = _open(store_url)
    store.migrate()  # a second run changes nothing
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == "0005_history_versions"
        assert VERSION_TABLE in sa.inspect(connection).get_table_names()
    store.dispose()


def test_writes_are_upserts(random_world: Callable[..., Tables], store_url: StoreUrl) -> None:
    tables = random_world(seed=31, n_customers=20)
    store = _open(store_url)
    store.write_frames(tables)
    store.write_frames(tables)  # ingesting twice changes nothing
    assert store.counts() == {name: len(frame) for name, frame in tables.items()}

    order = tables["orders"].to_dict("records")[0]
    delivered = datetime(2026, 1, 2, 3, 4, 5, 678901)
    store.write({"orders": [{**order, "delivered_at": delivered}]})
    link = tables["identity_links"].to_dict("records")[0]
    store.write({"identity_links": [{**link, "seen_at": datetime(2030, 1, 1)}]})
    rows = store.histories([order["customer_id"]])
    again = next(o for o in rows["orders"] if o["order_id"] == order["order_id"])
    assert again["delivered_at"] == delivered  # microseconds survive the round trip
    kept = store.histories([link["customer_id"]])["identity_links"]
    seen = next(
        r["seen_at"]
        for r in kept
        if r["fingerprint"] == link["fingerprint"] and r["kind"] == link["kind"]
    )
    assert seen == link["seen_at"]  # the earliest sighting is kept
    store.dispose()


def test_an_orders_recorded_product_survives_any_later_write(
    random_world: Callable[..., Tables], store_url: StoreUrl
) -> None:
    """A product once recorded stays (a bulk row cannot change it, the API refuses to); a row
    without one keeps it; an order recorded without one takes the first one written."""
    tables = random_world(seed=31, n_customers=20)
    store = _open(store_url)
    store.write_frames(tables)
    first, second = tables["orders"].to_dict("records")[:2]

    def product(order: dict[str, Any]) -> tuple[Any, Any]:
        rows = store.histories([order["customer_id"]])["orders"]
        found = next(o for o in rows if o["order_id"] == order["order_id"])
        return found["product_id"], found["product_name"]

    store.write({"orders": [{**first, "product_id": "sku-a", "product_name": "A"}]})
    store.write({"orders": [{**first, "product_id": None, "product_name": None}]})
    assert product(first) == ("sku-a", "A")
    store.write({"orders": [{**first, "product_id": "sku-b", "product_name": "B"}]})
    assert product(first) == ("sku-a", "A")
    store.write({"orders": [{**first, "product_id": "sku-a", "product_name": "A, renamed"}]})
    assert product(first) == ("sku-a", "A, renamed")
    store.write({"orders": [{**second, "product_id": None, "product_name": None}]})
    store.write({"orders": [{**second, "product_id": "sku-c", "product_name": None}]})
    assert product(second) == ("sku-c", None)
    store.dispose()


def test_a_burst_of_requests_sees_each_earlier_one(
    random_world: Callable[..., Tables], store_url: StoreUrl
) -> None:
    tables = random_world(seed=32, n_customers=30)
    store = _open(store_url)
    store.write_frames(tables)
    builder = OnlineFeatureBuilder(store)
    first = _record(tables, tables["refund_requests"]["refund_id"].iloc[0])
    order_id, customer_id, t = first["order_id"], first["customer_id"], first["requested_at"]
    # Times are whole hours in this world: nothing else happens between t and t + 1 hour.
    before = builder.row(
        {**first, "refund_id": "burst-0", "requested_at": t + pd.Timedelta(seconds=30)}
    )
    count, on_order = "customer_refund_requests_all_time", "order_earlier_refund_requests"
    for i in range(1, 4):
        request = {**first, "refund_id": f"burst-{i}", "requested_at": t + pd.Timedelta(minutes=i)}
        row = builder.score_and_record(request)
        assert row[count] == before[count] + i - 1
        assert row[on_order] == before[on_order] + i - 1
    # A new process, with only the store, sees the same.
    later = {**first, "refund_id": "burst-9", "requested_at": t + pd.Timedelta(minutes=59)}
    fresh = OnlineFeatureBuilder(store).row(later)
    assert fresh == builder.row(later)
    assert fresh[count] == before[count] + 3
    assert (customer_id, order_id) == (later["customer_id"], later["order_id"])
    store.dispose()


def test_appends_out_of_time_order_give_the_batch_rows(
    random_world: Callable[..., Tables], store_url: StoreUrl
) -> None:
    tables = random_world(seed=33, n_customers=25)
    batch = BatchBuilder(tables).refund_rows().set_index("refund_id")
    store = _open(store_url)
    builder = OnlineFeatureBuilder(store)
    builder.preload()
    # Newest first, in small batches: histories must be rebuilt, outcomes wait for refunds.
    rows = []
    for name, frame in tables.items():
        for record in frame.to_dict("records"):
            rows.append((record[TIME_COLUMNS[name]], name, record))
    rows.sort(key=lambda r: r[0], reverse=True)
    for start in range(0, len(rows), 7):
        chunk: dict[str, list[dict[str, Any]]] = {}
        for _, name, record in rows[start : start + 7]:
            chunk.setdefault(name, []).append(record)
        builder.append_many(chunk)
    for rid in batch.index:
        assert _same_row(builder.row(_record(tables, rid)), batch.loc[rid]) == [], rid
    store.dispose()


def test_a_request_about_an_unknown_order_is_refused(
    random_world: Callable[..., Tables], store_url: StoreUrl
) -> None:
    tables = random_world(seed=34, n_customers=10)
    store = _open(store_url)
    store.write_frames(tables)
    request = {
        **_record(tables, tables["refund_requests"]["refund_id"].iloc[0]),
        "order_id": "no-such-order",
    }
    with pytest.raises(NotFoundError, match="no-such-order"):
        OnlineFeatureBuilder(store).row(request)
    store.dispose()


def test_a_customer_nobody_has_seen_gets_defined_values(store_url: StoreUrl) -> None:
    store = _open(store_url)
    builder = OnlineFeatureBuilder(store)
    order = {
        "order_id": "o-new",
        "customer_id": "c-new",
        "ordered_at": "2025-03-01 10:00:00",
        "category": "apparel",
        "amount": 25.0,
        "item_count": 1,
        "payment_method": "card",
        "device_id": "d",
        "address_id": "a",
        "payment_fingerprint": "p",
        "shipped_at": None,
        "delivered_at": None,
        "delivery_evidence": "none",
    }
    builder.append("orders", [order])
    row = builder.row(
        {
            "refund_id": "r-new",
            "order_id": "o-new",
            "customer_id": "c-new",
            "requested_at": "2025-03-01 10:30:00",
            "refund_type": "return_and_refund",
            "reason": "mistake",
            "reason_detail": "ordered_by_mistake",
            "amount_requested": 25.0,
            "photo_count": 0,
            "order_stage": "not_shipped",
        }
    )
    assert row["customer_orders_all_time"] == 1
    assert row["customer_refund_requests_all_time"] == 0
    assert row["customer_tenure_days"] == 0.0  # no account row: the defined empty value
    # No fingerprint of the customer is known (the order's own are linked by the service):
    # who shares one is unknown, not none.
    assert np.isnan(row["linked_accounts_by_any"])
    assert np.isnan(row["customer_mean_days_from_delivery_to_claim_all_time"])
    store.dispose()


def test_threads_scoring_and_recording_at_once(
    random_world: Callable[..., Tables], tmp_path: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tables = random_world(seed=35, n_customers=40)
    refunds = tables["refund_requests"]
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    store.write_frames({**tables, "refund_requests": refunds.iloc[:0]})
    builder = OnlineFeatureBuilder(store)
    builder.preload()
    records = refunds.to_dict("records")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(builder.score_and_record, records))
    # Everything is recorded once; rows from the store alone match the batch builder.
    assert store.counts()["refund_requests"] == len(records)
    batch = BatchBuilder(tables).refund_rows().set_index("refund_id")
    fresh = OnlineFeatureBuilder(store)
    for record in records[:40]:
        assert _same_row(fresh.row(record), batch.loc[record["refund_id"]]) == []
    store.dispose()


def test_a_key_given_twice_in_one_write_keeps_the_later_row_and_the_earliest_sighting(
    random_world: Callable[..., Tables], store_url: StoreUrl
) -> None:
    tables = random_world(seed=33, n_customers=5)
    store = _open(store_url)
    order = tables["orders"].to_dict("records")[0]
    link = tables["identity_links"].to_dict("records")[0]
    shipped, delivered = datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 3, 4, 5, 6, 7)
    store.write(
        {
            "orders": [
                {**order, "shipped_at": None, "delivered_at": None},
                {**order, "shipped_at": shipped, "delivered_at": delivered},
            ],
            "identity_links": [
                {**link, "seen_at": datetime(2024, 6, 1)},
                {**link, "seen_at": datetime(2024, 5, 1)},
                {**link, "seen_at": datetime(2024, 7, 1)},
            ],
        }
    )
    history = store.histories([order["customer_id"]])
    assert store.counts()["orders"] == 1 and store.counts()["identity_links"] == 1
    stored = history["orders"][0]
    assert (stored["shipped_at"], stored["delivered_at"]) == (shipped, delivered)
    assert history["identity_links"][0]["seen_at"] == datetime(2024, 5, 1)
    store.dispose()


def test_each_column_takes_its_own_type_from_mixed_values(
    random_world: Callable[..., Tables], store_url: StoreUrl
) -> None:
    tables = random_world(seed=34, n_customers=5)
    store = _open(store_url)
    first, second = tables["orders"].to_dict("records")[:2]
    aware = datetime(2026, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    store.write(
        {
            "orders": [
                # an int in a money column, a whole float in a count, an aware time
                {**first, "amount": 10, "item_count": 3.0, "delivered_at": aware},
                {**second, "amount": 10.5, "item_count": 4, "delivered_at": datetime(2026, 1, 3)},
            ]
        }
    )
    stored = {
        o["order_id"]: o
        for o in store.histories([first["customer_id"], second["customer_id"]])["orders"]
    }
    one, two = stored[first["order_id"]], stored[second["order_id"]]
    assert (one["amount"], one["item_count"]) == (10.0, 3)
    assert (two["amount"], two["item_count"]) == (10.5, 4)
    assert one["delivered_at"] == datetime(2026, 1, 2, 10, 0)  # naive UTC, as every time is
    with pytest.raises(DataValidationError, match=r"event_orders\.item_count: 3\.5 is not a whole"):
        store.write({"orders": [{**first, "item_count": 3.5}]})
    store.dispose()


def test_fingerprint_lookups_use_the_fingerprint_index(store_url: StoreUrl) -> None:
    from features.store import fingerprint_links_query

    store = _open(store_url)
    with store.engine.connect() as connection:
        sql = str(
            fingerprint_links_query(["fp-a", "fp-b"]).compile(
                connection, compile_kwargs={"literal_binds": True}
            )
        )
        if connection.dialect.name == "sqlite":
            plan = " ".join(r[3] for r in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert "SEARCH" in plan
        else:
            # An empty table is cheapest to read whole; ask what the planner does when it is not.
            connection.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(r[0] for r in connection.exec_driver_sql(f"EXPLAIN {sql}"))
    store.dispose()
    assert "ix_event_identity_links_fingerprint_kind" in plan, plan


def test_histories_read_in_one_round_trip_are_the_rows_of_one_query_per_table(
    random_world: Callable[..., Tables], store_url: StoreUrl
) -> None:
    """On PostgreSQL a history's five reads go together (pipeline mode, plain SQL): the same
    rows, columns and Python types as one SQLAlchemy query per table."""
    from features.store import _queried_histories

    tables = random_world(seed=37, n_customers=40)
    store = _open(store_url)
    store.write_frames(tables)
    ids = [*sorted(tables["customers"]["customer_id"])[:25], "c-nobody"]

    def canonical(rows: list[dict[str, Any]]) -> list[list[tuple[str, Any, str]]]:
        return sorted([(k, v, type(v).__name__) for k, v in sorted(row.items())] for row in rows)

    with store.engine.connect() as connection:
        expected = _queried_histories(connection, ids)
        got = store.histories(ids, connection)
    store.dispose()
    assert set(got) == set(expected)
    assert all(expected[name] for name in expected), "the world has rows in every table"
    for name in expected:
        assert canonical(got[name]) == canonical(expected[name]), name
