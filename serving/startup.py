"""Starting a served process: what is checked before it listens, and what it says while the
history and models load.

A served process (`refund-risk serve`, `serving.asgi:app`) checks at once what can make it fail
for good (the policy files, the database, and on SQLite that no other process serves the same
file), so a broken configuration stops it with one sentence and a non-zero exit before it
answers anything. The slow part (the event history, the models) then loads in a thread while
the process already answers `/healthz`; `/readyz` says it is starting until it can decide.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from refund_risk.errors import ConfigurationError
from refund_risk.settings import Settings
from serving.schemas import CheckOut

log = logging.getLogger(__name__)

SQLITE_ONE_PROCESS = (
    "SQLite serves from one process only: each process would keep its own copy of the "
    "history and of the unreturned value paid out, and their decisions would drift apart. "
    "For several workers or instances, point REFUND_RISK_DATABASE_URL at PostgreSQL "
    "(postgresql+psycopg://...)"
)


def sqlite_file(database_url: str) -> Path | None:
    """The database file of a SQLite URL (None for another database or an in-memory one)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser().resolve()


def is_sqlite(database_url: str) -> bool:
    """Whether the URL names a SQLite database (file or memory)."""
    return make_url(database_url).get_backend_name() == "sqlite"


class SingleProcessLock:
    """An exclusive lock, held while the process serves, on a file beside the SQLite database.

    The operating system releases it when the process ends, however it ends, so a crashed
    server never leaves it behind.
    """

    def __init__(self, handle: IO[str], path: Path) -> None:
        self._handle = handle
        self.path = path

    @classmethod
    def take(cls, database: Path) -> SingleProcessLock:
        """Take the lock, or say which process holds it."""
        path = database.with_name(database.name + ".serving.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigurationError(
                f"{database} is already served by process {holder}. {SQLITE_ONE_PROCESS}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return cls(handle, path)

    def release(self) -> None:
        """Let another process serve the database."""
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()


def preflight(settings: Settings) -> SingleProcessLock | None:
    """What must hold before a served process listens: the policy files load, the database
    answers, and a SQLite file is served by this process alone (the lock is returned; release
    it on shutdown). Raises `ConfigurationError` with the sentence to print."""
    from features.store import settings_engine
    from serving.scoring import load_policy_set

    assert settings.database_url is not None
    load_policy_set(settings.policy_path, settings.tiers_path)
    database = sqlite_file(settings.database_url)
    lock = SingleProcessLock.take(database) if database is not None else None
    try:
        engine = settings_engine(settings)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1")).scalar_one()
        except sa.exc.SQLAlchemyError as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise ConfigurationError(
                f"the database at {make_url(settings.database_url).render_as_string()} is not "
                f"reachable: {first[0] if first else type(exc).__name__}"
            ) from None
        finally:
            engine.dispose()
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


@dataclass
class StartState:
    """How far a served process has got in loading what it decides with."""

    began: float = field(default_factory=time.monotonic)
    failure: str | None = None

    def check(self) -> CheckOut:
        """The `start` check of readiness while the service is not built."""
        if self.failure is not None:
            return CheckOut(ok=False, detail=f"the service failed to start: {self.failure}")
        return CheckOut(
            ok=False,
            detail="starting: loading the event history and the models "
            f"({time.monotonic() - self.began:.0f} s so far)",
        )


def history_check(engine: Engine, required: bool) -> CheckOut:
    """Whether the event store holds any history: an empty one makes every customer look new
    (most often the history was ingested into another database or schema)."""
    from features.store import EVENT_TABLES

    schema = None
    with engine.connect() as connection:
        orders = sa.select(sa.literal(1)).select_from(EVENT_TABLES["orders"]).limit(1)
        found = connection.execute(orders).first() is not None
        if not found and engine.dialect.name == "postgresql":
            schema = connection.execute(sa.text("SELECT current_schema()")).scalar()
    if found:
        return CheckOut(ok=True, detail="the event store holds history")
    database = engine.url.render_as_string()
    where = database + (f" (schema {schema})" if schema else "")
    detail = (
        f"the event store at {where} holds no orders, so every customer would be decided as "
        "new; load the history with `refund-risk features ingest <raw dir>` under the same "
        "REFUND_RISK_DATABASE_URL and REFUND_RISK_DATABASE_SCHEMA"
    )
    if not required:
        detail += " (not required: REFUND_RISK_REQUIRE_HISTORY=false)"
    return CheckOut(ok=not required, detail=detail)
