"""Recording decisions: group commit of the decision log and the refund requests it appends.

Every decision is stored before it is returned. One transaction per decision would cost a
commit each (on PostgreSQL a disk flush of milliseconds); instead, the decisions made during one
turn of the event loop wait for one transaction that records them all, and each request is
answered when that transaction has committed. Under light load a "group" is one decision; under
heavy load, tens: the cost of a commit is shared.

The transaction (`serving.recorder.record_group`) inserts each decision unless its refund id is
already recorded (another process won a race), appends the winners' refund requests to the event
store, and reads back the stored answers of the losers (a loser whose refund id was recorded for
a different request gets `IdempotencyConflictError`, naming the fields that differ). Once it
has committed, the winners' refund requests are taken into the online builder's memory, so the
next request of the customer sees them. If it fails, every decision in it fails with
`DatabaseUnavailableError`: nothing is returned that is not recorded.

By default the transaction runs in the service's recorder process (`RecorderProcess`): one
group in flight at a time, the next group gathering meanwhile, so the event loop decides while
the database works on another core. With `record_in_process` off (and always for an in-memory
SQLite database) it runs on the event loop's thread, when the turn's callbacks are done.

A request whose customer has a decision waiting for this transaction waits for it first
(`settled`), so its features include that refund request, as they would had the two arrived
further apart: decisions of one customer are made one after the other, never side by side.

With a recorder process, no request waits longer than the writer's `timeout` for its own
decision and any earlier one of its customer to be recorded (a lock held elsewhere, a database
gone quiet): it is answered with `DatabaseUnavailableError` (503) then, and its decision stays
in its group. If the group is recorded later, the caller's retry with the same refund id gets
that decision back; if not, the retry decides anew. Either way nothing was returned unrecorded.
(Recording on the event loop's thread blocks the loop instead, timers included.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from features.online import OnlineFeatureBuilder
from features.store import EventStore
from serving.db import DecisionLog
from serving.errors import DatabaseUnavailableError
from serving.idempotency import conflict
from serving.recorder import Failure, Outcome, RecorderProcess, failure_of, record_group

log = logging.getLogger(__name__)

FAILED_GROUPS_UNREADY = 3
"""After this many groups in a row failed to be recorded, the service says it is not ready..."""
FAILURE_MEMORY_SECONDS = 30.0
"""...until one is recorded, or this long has passed since the last failure (so that, with no
traffic sent its way meanwhile, it is tried again)."""
STUCK_SECONDS = 10.0
"""A group in flight this long (a lock held elsewhere, a database gone quiet) makes the service
say it is not ready."""


class PendingDecision(NamedTuple):
    """A decision waiting to be recorded."""

    row: dict[str, Any]
    """The decision-log row (see `serving.db.decision_row`)."""
    refund_row: dict[str, Any]
    """The refund request, as the event store keeps it."""
    category: str = ""
    """The order's goods category, for the metrics by category."""

    @property
    def refund_id(self) -> str:
        """The idempotency key."""
        return str(self.row["refund_id"])

    @property
    def decision_id(self) -> str:
        """The decision's own id."""
        return str(self.row["decision_id"])

    @property
    def customer_id(self) -> str:
        """Whose refund request it is."""
        return str(self.row["customer_id"])


class Recorded(NamedTuple):
    """What the database holds for a refund id after the write."""

    response: str
    replayed: bool
    """True when another writer had recorded a decision for this refund id first."""


class _Group:
    """Decisions recorded in one transaction, each with its caller's future, and a future
    done once they all have their answer (a customer with a decision in the group waits on
    it: `DecisionWriter.settled`)."""

    __slots__ = ("deadline", "decisions", "settled", "since")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.decisions: list[tuple[PendingDecision, asyncio.Future[Recorded]]] = []
        self.since: list[float] = []
        """When each decision's request began to wait (the event loop's clock)."""
        self.settled: asyncio.Future[None] = loop.create_future()
        self.deadline: asyncio.TimerHandle | None = None
        """Set for the earliest time a waiting request's is up (`DecisionWriter.timeout`)."""


