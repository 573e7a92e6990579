"""Shared fixtures: small seeded worlds built by hand, and databases to test against."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from built_once import built_once, load, private_copy, save
from services import skip_or_fail

from data.schema import (
    CATEGORIES,
    DELIVERY_EVIDENCE,
    PAYMENT_METHODS,
    PRODUCT_COLUMNS,
    REASON_DETAILS,
    TABLES,
    empty_frame,
)

Tables = dict[str, pd.DataFrame]

DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _frame(name: str, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows of one raw table as a frame with the schema's columns and storage types."""
    spec = TABLES[name]
    if not rows:
        return empty_frame(spec)
    frame = pd.DataFrame([{c: row.get(c) for c in spec.column_names} for row in rows])
    return pd.DataFrame(
        {
            c.name: (
                pd.to_datetime(frame[c.name]).astype("datetime64[us]")
                if c.kind == "timestamp"
                else frame[c.name].astype(object).where(frame[c.name].notna(), None)
                if c.name in PRODUCT_COLUMNS  # rows without a product keep it missing
                else frame[c.name].astype(
                    {"money": "float64", "count": "int64", "bool": "bool"}.get(c.kind, "str")
                )
            )
            for c in spec.columns
        }
    )


@pytest.fixture
def make_tables() -> Callable[[Mapping[str, Sequence[Mapping[str, Any]]]], Tables]:
    """Build the five raw tables from lists of row dicts (missing tables are empty)."""

    def build(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> Tables:
        return {name: _frame(name, rows.get(name, [])) for name in TABLES}

    return build


def _random_world(seed: int, n_customers: int) -> Tables:
    """A small world with every schema rule kept and the awkward cases made common.

    Times are whole hours, so events often share a timestamp with a request (ties test the
    strictly-before rule); fingerprints come from small pools, so accounts link; refunds get
    up to three outcomes that may flip between abusive and not.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-01-01")
    hour = pd.Timedelta(hours=1)

    def at(hours: float) -> pd.Timestamp:
        return start + round(hours) * hour

    customers, orders, refunds, outcomes = [], [], [], []
    links: dict[tuple[str, str, str], pd.Timestamp] = {}
    pool = max(3, n_customers // 3)
    details = list(REASON_DETAILS)
    for c in range(n_customers):
        cid = f"c{c:04d}"
        signup_h = rng.uniform(-2000, 3000)
        customers.append({"customer_id": cid, "signup_at": at(signup_h), "region": "north"})
        links[(cid, "device", f"d{rng.integers(pool):03d}")] = at(signup_h)
        t = max(signup_h, 0.0)
        for _ in range(int(rng.poisson(5))):
            t += rng.exponential(400)
            oid = f"o{len(orders):05d}"
            category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            amount = float(np.round(rng.lognormal(4, 0.8), 2))
            shipped = t + rng.uniform(0, 48) if rng.random() < 0.9 else None
            delivered = shipped + rng.uniform(0, 120) if shipped and rng.random() < 0.85 else None
            device = f"d{rng.integers(pool):03d}"
            address = f"a{rng.integers(pool):03d}"
            payment = f"p{rng.integers(pool):03d}"
            orders.append(
                {
                    "order_id": oid,
                    "customer_id": cid,
                    "ordered_at": at(t),
                    "category": category,
                    "amount": amount,
                    "item_count": int(rng.integers(1, 4)),
                    "payment_method": PAYMENT_METHODS[int(rng.integers(len(PAYMENT_METHODS)))],
                    "device_id": device,
                    "address_id": address,
                    "payment_fingerprint": payment,
                    "shipped_at": None if shipped is None else at(max(shipped, t)),
                    "delivered_at": None if delivered is None else at(max(delivered, shipped or t)),
                    "delivery_evidence": (
                        DELIVERY_EVIDENCE[int(rng.integers(1, 5))]
                        if delivered is not None
                        else "none"
                    ),
                }
            )
            for kind, fp in (("device", device), ("address", address), ("payment", payment)):
                key = (cid, kind, fp)
                links[key] = min(links.get(key, at(t)), at(t))
            for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.45 else 0):
                # Requests at the very hour of the order, or later; some orders get two.
                req_h = t + (0.0 if rng.random() < 0.1 else rng.uniform(0, 24 * 40))
                rid = f"r{len(refunds):05d}"
                detail = details[int(rng.integers(len(details)))]
                stage = (
                    "delivered"
                    if delivered is not None and at(delivered) < at(req_h)
                    else "in_transit"
                    if shipped is not None and at(shipped) < at(req_h)
                    else "not_shipped"
                )
                refunds.append(
                    {
                        "refund_id": rid,
                        "order_id": oid,
                        "customer_id": cid,
                        "requested_at": at(req_h),
                        "refund_type": "refund_only" if rng.random() < 0.5 else "return_and_refund",
                        "reason": REASON_DETAILS[detail],
                        "reason_detail": detail,
                        "amount_requested": float(np.round(amount * rng.uniform(0.2, 1.0), 2))
                        or 0.01,
                        "photo_count": int(rng.poisson(0.7)),
                        "order_stage": stage,
                    }
                )
                known_h = req_h
                for _ in range(int(rng.integers(0, 4))):
                    known_h += 0.0 if rng.random() < 0.15 else rng.uniform(0, 24 * 30)
                    outcomes.append(
                        {
                            "outcome_id": f"x{len(outcomes):05d}",
                            "refund_id": rid,
                            "is_abusive": bool(rng.random() < 0.4),
                            "known_at": at(known_h),
                            "source": "reviewer",
                        }
                    )
    link_rows = [
        {"customer_id": c, "kind": k, "fingerprint": f, "seen_at": s}
        for (c, k, f), s in sorted(links.items())
    ]
    rows = {
        "customers": customers,
        "orders": orders,
        "refund_requests": refunds,
        "outcomes": outcomes,
        "identity_links": link_rows,
    }
    return {name: _frame(name, rows[name]) for name in TABLES}


@pytest.fixture
def random_world() -> Callable[..., Tables]:
    """A factory of small random worlds: `random_world(seed=0, n_customers=60)`."""

    def build(seed: int = 0, n_customers: int = 60) -> Tables:
        return _random_world(seed, n_customers)

    return build


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[tuple[str, str]]:
    """(URL, schema): a uniquely named PostgreSQL schema for this test session, dropped after.

    Skips when no server answers at REFUND_RISK_TEST_POSTGRES_URL (default 127.0.0.1:5432).
    """
    url = os.environ.get("REFUND_RISK_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL)
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        skip_or_fail(
            f"PostgreSQL not reachable at {url}: set REFUND_RISK_TEST_POSTGRES_URL "
            f"({str(exc).splitlines()[0]})"
        )
    try:
        yield url, schema
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, str | None]]:
    """(URL, schema) of an empty event store: a SQLite file, and PostgreSQL when reachable."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}", None
        return
    url, _ = request.getfixturevalue("postgres_schema")
    # One schema per test inside the session's, so tests on two workers never meet.
    yield url, request.getfixturevalue("new_schema")()


@pytest.fixture
def new_schema(postgres_schema: tuple[str, str]) -> Iterator[Callable[[], str]]:
    """Makes empty schemas inside the session's (on the session's URL), dropped after the
    test."""
    url, session_schema = postgres_schema
    made: list[str] = []
    engine = sa.create_engine(url)

    def make() -> str:
        schema = f"{session_schema}_{uuid.uuid4().hex[:8]}"
        with engine.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        made.append(schema)
        return schema

    try:
        yield make
    finally:
        with engine.begin() as connection:
            for schema in made:
                connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def fast_tmp_path(tmp_path: Any) -> Iterator[Any]:
    """A temporary folder in memory (/dev/shm) when there is one, else on disk.

    For tests that commit thousands of small transactions to SQLite: on disk each commit waits
    for the device; the code under test is the same either way.
    """
    import shutil
    import tempfile
    from pathlib import Path

    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="refund-risk-test-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def serving_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A served world (see `tests/serving_world.py`), built once per test run by whichever
    worker asks first; each worker serves its own copy of it, so tests on two workers never
    write to the same store."""
    from serving_world import World, build_world, settings_for

    def build(folder: Path) -> None:
        world = build_world(folder)
        save((world.tables, world.held, world.keys), folder / "world.pickle")

    built = built_once(tmp_path_factory, "serving-world", build)
    tmp = private_copy(built, tmp_path_factory, "serving-world")
    tables, held, keys = load(tmp / "world.pickle")
    return World(settings_for(tmp), tables, held, keys, tmp / "data" / "service.db")


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The world `make demo` builds (see `tests/demo_world.py`), built once per test run by
    whichever worker asks first; each worker that asks gets its own copy to serve."""
    from demo_world import DemoWorld, build_demo_world, demo_settings

    def build(folder: Path) -> None:
        save(build_demo_world(folder).keys, folder / "keys.pickle")

    built = built_once(tmp_path_factory, "demo-world", build)
    tmp = private_copy(built, tmp_path_factory, "demo-world")
    return DemoWorld(demo_settings(tmp), load(tmp / "keys.pickle"))
