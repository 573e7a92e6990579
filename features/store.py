"""The event store: each customer's history in a real database, for the online builder.

SQLAlchemy 2 Core tables mirror the raw tables of `data.schema` (prefixed `event_`), created and
upgraded by the Alembic migrations under `features/migrations/`, run from code (no alembic.ini;
see `refund_risk.database.migrations`).
SQLite and PostgreSQL go through the same code; the URL decides. Nothing here runs at import.

Writes are upserts on each table's key: ingesting the same rows twice changes nothing, an
order's row can be written again when it ships or is delivered, and an identity link keeps the
earliest time it was seen.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection, Engine

from data.schema import PRODUCT_COLUMNS, TABLES, Kind
from refund_risk.database.bulk import BulkInsert
from refund_risk.database.migrations import alembic_config, hold_migration_lock
from refund_risk.errors import ConfigurationError, DataValidationError

if TYPE_CHECKING:
    from refund_risk.settings import Settings

TABLE_PREFIX = "event_"
VERSION_TABLE = "features_alembic_version"
"""Alembic's version table for the event store; its own name, so other migrations can share
the database without sharing a version history."""

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_SA_TYPES: dict[Kind, Any] = {
    Kind.ID: sa.String(),
    Kind.TEXT: sa.String(),
    Kind.ENUM: sa.String(),
    Kind.TIMESTAMP: sa.DateTime(),
    Kind.MONEY: sa.Double(),
    Kind.COUNT: sa.BigInteger(),
    Kind.BOOL: sa.Boolean(),
}

# Lookups the online builder makes: a customer's rows, and who else used a fingerprint.
_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "orders": (("customer_id",), ("product_id",)),
    "refund_requests": (("customer_id",), ("order_id",)),
    "outcomes": (("refund_id",),),
    "identity_links": (("kind", "fingerprint"), ("fingerprint", "kind")),
}

metadata = sa.MetaData()


def _table(name: str) -> sa.Table:
    spec = TABLES[name]
    columns = [
        sa.Column(
            c.name,
            _SA_TYPES[c.kind],
            primary_key=c.name in spec.key,
            nullable=c.nullable and c.name not in spec.key,
        )
        for c in spec.columns
    ]
    indexes = [
        sa.Index(f"ix_{TABLE_PREFIX}{name}_{'_'.join(cols)}", *cols)
        for cols in _INDEXES.get(name, ())
    ]
    return sa.Table(f"{TABLE_PREFIX}{name}", metadata, *columns, *indexes)


EVENT_TABLES: dict[str, sa.Table] = {name: _table(name) for name in TABLES}
"""The event store's tables, by raw table name."""

HISTORY_VERSIONS = sa.Table(
    f"{TABLE_PREFIX}history_versions",
    metadata,
    sa.Column("customer_id", sa.String(), primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False),
)
"""Each customer's history version on PostgreSQL: every write of events about the customer
(account, orders, refund requests, outcomes of their refunds, identity links) adds one to it in
the same transaction. A process that keeps histories in memory trusts its copy only while the
version it read with it is the stored one (`serving.history`). A customer without a row is at
version 0. SQLite serves one process, which sees all its own writes, and keeps no versions."""

_OWNER_KEYED = ("customers", "orders", "refund_requests", "identity_links")
"""Tables whose rows name their customer; an outcome names its refund, whose owner is looked up."""

_BUMP_SQL = sa.text(
    f"INSERT INTO {HISTORY_VERSIONS.name} (customer_id, version) "
    "SELECT customer_id, 1 FROM ("
    "SELECT unnest(CAST(:customers AS text[])) AS customer_id "
    f"UNION SELECT customer_id FROM {TABLE_PREFIX}refund_requests "
    "WHERE refund_id = ANY(CAST(:refunds AS text[]))"
    ") AS touched ORDER BY customer_id "  # one lock order for every writer: no deadlock here
    f"ON CONFLICT (customer_id) DO UPDATE SET version = {HISTORY_VERSIONS.name}.version + 1 "
    "RETURNING customer_id, version"
)


