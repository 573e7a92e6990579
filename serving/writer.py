"""Recording decisions: group commit of the decision log and the refund requests it appends.

Every decision is stored before it is returned. One transaction per decision would cost a
commit each (on PostgreSQL a disk flush of milliseconds); instead, the decisions made during one
turn of the event loop wait for one transaction that records them all, and each request is
answered when that transaction has committed. Under light load a "group" is one decision; under
heavy load, tens: the cost of a commit is shared.

The transaction inserts each decision unless its refund id is already recorded (another process
won a race), appends the winners' refund requests to the event store through the online builder
(same transaction, so the next request of the customer sees them), and reads back the stored
answers of the losers. If it fails, every decision in it fails with `DatabaseUnavailableError`:
nothing is returned that is not recorded.

All of this runs on the event loop's thread, as the routes do: the online builder is not
thread-safe, and a short synchronous write costs less than handing it to a thread (measured: a
writer thread made each decision dearer, as it and the event loop took turns at Python's lock).

A request whose customer has a decision waiting for this transaction waits for it first
(`settled`), so its features include that refund request, as they would had the two arrived
further apart: decisions of one customer are made one after the other, never side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from features.online import OnlineFeatureBuilder
from serving.db import DecisionLog
from serving.errors import DatabaseUnavailableError
from serving.events import JoinableEventStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingDecision:
    """A decision waiting to be recorded."""

    row: dict[str, Any]
    """The decision-log row (see `serving.db.decision_row`)."""
    refund_row: dict[str, Any]
    """The refund request, as the event store keeps it."""

    @property
    def refund_id(self) -> str:
        """The idempotency key."""
        return str(self.row["refund_id"])

    @property
    def customer_id(self) -> str:
        """Whose refund request it is."""
        return str(self.row["customer_id"])


@dataclass(frozen=True)
class Recorded:
    """What the database holds for a refund id after the write."""

    response: str
    replayed: bool
    """True when another writer had recorded a decision for this refund id first."""


class DecisionWriter:
    """Collects decisions and records each turn's decisions in one transaction."""

    def __init__(
        self,
        log_: DecisionLog,
        store: JoinableEventStore,
        builder: OnlineFeatureBuilder,
        on_recorded: Callable[[Sequence[PendingDecision], int], None],
    ) -> None:
        self.log = log_
        self.store = store
        self.builder = builder
        self.on_recorded = on_recorded
        self._pending: list[tuple[PendingDecision, asyncio.Future[Recorded]]] = []
        self._scheduled = False
        self._unsettled: dict[str, asyncio.Future[Recorded]] = {}

    async def record(self, decision: PendingDecision) -> Recorded:
        """Wait until the decision (or a racing writer's) is recorded; raise if it is not."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Recorded] = loop.create_future()
        self._pending.append((decision, future))
        self._unsettled[decision.customer_id] = future
        if not self._scheduled:
            self._scheduled = True
            # Runs after every callback already due: the requests that reached this point in
            # the same turn of the loop join this transaction.
            loop.call_soon(self.flush)
        return await asyncio.shield(future)

    async def settled(self, customer_id: str) -> None:
        """Wait until the customer's decision waiting to be recorded (if any) is recorded or
        has failed."""
        while True:  # another decision of theirs may have come in meanwhile: it goes first
            future = self._unsettled.get(customer_id)
            if future is None or future.done():
                return
            await asyncio.wait([future])

    def flush(self) -> None:
        """Record everything pending in one transaction and wake the waiting requests."""
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        for decision, future in batch:
            if self._unsettled.get(decision.customer_id) is future:
                del self._unsettled[decision.customer_id]
        decisions = [d for d, _ in batch]
        try:
            with self.log.engine.begin() as connection:
                inserted = self.log.insert_new(connection, [d.row for d in decisions])
                winners = [d for d in decisions if d.refund_id in inserted]
                losers = [d.refund_id for d in decisions if d.refund_id not in inserted]
                stored = self.log.responses(connection, losers)
                if winners:
                    with self.store.joined(connection):
                        self.builder.append_many(
                            {"refund_requests": [d.refund_row for d in winners]}
                        )
        except Exception as exc:
            if isinstance(exc, sa.exc.SQLAlchemyError):
                log.warning("decision log write failed for %d decision(s): %s", len(batch), exc)
                error: BaseException = DatabaseUnavailableError(
                    "the decision could not be recorded; retry later with the same refund id"
                )
            else:
                error = exc
            self.on_recorded([], len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved here: a caller that went away is no leak
            return
        self.on_recorded(winners, 0)
        for decision, future in batch:
            if future.done():
                continue
            if decision.refund_id in inserted:
                future.set_result(Recorded(decision.row["response"], replayed=False))
            elif decision.refund_id in stored:
                future.set_result(Recorded(stored[decision.refund_id], replayed=True))
            else:  # cannot happen with a working unique constraint; never answer unrecorded
                future.set_exception(
                    DatabaseUnavailableError(
                        "the decision could not be recorded; retry later with the same refund id"
                    )
                )
                future.exception()
