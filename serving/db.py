"""The service's own tables: the decision log, review cases, overrides and API keys.

SQLAlchemy 2 Core tables, created and upgraded by the Alembic migrations under
`serving/migrations/`, run from code. They live in the same database as the event store (one
engine, so a decision and the refund request it appends commit in one transaction) and keep
their own Alembic version table, so the two migration histories never meet.

The decision log is append-only and keyed twice: `decision_id` (what callers quote) and
`refund_id` (the idempotency key, unique, so two racing writers cannot both record a decision
for the same refund request). Each row keeps the exact JSON body that was returned, the inputs
as received and the feature values used, so a stored decision can be replayed byte for byte and
explained later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from features.store import EVENT_TABLES
from refund_risk.database import migrations
from refund_risk.database.bulk import BulkInsert
from refund_risk.database.migrations import hold_migration_lock

log = logging.getLogger(__name__)

VERSION_TABLE = "serving_alembic_version"
"""Alembic's version table for the service's tables; the event store keeps its own."""

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

metadata = sa.MetaData()

DECISIONS = sa.Table(
    "serving_decisions",
    metadata,
    sa.Column("decision_id", sa.String(), primary_key=True),
    sa.Column("refund_id", sa.String(), nullable=False, unique=True),
    sa.Column("customer_id", sa.String(), nullable=False, index=True),
    sa.Column("decided_at", sa.DateTime(), nullable=False, index=True),
    sa.Column("action", sa.String(), nullable=False),
    sa.Column("rule_id", sa.String(), nullable=False),
    sa.Column("degraded", sa.Boolean(), nullable=False),
    sa.Column("abuse_score", sa.Double(), nullable=True),
    sa.Column("tier", sa.String(), nullable=False),
    sa.Column("amount_requested", sa.Double(), nullable=False),
    sa.Column("abuse_model_version", sa.String(), nullable=True),
    sa.Column("tier_model_version", sa.String(), nullable=True),
    sa.Column("policy_hash", sa.String(), nullable=False),
    sa.Column("feature_version", sa.String(), nullable=False),
    sa.Column("response", sa.Text(), nullable=False),
    sa.Column("request", sa.Text(), nullable=False),
    sa.Column("features", sa.Text(), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=True),
)
"""One row per decided refund request. `request` is the request in its canonical form and
`request_hash` its SHA-256 (`serving.idempotency`): the refund id is bound to that request
(NULL only in a row written without it; its stored request is then hashed when needed).
`features` is a JSON array of the values in the order
of `FEATURE_SETS.names` for the row's feature version: names are stored once per version, not
in every row (they would triple its size, and on this kind of disk bytes written cost time)."""

FEATURE_SETS = sa.Table(
    "serving_feature_sets",
    metadata,
    sa.Column("feature_version", sa.String(), primary_key=True),
    sa.Column("names", sa.Text(), nullable=False),
)
"""The feature names, in row order, of each feature version decisions were made with."""

API_KEYS = sa.Table(
    "serving_api_keys",
    metadata,
    sa.Column("key_id", sa.String(), primary_key=True),
    sa.Column("role", sa.String(), nullable=False),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("salt", sa.String(), nullable=False),
    sa.Column("secret_hash", sa.String(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("revoked_at", sa.DateTime(), nullable=True),
)
"""API keys: a salted hash of each secret, never the secret itself."""

REVIEW_CASES = sa.Table(
    "serving_review_cases",
    metadata,
    sa.Column("case_id", sa.String(), primary_key=True),
    sa.Column("refund_id", sa.String(), nullable=False, unique=True),
    sa.Column("customer_id", sa.String(), nullable=False, index=True),
    sa.Column("opened_at", sa.DateTime(), nullable=False, index=True),
    sa.Column("status", sa.String(), nullable=False, index=True),
    sa.Column("claimed_by", sa.String(), nullable=True),
    sa.Column("claimed_until", sa.DateTime(), nullable=True),
    sa.Column("resolved_at", sa.DateTime(), nullable=True, index=True),
    sa.Column("version", sa.Integer(), nullable=False),
)
"""One case per `manual_review` decision (the case id is the decision id), opened in the
transaction that records the decision. `status` is `open` or `resolved`; a claim is a reviewer's
key id and the moment it lapses; `version` counts changes (compare-and-set)."""

REVIEW_RESOLUTIONS = sa.Table(
    "serving_review_resolutions",
    metadata,
    sa.Column("case_id", sa.String(), primary_key=True),
    sa.Column("refund_id", sa.String(), nullable=False),
    sa.Column("decision", sa.String(), nullable=False),
    sa.Column("amount", sa.Double(), nullable=True),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Column("reviewer", sa.String(), nullable=False),
    sa.Column("resolved_at", sa.DateTime(), nullable=False, index=True),
    sa.Column("outcome_id", sa.String(), nullable=False),
)
"""What a reviewer decided; at most one per case (the primary key), never overwritten."""

TIER_PINS = sa.Table(
    "serving_tier_pins",
    metadata,
    sa.Column("pin_id", sa.String(), primary_key=True),
    sa.Column("customer_id", sa.String(), nullable=False, index=True),
    sa.Column("tier", sa.String(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("created_by", sa.String(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.Column("removed_at", sa.DateTime(), nullable=True),
)
"""Analysts' tier pins: the pinned tier replaces the model's until `expires_at`. Rows are kept
(a newer pin or a removal ends an older one) so decisions can be explained later."""

WATCHLIST = sa.Table(
    "serving_watchlist",
    metadata,
    sa.Column("entry_id", sa.String(), primary_key=True),
    sa.Column("customer_id", sa.String(), nullable=False, index=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("created_by", sa.String(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("until", sa.DateTime(), nullable=True),
    sa.Column("removed_at", sa.DateTime(), nullable=True),
)
"""Accounts on the analysts' watch list (until a moment, or until removed)."""


