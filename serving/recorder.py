"""The decision-log recorder: the transaction that records a group of decisions, and a process
that runs it beside the event loop.

`record_group` is the one transaction (see `serving.writer`): insert each decision unless its
refund id is already recorded, append the winners' refund requests to the event store, read back
the stored answers of the losers. It runs either on the event loop's thread or, by default, in a
recorder process of its own (`RecorderProcess`), so the database's work (SQL, commit, disk flush,
WAL checkpoints, and on PostgreSQL the round trips) runs on another core while the event loop
decides the next requests. A thread would not do: the writer and the event loop then take turns
at Python's lock, which made every decision dearer when measured.

The event loop sends one group at a time over a pipe and answers the group's requests when the
process replies that it committed; requests that arrive meanwhile form the next group. A process
that dies or a pipe that breaks fails the group in flight (503, nothing returned unrecorded) and
the next group starts a new process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from features.store import EventStore, create_store_engine
from serving.db import Checkpointer, DecisionLog, tune_sqlite

log = logging.getLogger(__name__)

Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """What a group's transaction did."""

    inserted: frozenset[str]
    """Refund ids whose decision this group recorded."""
    stored: dict[str, str]
    """Response bodies already recorded for the other refund ids (lost races)."""


@dataclass(frozen=True)
class Failure:
    """A group's transaction failed; nothing of it was recorded."""

    database: bool
    """True when the database refused or could not be reached (the caller may retry)."""
    message: str


def record_group(
    decisions: DecisionLog,
    store: EventStore,
    connection: Connection,
    rows: Rows,
    refund_rows: Rows,
) -> Outcome:
    """Record decision-log `rows` and, for those recorded, their `refund_rows` (same order), in
    the open transaction of `connection`."""
    inserted = decisions.insert_new(connection, rows)
    losers = [r["refund_id"] for r in rows if r["refund_id"] not in inserted]
    stored = decisions.responses(connection, losers)
    pairs = zip(rows, refund_rows, strict=True)
    winners = [refund for r, refund in pairs if r["refund_id"] in inserted]
    if winners:
        store.write({"refund_requests": winners}, connection)
    return Outcome(frozenset(inserted), stored)


def _serve(pipe: Pipe, url: str, schema: str | None) -> None:
    """The recorder process: record each group the pipe brings, reply with its outcome."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service stops it, after the last group
    engine = create_store_engine(url, schema=schema)
    tune_sqlite(engine)
    decisions = DecisionLog(engine)
    store = EventStore(engine)
    checkpointer = Checkpointer.for_engine(engine)
    if checkpointer is not None:
        checkpointer.start()
    try:
        while True:
            try:
                message = pipe.recv()
            except EOFError:  # the service is gone
                return
            if message is None:
                return
            rows, refund_rows = message
            reply: Outcome | Failure
            try:
                with engine.begin() as connection:
                    reply = record_group(decisions, store, connection, rows, refund_rows)
            except sa.exc.SQLAlchemyError as exc:
                reply = Failure(
                    True, str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                )
            except Exception as exc:  # a bug: reported to the service, which logs it
                reply = Failure(False, f"{type(exc).__name__}: {exc}")
            pipe.send(reply)
    finally:
        if checkpointer is not None:
            checkpointer.stop()
        engine.dispose()


class RecorderProcess:
    """A recorder process for one database, and the service's end of its pipe.

    Not thread-safe: the event loop's thread sends and receives. One group is in flight at a
    time (the caller sees to it), so a send never waits for more than the process to read.
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self._pipe: Pipe | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    @property
    def running(self) -> bool:
        """True once started, until stopped or found dead."""
        return self._pipe is not None

    @property
    def pid(self) -> int | None:
        """The process id, while running."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the process (a fork of a clean server process, so no locks, threads or
        connections of the service are inherited)."""
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(theirs, self.url, self.schema),
            name="refund-risk-recorder",
            daemon=True,
        )
        process.start()
        theirs.close()
        self._pipe, self._process = ours, process

    def fileno(self) -> int:
        """The pipe's file descriptor: readable when a reply has come."""
        assert self._pipe is not None
        return self._pipe.fileno()

    def send(self, rows: Rows, refund_rows: Rows) -> None:
        """Hand one group to the process; raises OSError if it is gone."""
        if self._pipe is None:
            self.start()
        assert self._pipe is not None
        self._pipe.send((list(rows), list(refund_rows)))

    def receive(self, timeout: float | None = None) -> Outcome | Failure:
        """The reply to the group in flight; raises EOFError or OSError if the process died
        (and TimeoutError if `timeout` seconds pass first)."""
        assert self._pipe is not None
        if timeout is not None and not self._pipe.poll(timeout):
            raise TimeoutError("the recorder process did not answer in time")
        reply = self._pipe.recv()
        assert isinstance(reply, Outcome | Failure)
        return reply

    def discard(self) -> None:
        """Forget a process found dead or broken (the next `send` starts a new one)."""
        pipe, process = self._pipe, self._process
        self._pipe = self._process = None
        if pipe is not None:
            pipe.close()
        if process is not None:
            process.kill()
            process.join(timeout=5)

    def stop(self, timeout: float = 10.0) -> None:
        """Let the process finish (nothing may be in flight) and wait for it to end."""
        pipe, process = self._pipe, self._process
        if pipe is None or process is None:
            return
        with contextlib.suppress(OSError):
            pipe.send(None)
        process.join(timeout=timeout)
        if process.is_alive():
            log.warning("the recorder process did not stop in %.0f s; killing it", timeout)
        self.discard()
