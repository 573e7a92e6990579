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
the next group starts a new process. One that dies again before replying is restarted after a
pause that doubles each time (`RESTART_PAUSE_SECONDS`, up to `RESTART_PAUSE_MOST_SECONDS`);
groups meanwhile fail at once, instead of each starting a process that would die too.

Messages cross the pipe as length-prefixed pickles. The service's end never blocks: a group or
reply larger than the socket's buffer (hundreds of decisions, or a retried batch whose stored
answers all come back) is written and read in parts as the event loop finds the pipe ready. The
recorder's end blocks, as a process with one thing to do may.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import select
import signal
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from features.store import EventStore, create_store_engine
from refund_risk.errors import IdempotencyConflictError
from serving.db import Checkpointer, DecisionLog, tune_sqlite
from serving.idempotency import check_retry, fingerprint
from serving.schemas import RefundDecisionRequest

log = logging.getLogger(__name__)

RESTART_PAUSE_SECONDS = 0.1
"""The pause before starting a recorder process again after the second death in a row..."""
RESTART_PAUSE_MOST_SECONDS = 5.0
"""...doubled with each further death, up to this; a reply ends the series."""

Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """What a group's transaction did."""

    inserted: frozenset[str]
    """Decision ids this group recorded."""
    stored: dict[str, str]
    """Response bodies recorded for the refund ids of the other decisions, by refund id
    (recorded before, by a racing writer, or by another decision of the group), when their
    request was the same."""
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    """The fields that differ, by refund id, for decisions whose refund id was recorded for a
    different request (answered `idempotency_conflict`)."""


@dataclass(frozen=True)
class Failure:
    """A group's transaction failed; nothing of it was recorded."""

    database: bool
    """True when the database refused or could not be reached (the caller may retry)."""
    message: str


def failure_of(exc: Exception) -> Failure:
    """How a failed group's transaction is reported: a database's refusal by the first line of
    its own message (never the statement or its parameters, which hold customers' data), any
    other error as a bug."""
    if isinstance(exc, sa.exc.SQLAlchemyError):
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return Failure(True, lines[0] if lines else type(exc).__name__)
    return Failure(False, f"{type(exc).__name__}: {exc}")


def record_group(
    decisions: DecisionLog,
    store: EventStore,
    connection: Connection,
    rows: Rows,
    refund_rows: Rows,
) -> Outcome:
    """Record decision-log `rows` and, for those recorded, their `refund_rows` (same order), in
    the open transaction of `connection`.

    A row's `request` given as the bytes the request was read from is stored in its canonical
    form (as `RefundDecisionRequest.model_dump_json` on the event loop would), with its
    fingerprint. A decision whose refund id was recorded before is answered with the stored
    response if its request is the same, else with the fields that differ.
    """
    rows = [_canonical(row) for row in rows]
    inserted = decisions.insert_new(connection, rows)
    losers = [r for r in rows if r["decision_id"] not in inserted]
    found = decisions.stored_requests(connection, (r["refund_id"] for r in losers))
    stored: dict[str, str] = {}
    conflicts: dict[str, list[str]] = {}
    for row in losers:
        refund_id = row["refund_id"]
        if refund_id not in found:
            continue
        earlier = found[refund_id]
        try:
            check_retry(refund_id, earlier.request_hash, earlier.request, row["request"])
        except IdempotencyConflictError as exc:
            conflicts[refund_id] = [f for f, _, _ in exc.fields]
        else:
            stored[refund_id] = earlier.response
    pairs = zip(rows, refund_rows, strict=True)
    winners = [refund for r, refund in pairs if r["decision_id"] in inserted]
    if winners:
        store.write({"refund_requests": winners}, connection)
    return Outcome(frozenset(inserted), stored, conflicts)


def _canonical(row: Mapping[str, Any]) -> dict[str, Any]:
    """A decision-log row with its request in canonical form and its fingerprint."""
    request = row["request"]
    if isinstance(request, bytes):
        request = stored_request(request)
    request_hash = row.get("request_hash") or fingerprint(request)
    return {**row, "request": request, "request_hash": request_hash}


def stored_request(raw: bytes) -> str:
    """The stored form of a refund decision request read from `raw` (valid: it was read from
    these bytes before it was decided)."""
    return RefundDecisionRequest.model_validate_json(raw).model_dump_json()


_HEADER = struct.Struct("!Q")
"""A message's length, ahead of its pickle."""