ALERT_STATE = sa.Table(
    "serving_alert_state",
    metadata,
    sa.Column("rule_id", sa.String(), primary_key=True),
    sa.Column("subject", sa.String(), primary_key=True),
    sa.Column("firing", sa.Boolean(), nullable=False),
    sa.Column("changed_at", sa.DateTime(), nullable=False),
)
"""Whether each alert is firing for each subject: an alert is sent when this turns on."""

ALERT_EVENTS = sa.Table(
    "serving_alert_events",
    metadata,
    sa.Column("event_id", sa.String(), primary_key=True),
    sa.Column("rule_id", sa.String(), nullable=False),
    sa.Column("subject", sa.String(), nullable=False),
    sa.Column("fired_at", sa.DateTime(), nullable=False, index=True),
    sa.Column("observed", sa.Double(), nullable=False),
    sa.Column("expected", sa.Double(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("delivered", sa.Boolean(), nullable=False),
)
"""Every alert that fired, once per episode."""

ALERT_DELIVERIES = sa.Table(
    "serving_alert_deliveries",
    metadata,
    sa.Column("event_id", sa.String(), primary_key=True),
    sa.Column("target", sa.String(), primary_key=True),
    sa.Column("attempt", sa.Integer(), primary_key=True),
    sa.Column("attempted_at", sa.DateTime(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
)
"""Each attempt to deliver an alert to a webhook, with what came back."""


def alembic_config(connection: Connection) -> Config:
    """An Alembic configuration in code for the service's migrations, bound to `connection`."""
    return migrations.alembic_config(connection, MIGRATIONS_DIR)


def migrate(engine: Engine) -> None:
    """Bring the service's tables up to the latest migration."""
    with engine.begin() as connection:
        hold_migration_lock(connection)
        command.upgrade(alembic_config(connection), "head")


class _RandomBytes:
    """The operating system's random bytes, read a few kilobytes at a time: one system call
    per 400 decision ids instead of one each (it showed as 2% of a decision's time)."""

    def __init__(self, chunk: int = 4000) -> None:
        self._chunk = chunk
        self._buffer = b""
        self._at = 0
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop what is left (a forked child must not hand out its parent's bytes again)."""
        self._buffer, self._at, self._lock = b"", 0, threading.Lock()

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._at + size > len(self._buffer):
                self._buffer, self._at = os.urandom(max(self._chunk, size)), 0
            taken = self._buffer[self._at : self._at + size]
            self._at += size
            return taken


_random_bytes = _RandomBytes()
os.register_at_fork(after_in_child=_random_bytes.forget)


def new_decision_id() -> str:
    """A unique id that sorts by creation time: 48 bits of milliseconds, 80 random bits.

    Time-ordered ids are appended at the end of the primary-key index instead of landing on a
    random page of it, so a transaction of many decisions touches few index pages.
    """
    return f"{time.time_ns() // 1_000_000:012x}{_random_bytes.take(10).hex()}"


def record_feature_names(engine: Engine, feature_version: str, names: Sequence[str]) -> None:
    """Store the feature names of a feature version, once."""
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = insert(FEATURE_SETS).on_conflict_do_nothing(index_elements=["feature_version"])
    with engine.begin() as connection:
        connection.execute(
            statement, {"feature_version": feature_version, "names": json.dumps(list(names))}
        )


def tune_sqlite(engine: Engine, checkpoint_pages: int = 50_000) -> None:
    """Move SQLite's WAL checkpoints off the request path (see `Checkpointer`).

    By default a commit that finds 1,000 pages in the write-ahead log copies them into the
    database there and then; on this kind of disk that tripled the cost of recording a
    decision. The service's connections only checkpoint past `checkpoint_pages` (a backstop),
    and the checkpointer thread does it in the background.
    """
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def _late_checkpoints(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
        cursor.close()


class Checkpointer:
    """A daemon thread that checkpoints a SQLite database's WAL every `interval` seconds.

    Passive checkpoints copy what they can without waiting for readers or writers, so requests
    never wait for one; the copying runs in SQLite's C code, outside Python's global lock.
    """

    def __init__(self, path: str, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    @classmethod
    def for_engine(cls, engine: Engine, interval: float = 1.0) -> Checkpointer | None:
        """A checkpointer for a file-backed SQLite engine; None for anything else."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return cls(url.database, interval)

    def start(self) -> None:
        """Start checkpointing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop, after one last checkpoint."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False)
        try:
            while True:
                stopping = self._stop.wait(self.interval)
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or gone: the next round tries again
                    log.debug("checkpoint skipped: %s", exc)
                if stopping:
                    return
        finally:
            connection.close()


class PointReader:
    """One long-lived autocommit connection for the event loop's small reads.

    Checking a connection out of the pool costs more than a primary-key read (SQLAlchemy sets
    up each checkout's events); autocommit means no transaction is held open between reads, so
    each read sees the latest commit. A connection that broke is replaced on the next read.
    Not thread-safe: for the event loop's thread only.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None

    def execute(self, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Run a read; returns SQLAlchemy's result (consume it before the next read)."""
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._connection = connection
        try:
            return connection.execute(statement, params)
        except sa.exc.DBAPIError:
            self.close()
            raise

    def close(self) -> None:
        """Give the connection back."""
        if self._connection is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._connection.close()
            self._connection = None


def ping(engine: Engine) -> None:
    """Run a trivial query; raises the driver's error when the database does not answer."""
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1")).scalar_one()


class StoredRequest(NamedTuple):
    """What the log holds for a refund id, to tell a retry from a conflicting request."""

    response: str
    request_hash: str | None
    request: str


class DecisionLog:
    """Reads and writes of the decision log (statements built once: building costs more than
    running them)."""

    def __init__(self, engine: Engine, reader: PointReader | None = None) -> None:
        self.engine = engine
        self.reader = reader or PointReader(engine)
        dialect = engine.dialect
        # Insert-or-nothing on the idempotency key: the rows that are written are the ones this
        # writer recorded; a row that is not lost to an earlier decision, which is read back.
        self._insert = BulkInsert(
            dialect,
            DECISIONS,
            conflict=lambda s: s.on_conflict_do_nothing(index_elements=["refund_id"]),
            returning="decision_id" if dialect.name == "postgresql" else None,
        )
        self._recorded = sa.select(DECISIONS.c.refund_id).where(
            DECISIONS.c.refund_id.in_(sa.bindparam("ids", expanding=True))
        )
        self._open_cases = BulkInsert(dialect, REVIEW_CASES)
        self._by_refund = sa.select(DECISIONS.c.response).where(
            DECISIONS.c.refund_id == sa.bindparam("refund_id")
        )
        self._stored_by_refund = sa.select(
            DECISIONS.c.response, DECISIONS.c.request_hash, DECISIONS.c.request
        ).where(DECISIONS.c.refund_id == sa.bindparam("refund_id"))

    def insert_new(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
        """Record the rows whose refund id is not recorded yet (of rows that share one, one
        is); return the decision ids recorded.

        Each recorded `manual_review` decision opens its review case in the same transaction,
        so no case can be lost between the decision and the queue.
        """
        if not self._insert.postgresql and rows:
            # SQLite tells how many rows it wrote, not which: rows of refund ids recorded
            # before are left out first, so a decision id found after the write is this
            # write's (unless a racing writer took the refund id meanwhile: then it is absent).
            ids = [row["refund_id"] for row in rows]
            known = set(connection.execute(self._recorded, {"ids": ids}).scalars())
            if known:
                rows = [row for row in rows if row["refund_id"] not in known]
        if not rows:
            return set()
        result = self._insert.run(connection, [_in_order(row, _DECISION_COLUMNS) for row in rows])
        if self._insert.postgresql:
            inserted = set(result.scalars())
        elif result.rowcount == len(rows):
            inserted = {row["decision_id"] for row in rows}
        else:  # a racing writer, or two rows of one refund id: which ones were written
            ids = [row["decision_id"] for row in rows]
            query = sa.select(DECISIONS.c.decision_id).where(DECISIONS.c.decision_id.in_(ids))
            inserted = set(connection.execute(query).scalars())
        cases = [
            _in_order(case_row(row), _CASE_COLUMNS)
            for row in rows
            if row["action"] == REVIEW_ACTION and row["decision_id"] in inserted
        ]
        if cases:
            self._open_cases.run(connection, cases)
        return inserted

    def responses(self, connection: Connection, refund_ids: Iterable[str]) -> dict[str, str]:
        """The stored response bodies of these refund requests, by refund id."""
        ids = sorted(set(refund_ids))
        if not ids:
            return {}
        query = sa.select(DECISIONS.c.refund_id, DECISIONS.c.response).where(
            DECISIONS.c.refund_id.in_(ids)
        )
        return {r.refund_id: r.response for r in connection.execute(query)}

    def stored_requests(
        self, connection: Connection, refund_ids: Iterable[str]
    ) -> dict[str, StoredRequest]:
        """The stored response, request fingerprint and canonical request of these refund
        requests, by refund id."""
        ids = sorted(set(refund_ids))
        if not ids:
            return {}
        query = sa.select(
            DECISIONS.c.refund_id,
            DECISIONS.c.response,
            DECISIONS.c.request_hash,
            DECISIONS.c.request,
        ).where(DECISIONS.c.refund_id.in_(ids))
        return {
            r.refund_id: StoredRequest(r.response, r.request_hash, r.request)
            for r in connection.execute(query)
        }

    def stored_for(self, refund_id: str) -> StoredRequest | None:
        """The stored response, request fingerprint and canonical request of one refund
        request, if it was decided."""
        row = self.reader.execute(self._stored_by_refund, {"refund_id": refund_id}).first()
        return None if row is None else StoredRequest(row.response, row.request_hash, row.request)

    def response_for(self, refund_id: str) -> str | None:
        """The stored response body of one refund request, if it was decided."""
        return self.reader.execute(self._by_refund, {"refund_id": refund_id}).scalar()

    def get(self, decision_id: str) -> dict[str, Any] | None:
        """One stored decision row by its decision id, or by its refund id, with the names of
        its features (`feature_names`, a JSON array; None if unknown)."""
        query = (
            sa.select(DECISIONS, FEATURE_SETS.c.names.label("feature_names"))
            .outerjoin(FEATURE_SETS, FEATURE_SETS.c.feature_version == DECISIONS.c.feature_version)
            .where(
                sa.or_(DECISIONS.c.decision_id == decision_id, DECISIONS.c.refund_id == decision_id)
            )
        )
        with self.engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(query)]
        # A decision id wins over a refund id that happens to be spelt the same.
        rows.sort(key=lambda r: r["decision_id"] != decision_id)
        return rows[0] if rows else None

    def open_exposures(self) -> list[tuple[str, str, float]]:
        """(customer, refund, amount) of refunds paid before return whose outcome is not known.

        A refund paid before the goods are back (`serving.exposure.pays_before_return`: a
        refund before return, or an approval of a shipped order) stays open until any outcome
        about it arrives (the warehouse check of the returned item, or a finding that closes
        the case).
        """
        query = sa.select(
            DECISIONS.c.customer_id, DECISIONS.c.refund_id, DECISIONS.c.amount_requested
        ).where(_open_exposure())
        with self.engine.connect() as connection:
            return [(r[0], r[1], float(r[2])) for r in connection.execute(query)]

    def outstanding(self, connection: Connection, customer_id: str) -> float:
        """The customer's open exposure (see `open_exposures`), as `connection` sees it: read
        under the customer's lock, it is what every process has committed."""
        query = sa.select(sa.func.coalesce(sa.func.sum(DECISIONS.c.amount_requested), 0.0)).where(
            DECISIONS.c.customer_id == customer_id, _open_exposure()
        )
        return float(connection.execute(query).scalar_one())

    def count(self) -> int:
        """Decisions recorded."""
        with self.engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(DECISIONS)
            return int(connection.execute(query).scalar_one())


def _open_exposure() -> sa.ColumnElement[bool]:
    """A decision that paid before the goods were back, with no outcome of its refund yet."""
    outcomes = EVENT_TABLES["outcomes"]
    refunds = EVENT_TABLES["refund_requests"]
    approved_shipped = sa.and_(
        DECISIONS.c.action == "auto_approve",
        sa.exists().where(
            refunds.c.refund_id == DECISIONS.c.refund_id,
            refunds.c.order_stage != "not_shipped",
        ),
    )
    return sa.and_(
        sa.or_(DECISIONS.c.action == "refund_before_return", approved_shipped),
        ~sa.exists().where(outcomes.c.refund_id == DECISIONS.c.refund_id),
    )


_DECISION_COLUMNS = tuple(c.name for c in DECISIONS.columns)
_CASE_COLUMNS = tuple(c.name for c in REVIEW_CASES.columns)


def _in_order(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    """A row's values in its table's column order."""
    return tuple(row[c] for c in columns)


REVIEW_ACTION = "manual_review"
"""The action whose decisions open a review case."""


def case_row(decision: Mapping[str, Any]) -> dict[str, Any]:
    """The open review case of a decision-log row."""
    return {
        "case_id": decision["decision_id"],
        "refund_id": decision["refund_id"],
        "customer_id": decision["customer_id"],
        "opened_at": decision["decided_at"],
        "status": "open",
        "claimed_by": None,
        "claimed_until": None,
        "resolved_at": None,
        "version": 0,
    }


def decision_row(
    *,
    decision_id: str,
    refund_id: str,
    customer_id: str,
    decided_at: datetime,
    action: str,
    rule_id: str,
    degraded: bool,
    abuse_score: float | None,
    tier: str,
    amount_requested: float,
    abuse_model_version: str | None,
    tier_model_version: str | None,
    policy_hash: str,
    feature_version: str,
    response: str,
    request: str | bytes,
    features: str,
    request_hash: str | None = None,
) -> dict[str, Any]:
    """A decision-log row; keyword-only, so a column can never be filled by position. A
    `request` in bytes is the body it was read from, written out in its canonical form when it
    is recorded (`serving.recorder.record_group`), which also fills in a missing
    `request_hash`."""
    return {
        "decision_id": decision_id,
        "refund_id": refund_id,
        "customer_id": customer_id,
        "decided_at": decided_at,
        "action": action,
        "rule_id": rule_id,
        "degraded": degraded,
        "abuse_score": abuse_score,
        "tier": tier,
        "amount_requested": amount_requested,
        "abuse_model_version": abuse_model_version,
        "tier_model_version": tier_model_version,
        "policy_hash": policy_hash,
        "feature_version": feature_version,
        "response": response,
        "request": request,
        "features": features,
        "request_hash": request_hash,
    }