def create_store_engine(url: str, schema: str | None = None) -> Engine:
    """An engine for the event store at `url`; `schema` (PostgreSQL only) sets the search path.

    A SQLite file's folder is created here, when the engine is made, never at import.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"not a database URL: {url!r} ({exc})") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the service read while an ingest writes; NORMAL sync is durable in WAL
            # mode except for the last commits before a power cut, which an append can redo.
            cursor = dbapi_connection.cursor()
            if parsed.database and parsed.database != ":memory:":
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if backend != "postgresql":
        raise ConfigurationError(f"the event store supports SQLite and PostgreSQL, not {backend}")
    engine = sa.create_engine(parsed, pool_pre_ping=True)
    if schema is not None:

        @sa.event.listens_for(engine, "connect")
        def _search_path(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f'SET search_path TO "{schema}"')
            cursor.close()
            dbapi_connection.commit()

    return engine


def settings_engine(settings: Settings, database_url: str | None = None) -> Engine:
    """The engine of the database the settings name: their URL (or `database_url`, when a
    command is told another) and their schema.

    The service and every command that opens the database get their engine here, so that a
    command writes where the service reads.
    """
    url = database_url or settings.database_url
    assert url is not None
    return create_store_engine(url, schema=settings.database_schema)


def _db_value(value: Any) -> Any:
    """A Python value the database driver takes: None for missing, datetime for timestamps."""
    kind = type(value)
    # The common cases first: this runs once per cell of every row written.
    if value is None or kind is str or kind is int or kind is bool or kind is datetime:
        return value
    if kind is float:
        return None if math.isnan(value) else value
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _db_time(value: Any) -> datetime | None:
    """A timestamp as a naive UTC datetime (what the DateTime columns hold); None if missing."""
    if type(value) is datetime and value.tzinfo is None:
        return value
    cleaned = _db_value(value)
    if cleaned is None:
        return None
    stamp = pd.Timestamp(cleaned)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    result: datetime = stamp.to_pydatetime()
    return result


_TIME_COLUMNS: dict[str, frozenset[str]] = {
    name: frozenset(c.name for c in table.columns if c.kind == Kind.TIMESTAMP)
    for name, table in TABLES.items()
}


_KEY_POSITIONS: dict[str, tuple[int, ...]] = {
    name: tuple(table.column_names.index(k) for k in table.key) for name, table in TABLES.items()
}


def _repeats_a_key(name: str, rows: Sequence[tuple[Any, ...]]) -> bool:
    """True when two of `rows` (tuples in column order) have the same key."""
    positions = _KEY_POSITIONS[name]
    return len({tuple(row[i] for i in positions) for row in rows}) < len(rows)


def _on_conflict(name: str, insert: Any) -> Any:
    """A table's upsert: later rows replace earlier ones on the key, except that an identity
    link keeps the earliest time it was seen."""
    table = EVENT_TABLES[name]
    key = list(TABLES[name].key)
    if name == "identity_links":
        # A fingerprint is "first seen" at the earliest time anyone reported.
        earliest = sa.case(
            (insert.excluded.seen_at < table.c.seen_at, insert.excluded.seen_at),
            else_=table.c.seen_at,
        )
        return insert.on_conflict_do_update(index_elements=key, set_={"seen_at": earliest})
    updates = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in key}
    if name == "orders":
        # An order's product is a fact of the order: once recorded it stays, whatever a later
        # row says (the API refuses a different one, `data.facts.order_changes`). An order sent
        # again without its product (a shipping update, a system that sends products only at
        # checkout) keeps it; one recorded without a product gets the first one sent.
        stored_id, sent_id = table.c.product_id, insert.excluded.product_id
        other_product = sa.and_(stored_id.is_not(None), sent_id.is_not(None), sent_id != stored_id)
        updates["product_id"] = sa.func.coalesce(stored_id, sent_id)
        updates["product_name"] = sa.case(
            (other_product, table.c.product_name),
            else_=sa.func.coalesce(insert.excluded.product_name, table.c.product_name),
        )
    return insert.on_conflict_do_update(index_elements=key, set_=updates)


class EventStore:
    """The event tables behind one engine: write (upsert), read one customer's history, count."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._upserts: dict[str, BulkInsert] = {}

    @classmethod
    def open(cls, url: str, schema: str | None = None, migrate: bool = True) -> EventStore:
        """Connect to the store at `url`, bringing its tables up to date unless told not to."""
        return cls.from_engine(create_store_engine(url, schema=schema), migrate=migrate)

    @classmethod
    def from_engine(cls, engine: Engine, migrate: bool = True) -> EventStore:
        """The store behind `engine`, brought up to date unless told not to."""
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        """Run the event store's migrations up to the latest."""
        with self.engine.begin() as connection:
            hold_migration_lock(connection)
            command.upgrade(alembic_config(connection, MIGRATIONS_DIR), "head")

    def dispose(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    # writing

    def _upsert(self, name: str) -> BulkInsert:
        # Built once per table: building and compiling an upsert costs more than running it.
        if name not in self._upserts:
            self._upserts[name] = BulkInsert(
                self.engine.dialect, EVENT_TABLES[name], conflict=lambda s: _on_conflict(name, s)
            )
        return self._upserts[name]

    def write(
        self, rows: Mapping[str, Sequence[Mapping[str, Any]]], connection: Connection | None = None
    ) -> dict[str, int]:
        """Upsert rows of several tables in one transaction, in dependency order.

        On PostgreSQL the history version of every customer the rows are about goes up by one
        in the same transaction; the new versions are returned (nothing on SQLite).
        """
        if connection is None:
            with self.engine.begin() as conn:
                return self.write(rows, conn)
        for name in TABLES:
            records = rows.get(name)
            if not records:
                continue
            if name not in EVENT_TABLES:
                raise DataValidationError(f"unknown table {name!r}")
            columns = TABLES[name].column_names
            times = _TIME_COLUMNS[name]
            optional = PRODUCT_COLUMNS if name == "orders" else ()
            clean = []
            for record in records:
                # Products are optional in a row, as they are in the API and an import.
                missing = [c for c in columns if c not in record and c not in optional]
                if missing:
                    raise DataValidationError(f"{name} row lacks {', '.join(missing)}")
                clean.append(
                    tuple(
                        _db_time(record[c]) if c in times else _db_value(record.get(c))
                        for c in columns
                    )
                )
            upsert = self._upsert(name)
            if upsert.postgresql and _repeats_a_key(name, clean):
                # One statement may not update a row twice: a key given again goes on its own,
                # in order, as the later row (or the earlier time) wins.
                for row in clean:
                    upsert.run(connection, [row])
            else:
                upsert.run(connection, clean)
        if connection.dialect.name != "postgresql":
            return {}
        return bump_versions(connection, rows)

    def write_frames(
        self,
        frames: Mapping[str, pd.DataFrame],
        chunk_rows: int = 20_000,
        progress: Any = None,
    ) -> dict[str, int]:
        """Upsert whole tables (bulk history), in chunks; return rows written per table."""
        written: dict[str, int] = {}
        total = sum(len(f) for f in frames.values()) or 1
        done = 0
        for name in TABLES:
            frame = frames.get(name)
            if frame is None:
                continue
            # A frame made before products were in the schema has no product columns.
            columns = [c for c in TABLES[name].column_names if c in frame.columns]
            for start in range(0, len(frame), chunk_rows):
                part = frame.iloc[start : start + chunk_rows]
                with self.engine.begin() as connection:
                    self.write({name: records(part, columns)}, connection)
                done += len(part)
                if progress is not None:
                    progress(name, done / total)
            written[name] = len(frame)
        if written and self.engine.dialect.name == "postgresql":
            # Fresh statistics after a bulk load: without them the planner guesses the sizes
            # and scans whole tables for one customer's lookups (10 ms instead of 0.1 ms).
            with self.engine.begin() as connection:
                for table in [*(EVENT_TABLES[n] for n in written), HISTORY_VERSIONS]:
                    connection.execute(sa.text(f'ANALYZE "{table.name}"'))
        return written

    def clear(self) -> None:
        """Delete every event (the tables stay)."""
        with self.engine.begin() as connection:
            for name in reversed(list(TABLES)):
                connection.execute(sa.delete(EVENT_TABLES[name]))

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        with self.engine.connect() as connection:
            return {
                name: int(
                    connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                )
                for name, t in EVENT_TABLES.items()
            }

    # reading

    def histories(
        self, customer_ids: Collection[str], connection: Connection | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Every row about the given customers: their account, orders, refunds, the outcomes of
        those refunds, and their identity links (read on `connection` if given). On PostgreSQL
        the five reads go to the server together, one round trip per 500 customers."""
        ids = sorted(set(customer_ids))
        out: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        if not ids:
            return out
        if connection is None:
            with self.engine.connect() as own:
                return self.histories(ids, own)
        read = (
            _pipelined_histories if connection.dialect.name == "postgresql" else _queried_histories
        )
        for part in _chunks(ids, 500):
            for name, rows in read(connection, part).items():
                out[name].extend(rows)
        return out

    def refund_owners(self, refund_ids: Collection[str]) -> dict[str, str]:
        """The customer of each refund request the store has, of those asked about."""
        refunds = EVENT_TABLES["refund_requests"]
        owners: dict[str, str] = {}
        with self.engine.connect() as connection:
            for part in _chunks(sorted(set(refund_ids)), 500):
                query = sa.select(refunds.c.refund_id, refunds.c.customer_id).where(
                    refunds.c.refund_id.in_(part)
                )
                owners.update({r.refund_id: r.customer_id for r in connection.execute(query)})
        return owners

    def fingerprint_links(
        self, fingerprints: Collection[tuple[str, str]], connection: Connection | None = None
    ) -> list[dict[str, Any]]:
        """Every identity link using one of the (kind, fingerprint) pairs (read on
        `connection` if given)."""
        if connection is None:
            with self.engine.connect() as own:
                return self.fingerprint_links(fingerprints, own)
        wanted = set(fingerprints)
        rows: list[dict[str, Any]] = []
        for part in _chunks(sorted({fp for _, fp in wanted}), 500):
            query = fingerprint_links_query(part)
            for r in connection.execute(query):
                row = dict(r._mapping)
                if (row["kind"], row["fingerprint"]) in wanted:
                    rows.append(row)
        return rows

    def scan(self, name: str, batch_rows: int = 50_000) -> Iterator[list[dict[str, Any]]]:
        """Every row of one table, in batches."""
        with self.engine.connect() as connection:
            result = connection.execution_options(yield_per=batch_rows).execute(
                sa.select(EVENT_TABLES[name])
            )
            for part in result.partitions():
                yield [dict(r._mapping) for r in part]


def _queried_histories(
    connection: Connection, part: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The rows of `EventStore.histories`, one query per table (any database)."""
    t = EVENT_TABLES
    queries = {
        "customers": sa.select(t["customers"]).where(t["customers"].c.customer_id.in_(part)),
        "orders": sa.select(t["orders"]).where(t["orders"].c.customer_id.in_(part)),
        "refund_requests": sa.select(t["refund_requests"]).where(
            t["refund_requests"].c.customer_id.in_(part)
        ),
        "outcomes": sa.select(t["outcomes"])
        .join(
            t["refund_requests"],
            t["refund_requests"].c.refund_id == t["outcomes"].c.refund_id,
        )
        .where(t["refund_requests"].c.customer_id.in_(part)),
        "identity_links": sa.select(t["identity_links"]).where(
            t["identity_links"].c.customer_id.in_(part)
        ),
    }
    return {
        name: [dict(r._mapping) for r in connection.execute(query)]
        for name, query in queries.items()
    }


def _history_sql() -> dict[str, tuple[list[str], str]]:
    """Per table: its columns, and the SQL (psycopg placeholders) reading every row about the
    customers `%(ids)s` (an array)."""
    t = EVENT_TABLES

    def columns(name: str) -> list[str]:
        return [c.name for c in t[name].columns]

    def listed(name: str, alias: str) -> str:
        return ", ".join(f'{alias}."{c}"' for c in columns(name))

    refunds = t["refund_requests"].name
    sql = {
        name: (
            columns(name),
            f"SELECT {listed(name, 'e')} FROM {t[name].name} AS e "
            "WHERE e.customer_id = ANY(%(ids)s)",
        )
        for name in ("customers", "orders", "refund_requests", "identity_links")
    }
    sql["outcomes"] = (
        columns("outcomes"),
        f"SELECT {listed('outcomes', 'e')} FROM {t['outcomes'].name} AS e "
        f"JOIN {refunds} AS r ON r.refund_id = e.refund_id WHERE r.customer_id = ANY(%(ids)s)",
    )
    return sql


_HISTORY_SQL = _history_sql()


def _pipelined_histories(
    connection: Connection, customer_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The rows of `EventStore.histories` on PostgreSQL, its five reads sent together in one
    round trip (psycopg's pipeline mode), on the transaction of `connection`. The driver gives
    the same Python values SQLAlchemy would (datetime, float, int, bool, str)."""
    driver = connection.connection.driver_connection
    assert driver is not None
    cursors = {}
    with driver.pipeline():
        for name, (_, sql) in _HISTORY_SQL.items():
            cursor = driver.cursor()
            cursor.execute(sql, {"ids": list(customer_ids)})
            cursors[name] = cursor
    out: dict[str, list[dict[str, Any]]] = {}
    for name, cursor in cursors.items():
        names = _HISTORY_SQL[name][0]
        out[name] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        cursor.close()
    return out


def bump_versions(
    connection: Connection, rows: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, int]:
    """Add one to the history version of every customer `rows` are about (PostgreSQL), in the
    open transaction of `connection`; the new versions by customer.

    An outcome counts for the owner of its refund, if the store has the refund (an outcome that
    comes first counts when its refund is written, which reads it with the rest).
    """
    customers = sorted({str(r["customer_id"]) for n in _OWNER_KEYED for r in rows.get(n, ())})
    refunds = sorted({str(r["refund_id"]) for r in rows.get("outcomes", ())})
    if not customers and not refunds:
        return {}
    result = connection.execute(_BUMP_SQL, {"customers": customers, "refunds": refunds})
    return {str(customer): int(version) for customer, version in result}


def fingerprint_links_query(fingerprints: Sequence[str]) -> sa.Select[Any]:
    """The identity links using any of `fingerprints` (of any kind); indexed by fingerprint."""
    links = EVENT_TABLES["identity_links"]
    return sa.select(links).where(links.c.fingerprint.in_(fingerprints))


def _chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """Rows of a raw-table frame as driver-ready dicts (None for missing values)."""
    data: dict[str, list[Any]] = {}
    for c in columns:
        series = frame[c]
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            # datetime64[us] turns into datetime objects (NaT into None) in one step.
            data[c] = series.to_numpy(dtype="datetime64[us]").astype(object).tolist()
        else:
            data[c] = [_db_value(v) for v in series.to_numpy(dtype=object)]
    return [dict(zip(columns, row, strict=True)) for row in zip(*data.values(), strict=True)]