def _frame(message: object) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def _read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes from a blocking `fd`; EOFError if it ends first."""
    parts: list[bytes] = []
    while size:
        part = os.read(fd, min(size, 1 << 20))
        if not part:
            raise EOFError("the pipe was closed")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    """All of `data` to a blocking `fd`."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
    fd = pipe.fileno()
    try:
        while True:
            try:
                (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
                message = pickle.loads(_read_exactly(fd, size))
            except (EOFError, OSError):  # the service is gone
                return
            if message is None:
                return
            rows, refund_rows = message
            reply: Outcome | Failure
            try:
                with engine.begin() as connection:
                    reply = record_group(decisions, store, connection, rows, refund_rows)
            except Exception as exc:  # refused, or a bug: reported to the service, which logs it
                reply = failure_of(exc)
            try:
                _write_all(fd, _frame(reply))
            except OSError:  # the service is gone
                return
    finally:
        if checkpointer is not None:
            checkpointer.stop()
        engine.dispose()


class RecorderProcess:
    """A recorder process for one database, and the service's end of its pipe.

    Not thread-safe: the event loop's thread sends and receives. One group is in flight at a
    time (the caller sees to it). Neither `send` nor `receive` ever blocks: each does what the
    pipe allows and says whether the message is through; the caller calls again when the pipe
    is ready (`fileno`), or waits with `finish`.
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self._pipe: Pipe | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._outgoing = memoryview(b"")
        self._incoming = bytearray()
        self._deaths = 0  # in a row, without a reply between them
        self._restart_at = 0.0

    @property
    def running(self) -> bool:
        """True once started, until stopped or found dead."""
        return self._pipe is not None

    @property
    def pid(self) -> int | None:
        """The process id, while running."""
        return None if self._process is None else self._process.pid

    @property
    def sending(self) -> bool:
        """True while part of a group is still to be written (see `write`)."""
        return bool(self._outgoing)

    @property
    def restarts_in(self) -> float:
        """Seconds until a new process may start (0 unless the last ones kept dying)."""
        return max(0.0, self._restart_at - time.monotonic())

    def start(self) -> None:
        """Start the process (a fork of a clean server process, so no locks, threads or
        connections of the service are inherited). Raises OSError while the pause after
        repeated deaths lasts."""
        pause = self.restarts_in
        if pause > 0:
            raise OSError(
                f"it died {self._deaths} times in a row; the next one starts in {pause:.1f} s"
            )
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
        os.set_blocking(ours.fileno(), False)
        self._pipe, self._process = ours, process
        self._outgoing, self._incoming = memoryview(b""), bytearray()

    def fileno(self) -> int:
        """The pipe's file descriptor: readable when (part of) a reply has come, writable when
        more of a group can be written."""
        assert self._pipe is not None
        return self._pipe.fileno()

    def send(self, rows: Rows, refund_rows: Rows) -> bool:
        """Hand one group to the process, starting it if need be; True when all of it is
        written, False when the rest waits for `write`. Raises OSError if the process is gone."""
        if self._pipe is None:
            self.start()
        self._outgoing = memoryview(_frame((list(rows), list(refund_rows))))
        return self.write()

    def write(self) -> bool:
        """Write what the pipe takes of the group being sent; True when all of it is written.
        Raises OSError if the process is gone."""
        fd = self.fileno()
        while self._outgoing:
            try:
                written = os.write(fd, self._outgoing)
            except BlockingIOError:
                return False
            self._outgoing = self._outgoing[written:]
        return True

    def receive(self) -> Outcome | Failure | None:
        """The reply to the group in flight, or None while only part of it has come. Raises
        EOFError or OSError if the process died."""
        fd = self.fileno()
        while True:
            reply = self._take_reply()
            if reply is not None:
                return reply
            try:
                part = os.read(fd, 1 << 20)
            except BlockingIOError:
                return None
            if not part:
                raise EOFError("the recorder process closed its pipe")
            self._incoming += part

    def _take_reply(self) -> Outcome | Failure | None:
        if len(self._incoming) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._incoming)
        end = _HEADER.size + size
        if len(self._incoming) < end:
            return None
        reply = pickle.loads(self._incoming[_HEADER.size : end])
        del self._incoming[:end]
        assert isinstance(reply, Outcome | Failure)
        self._deaths = 0
        return reply

    def finish(self, timeout: float) -> Outcome | Failure:
        """Write the rest of the group and wait for its reply, away from an event loop; raises
        TimeoutError if `timeout` seconds pass first, EOFError or OSError if the process died."""
        deadline = time.monotonic() + timeout
        fd = self.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            self.write()
            reply = self.receive()
            if reply is not None:
                return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the recorder process did not answer in time")
            poller.modify(fd, select.POLLIN | (select.POLLOUT if self.sending else 0))
            poller.poll(left * 1000)

    def discard(self, died: bool = True) -> None:
        """Forget a process found dead or broken (the next `send` starts a new one, after a
        pause if it was not the first to die in a row); `died=False` for one that was stopped."""
        pipe, process = self._pipe, self._process
        self._pipe = self._process = None
        if died and process is not None:
            self._deaths += 1
            if self._deaths > 1:
                doublings = min(self._deaths - 2, 30)  # past the longest pause anyway
                pause = min(RESTART_PAUSE_SECONDS * 2**doublings, RESTART_PAUSE_MOST_SECONDS)
                self._restart_at = time.monotonic() + pause
        self._outgoing, self._incoming = memoryview(b""), bytearray()
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
            os.set_blocking(pipe.fileno(), True)
            _write_all(pipe.fileno(), _frame(None))
        process.join(timeout=timeout)
        if process.is_alive():
            log.warning("the recorder process did not stop in %.0f s; killing it", timeout)
        self.discard(died=False)