class DecisionWriter:
    """Collects decisions and records each group of them in one transaction.

    With a `recorder` process the transaction runs there, one group in flight at a time;
    without one (an in-memory database, or when configured so) it runs here, on the event
    loop's thread, when the turn's callbacks are done. With a recorder, a request waits at
    most `timeout` seconds for its decision to be recorded.
    """

    def __init__(
        self,
        log_: DecisionLog,
        store: EventStore,
        builder: OnlineFeatureBuilder,
        on_recorded: Callable[[Sequence[PendingDecision], int], None],
        recorder: RecorderProcess | None = None,
        timeout: float = 5.0,
        on_timeout: Callable[[int], None] | None = None,
    ) -> None:
        self.log = log_
        self.store = store
        self.builder = builder
        self.on_recorded = on_recorded
        self.recorder = recorder
        self.timeout = timeout
        self.on_timeout = on_timeout
        """Told how many requests were just answered 503 for want of time."""
        self._pending: _Group | None = None  # gathering now
        self._in_flight: _Group | None = None  # handed to the recorder process
        # The loop watching the recorder's pipe: (loop, process id, file descriptor).
        self._watching: tuple[asyncio.AbstractEventLoop, int | None, int] | None = None
        self._sent_at = 0.0
        self._scheduled = False
        self._unsettled: dict[str, asyncio.Future[None]] = {}
        self._failed_at: deque[float] = deque(maxlen=FAILED_GROUPS_UNREADY)
        self._last_failure = ""

    @property
    def in_flight(self) -> int:
        """Decisions handed to the recorder process and not answered yet."""
        return 0 if self._in_flight is None else len(self._in_flight.decisions)

    def problem(self) -> str | None:
        """Why decisions cannot be recorded now: the last groups all failed lately, or the
        group in flight has waited too long for the recorder process."""
        if self._in_flight is not None:
            waited = time.monotonic() - self._sent_at
            if waited > STUCK_SECONDS:
                return (
                    f"a group of {self.in_flight} decisions has waited {waited:.0f} s "
                    "for the recorder process"
                )
        failed = self._failed_at
        if len(failed) < FAILED_GROUPS_UNREADY:
            return None
        if time.monotonic() - failed[-1] > FAILURE_MEMORY_SECONDS:
            return None
        return (
            f"the last {len(failed)} groups of decisions could not be recorded "
            f"(answered 503): {self._last_failure}"
        )

    async def record(self, decision: PendingDecision, since: float | None = None) -> Recorded:
        """Wait until the decision (or a racing writer's) is recorded; raise if it is not, or
        if `timeout` seconds pass from `since` (the event loop's clock; default: now)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Recorded] = loop.create_future()
        since = loop.time() if since is None else since
        group = self._pending
        if group is None:
            group = self._pending = _Group(loop)
        group.decisions.append((decision, future))
        group.since.append(since)
        # One timer per group, not per request, set for the request whose time is up first.
        due = since + self.timeout
        if group.deadline is None or due < group.deadline.when():
            if group.deadline is not None:
                group.deadline.cancel()
            group.deadline = loop.call_at(due, self._expire, group)
        self._unsettled[decision.customer_id] = group.settled
        if not self._scheduled:
            self._scheduled = True
            # Runs after every callback already due: the requests that reached this point in
            # the same turn of the loop join this transaction.
            loop.call_soon(self.flush)
        # A caller that goes away cancels only its own future: the group is recorded anyway,
        # and the customer's next request still waits for it (`settled` waits on the group).
        return await future

    async def settled(self, customer_id: str, since: float | None = None) -> None:
        """Wait until the customer's decision waiting to be recorded (if any) is recorded or
        has failed; raise `DatabaseUnavailableError` once `timeout` seconds have passed from
        `since` (the event loop's clock, when the request began to wait; default: now)."""
        if since is None:
            since = asyncio.get_running_loop().time()
        while True:  # another decision of theirs may have come in meanwhile: it goes first
            group = self._unsettled.get(customer_id)
            if group is None or group.done():
                return
            left = since + self.timeout - asyncio.get_running_loop().time()
            if left > 0:
                await asyncio.wait([group], timeout=left)
            if not group.done():
                if self.on_timeout is not None:
                    self.on_timeout(1)
                raise DatabaseUnavailableError(
                    "this customer's previous decision is not recorded yet, so this one cannot "
                    "be made; retry later with the same refund id"
                )

    def flush(self) -> None:
        """Start recording everything pending (unless a group is in flight: what is pending
        then goes as soon as it is back)."""
        self._scheduled = False
        if self._in_flight is not None or self._pending is None:
            return
        group, self._pending = self._pending, None
        rows = [d.row for d, _ in group.decisions]
        refund_rows = [d.refund_row for d, _ in group.decisions]
        if self.recorder is None:
            try:
                with self.log.engine.begin() as connection:
                    outcome: Outcome | Failure = record_group(
                        self.log, self.store, connection, rows, refund_rows
                    )
            except Exception as exc:  # refused, or a bug: answered 503 like the rest, and logged
                outcome = failure_of(exc)
            self._settle(group, outcome)
            return
        try:
            sent = self.recorder.send(rows, refund_rows)
        except OSError as exc:
            self._lose_recorder()
            self._settle(group, Failure(True, f"the recorder process is gone ({exc})"))
            return
        self._in_flight = group
        self._sent_at = time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop (closing): wait for the reply
            self._wait(timeout=30.0)
            return
        fd = self.recorder.fileno()
        watching = (loop, self.recorder.pid, fd)
        if self._watching != watching:  # a new loop, or a new process (whatever its fd)
            self._stop_reading()
            loop.add_reader(fd, self._receive)
            self._watching = watching
        if not sent:  # the rest goes as the pipe drains
            loop.add_writer(fd, self._write)

    def _write(self) -> None:
        """Write more of the group in flight (the pipe can take some)."""
        assert self.recorder is not None and self._watching is not None
        try:
            sent = self.recorder.write()
        except OSError as exc:
            self._recorder_failed(exc)
            return
        if sent:
            loop, _, fd = self._watching
            loop.remove_writer(fd)

    def _receive(self) -> None:
        """Take (part of) the recorder's reply to the group in flight; once it is whole, answer
        the group and send what is pending."""
        assert self.recorder is not None
        try:
            outcome = self.recorder.receive()
        except Exception as exc:  # EOF, a broken pipe
            self._recorder_failed(exc)
            return
        if outcome is not None:
            self._received(outcome)

    def _wait(self, timeout: float) -> None:
        """Wait for the reply to the group in flight, away from the event loop."""
        assert self.recorder is not None
        try:
            outcome = self.recorder.finish(timeout)
        except Exception as exc:  # EOF, a broken pipe, no answer in time
            self._recorder_failed(exc)
            return
        self._received(outcome)

    def _received(self, outcome: Outcome | Failure) -> None:
        group, self._in_flight = self._in_flight, None
        if group is None:
            log.error("the recorder process replied with nothing in flight: %r", outcome)
            return
        self._settle(group, outcome)
        self.flush()

    def _recorder_failed(self, exc: BaseException) -> None:
        """The recorder process died, broke its pipe or did not answer: fail the group in
        flight (if any) and forget the process; the next group starts a new one."""
        group, self._in_flight = self._in_flight, None
        try:
            self._lose_recorder()
        finally:  # whatever happens, the group's requests get their answer
            if group is None:
                log.warning("the recorder process ended (%s)", type(exc).__name__)
            else:
                failure = Failure(True, f"the recorder process is gone ({type(exc).__name__})")
                self._settle(group, failure)
                self.flush()

    def _stop_reading(self) -> None:
        """Stop watching the recorder's pipe."""
        if self._watching is not None:
            loop, _, fd = self._watching
            with contextlib.suppress(OSError, ValueError):  # closed meanwhile: nothing to stop
                loop.remove_reader(fd)
                loop.remove_writer(fd)
        self._watching = None

    def _lose_recorder(self) -> None:
        """Stop listening to a recorder process that died or broke, and forget it."""
        assert self.recorder is not None
        self._stop_reading()
        self.recorder.discard()

    def close(self, timeout: float = 30.0) -> None:
        """Record what is pending, wait for it, and stop the recorder process (if any)."""
        self.flush()
        if self.recorder is None:
            return
        while self._in_flight is not None:
            self._wait(timeout)
        self._stop_reading()
        self.recorder.stop()

    def _settle(self, group: _Group, outcome: Outcome | Failure) -> None:
        """Answer a group's requests: each with the recorded decision, or all with the error."""
        batch = group.decisions
        if group.deadline is not None:
            group.deadline.cancel()
        for decision, _ in batch:
            if self._unsettled.get(decision.customer_id) is group.settled:
                del self._unsettled[decision.customer_id]
        if not group.settled.done():
            group.settled.set_result(None)
        if isinstance(outcome, Failure):
            self._failed_at.append(time.monotonic())
            self._last_failure = outcome.message
            if outcome.database:
                log.warning(
                    "decision log write failed for %d decision(s): %s", len(batch), outcome.message
                )
            else:
                log.error("recording %d decision(s) failed: %s", len(batch), outcome.message)
            self.on_recorded([], len(batch))
            self._fail(batch)
            return
        self._failed_at.clear()
        winners = [d for d, _ in batch if d.decision_id in outcome.inserted]
        if winners:  # recorded: now the next request of each customer must see it
            self.builder.remember({"refund_requests": [d.refund_row for d in winners]})
        self.on_recorded(winners, 0)
        for decision, future in batch:
            if future.done():
                continue
            if decision.decision_id in outcome.inserted:
                future.set_result(Recorded(decision.row["response"], replayed=False))
            elif decision.refund_id in outcome.stored:
                future.set_result(Recorded(outcome.stored[decision.refund_id], replayed=True))
            elif decision.refund_id in outcome.conflicts:
                # Recorded before for a different request: nothing of it is returned.
                future.set_exception(
                    conflict(decision.refund_id, outcome.conflicts[decision.refund_id])
                )
                future.exception()  # retrieved here: a caller that went away is no leak
            else:  # cannot happen with a working unique constraint; never answer unrecorded
                self._fail([(decision, future)])

    def _expire(self, group: _Group) -> None:
        """A request's time is up: answer the group's requests whose time is up and that still
        wait (the group itself stays pending or in flight, and may yet be recorded), and set
        the timer for the next."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = []
        group.deadline = None
        for entry, since in zip(group.decisions, group.since, strict=True):
            if entry[1].done():
                continue
            due = since + self.timeout
            if due <= now:
                waiting.append(entry)
            elif group.deadline is None or due < group.deadline.when():
                if group.deadline is not None:
                    group.deadline.cancel()
                group.deadline = loop.call_at(due, self._expire, group)
        if not waiting:
            return
        log.warning(
            "%d decision(s) not recorded within %.1f s: answered 503, still to be recorded",
            len(waiting),
            self.timeout,
        )
        if self.on_timeout is not None:
            self.on_timeout(len(waiting))
        self._fail(
            waiting,
            f"the decision was not recorded within {self.timeout:g} s; retry later with the "
            "same refund id (it returns this decision if it was recorded meanwhile)",
        )

    @staticmethod
    def _fail(
        batch: Sequence[tuple[PendingDecision, asyncio.Future[Recorded]]],
        message: str = "the decision could not be recorded; retry later with the same refund id",
    ) -> None:
        error = DatabaseUnavailableError(message)
        for _, future in batch:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: a caller that went away is no leak
