"""The service: everything the routes use, built once at start-up and handed to them.

`Service.start(settings)` is the composition root's work: one database engine (the event store
and the service's tables share it), migrations, the online feature builder with the whole event
store in memory, the decision log, API keys, the exposure ledger, models and policy. Routes only
parse, call one method here, and format.

The decision path, in order: idempotency (the stored answer is returned as it was) -> append
the order if new or changed -> features (`features.online`) -> scores (the tier from the
customer's latest monthly snapshot, remembered per month: `serving.tiers`) -> policy -> record
the decision and append the refund request, in one transaction -> answer.

Idempotency has three layers: a request whose refund id is being decided right now waits for
that decision; one this process recorded lately is read back from the log; any other goes on,
and the log's unique refund id decides at write time (a decision already recorded, by an older
run or another process, is kept and returned instead). Only the first two skip the work. In
each, the refund id is bound to its request (`serving.idempotency`): a different request under
it is refused with the fields that differ, never given the other request's answer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import pydantic_core
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from data.facts import as_recorded, order_changes, refund_problems
from features.definitions import FEATURE_NAMES, FEATURE_VERSION
from features.online import OnlineFeatureBuilder
from features.store import EventStore, settings_engine
from refund_risk.errors import (
    ConfigurationError,
    FactConflictError,
    InvalidFieldsError,
    NotFoundError,
)
from refund_risk.settings import Settings
from serving import db
from serving.auth import KeyRing
from serving.db import DecisionLog
from serving.errors import DatabaseUnavailableError, RequestTooLargeError, http_error
from serving.events import (
    ORDER_COLUMNS,
    OrderTracker,
    order_links,
    unique_rows,
)
from serving.exposure import ExposureLedger, pays_before_return
from serving.history import SharedHistory, lock, stored_version
from serving.idempotency import canonical_request, check_retry, conflict
from serving.metrics import Metrics
from serving.models import ModelSet, load_models
from serving.overrides import Overrides, tier_source
from serving.recorder import RecorderProcess, record_group
from serving.reviews import ReviewQueue
from serving.schemas import (
    BatchItemOut,
    CheckOut,
    CustomerTierOut,
    DecisionOut,
    EventsIn,
    EventsOut,
    ModelInUseOut,
    Privileges,
    ReadinessOut,
    RefundDecisionRequest,
    ReloadOut,
    StoredDecisionOut,
)
from serving.scoring import (
    PolicySet,
    Snapshot,
    customer_tier,
    decide_scored,
    load_policy_set,
    request_context,
    score,
)
from serving.tiers import TierScores
from serving.writer import DecisionWriter, PendingDecision, Recorded

log = logging.getLogger(__name__)

_JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
"""Datetimes as pydantic writes those of `DecisionOut`: UTC, ending in "Z"."""

RECENT_REFUND_IDS = 500_000
"""Refund ids this process recorded and remembers, so their retries skip the deciding."""


class _InFlight:
    """A refund id being decided right now: its request, and a future to share the answer
    with a retry that comes in meanwhile (made only then: rare)."""

    __slots__ = ("future", "request")

    def __init__(self, request: RefundDecisionRequest) -> None:
        self.request = request
        self.future: asyncio.Future[str] | None = None


class DecisionResult(NamedTuple):
    """A decision's JSON body, and whether it is a stored one returned again."""

    body: str
    replayed: bool


def _shared(engine: Engine) -> bool:
    """True for a database several service processes may share (PostgreSQL): each decision
    then holds its customer's lock and reads what memory holds of them afresh if it changed."""
    return engine.dialect.name == "postgresql"


def _in_memory(engine: Engine) -> bool:
    """True for an in-memory SQLite database (no other process can open it)."""
    url = engine.url
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class Service:
    """The running service's parts and the operations the routes call."""

    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        builder: OnlineFeatureBuilder,
        metrics: Metrics,
        snapshot: Snapshot,
    ) -> None:
        self.settings = settings
        self.engine = store.engine
        self.store = store
        self.builder = builder
        self.metrics = metrics
        self.reader = db.PointReader(self.engine)
        self.log = DecisionLog(self.engine, self.reader)
        self.keys = KeyRing(self.engine, settings.api_key_cache_seconds)
        shared = _shared(self.engine)
        # Shared, another process may change an order at any time: each check reads it.
        self.orders = OrderTracker(self.reader, capacity=0 if shared else 200_000)
        self.ledger = ExposureLedger()
        self.overrides = Overrides(self.engine)
        self.reviews = ReviewQueue(self.engine, store, builder, settings.review_claim_minutes)
        recorder = None
        # Shared, a decision is recorded in the transaction that holds its customer's lock.
        if settings.record_in_process and not _in_memory(self.engine) and not shared:
            recorder = RecorderProcess(str(settings.database_url), settings.database_schema)
        self.writer = DecisionWriter(
            self.log,
            store,
            builder,
            self._recorded,
            recorder,
            timeout=settings.record_timeout_seconds,
            on_timeout=self.metrics.record_timeouts.inc,
        )
        self.tiers = TierScores(builder)
        self.history: SharedHistory | None = None
        if shared:
            self.history = SharedHistory(
                builder, store, settings.history_cache_customers, metrics, self._reloaded
            )
        self.snapshot = snapshot
        # The recorder process checkpoints the WAL of the database it writes; else a thread.
        self.checkpointer = None if recorder else db.Checkpointer.for_engine(self.engine)
        self._inflight: dict[str, _InFlight] = {}
        self._recorded_ids: OrderedDict[str, None] = OrderedDict()
        self._reload_lock = asyncio.Lock()
        self.clock: Callable[[], datetime] = _now
        """The time decisions are made at (naive UTC); a replay of history sets its own."""
        self._show_snapshot()

    # --- start and stop ----------------------------------------------------------------------

    @classmethod
    def start(cls, settings: Settings, metrics: Metrics | None = None) -> Service:
        """Connect, migrate, read the event store into memory, load models and policy.

        A missing or unusable model does not stop the start (decisions are then degraded); an
        invalid policy or an unreachable database does, with a sentence saying why.
        """
        assert settings.database_url is not None
        policies = load_policy_set(settings.policy_path, settings.tiers_path)
        engine = settings_engine(settings)
        db.tune_sqlite(engine)
        try:
            store = EventStore(engine)
            store.migrate()
            db.migrate(engine)
            db.record_feature_names(engine, FEATURE_VERSION, FEATURE_NAMES)
            builder = OnlineFeatureBuilder(store)
            # Shared by several processes, histories are read as decisions need them, into a
            # bounded cache: nothing is preloaded.
            preload = settings.preload_events and not _shared(engine)
            if preload:
                builder.preload()
        except sa.exc.OperationalError as exc:
            engine.dispose()
            raise ConfigurationError(
                f"the database at {_redacted(settings.database_url)} is not reachable: "
                f"{str(exc.orig or exc).strip().splitlines()[0]}"
            ) from None
        models = load_models(settings, settings.model_alias)
        for name, problem in models.problems.items():
            log.warning("%s not loaded: %s", name, problem)
        service = cls(settings, store, builder, metrics or Metrics(), Snapshot(models, policies))
        if preload:
            service.orders.preload(store)
        if service.history is None:  # shared, exposure is read from the database under the lock
            service.ledger.load(service.log.open_exposures())
        service.overrides.load()
        service.keys.refresh()
        if service.checkpointer is not None:
            service.checkpointer.start()
        if service.writer.recorder is not None:
            service.writer.recorder.start()
        return service

    def close(self) -> None:
        """Record what is pending, stop the recorder and checkpointing, and close the database
        connections."""
        self.writer.close()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.reader.close()
        self.engine.dispose()

    def _show_snapshot(self) -> None:
        models = self.snapshot.models
        self.metrics.set_models(
            {
                "refund-abuse": None
                if models.abuse is None
                else (models.abuse.version, models.abuse.alias),
                "credit-tier": None
                if models.tier is None
                else (models.tier.version, models.tier.alias),
            },
            models.degraded,
        )
        policy = self.snapshot.policies.policy
        self.metrics.set_policy(policy.name, policy.version, policy.content_hash)

    # --- deciding ----------------------------------------------------------------------------

    async def decide(self, request: RefundDecisionRequest, raw: bytes = b"") -> DecisionResult:
        """The decision for one refund request: the stored one if it was decided before.

        The refund id is bound to its request: the same id with a different request raises
        `IdempotencyConflictError` naming the fields that differ. A request whose fields break
        a rule together (an amount above the order's, a stage the order's times contradict, a
        time in the future) raises `InvalidFieldsError`; one that would rewrite an order's
        recorded facts, or names another customer's order, `FactConflictError`.

        `raw` is the JSON body the request was read from, if at hand: the stored request is
        then written from it where the decision is recorded (`serving.recorder.record_group`;
        by default in the recorder process, off the event loop).
        """
        refund_id = request.refund_id
        running = self._inflight.get(refund_id)
        if running is not None:  # the same id is being decided right now: share it, if the same
            check_retry(
                refund_id, None, canonical_request(running.request), canonical_request(request)
            )
            if running.future is None:
                running.future = asyncio.get_running_loop().create_future()
            body = await asyncio.shield(running.future)
            self.metrics.replays.inc()
            return DecisionResult(body, replayed=True)
        if refund_id in self._recorded_ids:
            stored = self.log.stored_for(refund_id)
            if stored is not None:
                check_retry(
                    refund_id, stored.request_hash, stored.request, canonical_request(request)
                )
                self.metrics.replays.inc()
                return DecisionResult(stored.response, replayed=True)
        refund_row = request.refund_row()
        order_row = request.order_row()
        problems = refund_problems(
            refund_row, order_row, self.clock(), self.settings.max_clock_skew_seconds
        )
        if problems:
            raise InvalidFieldsError(
                f"{len(problems)} field{'s are' if len(problems) != 1 else ' is'} invalid",
                [(p.column, p.message, p.type) for p in problems],
            )
        # Not recorded by this process lately. Looking it up in the database on every request
        # would cost as much as deciding; the unique refund id decides instead: if a decision
        # was recorded before (an older run, another process), the write keeps it and returns
        # it as a replay (or, for a different request, the conflict). A future to share the
        # answer is made only if the same id comes in meanwhile (rare).
        entry = self._inflight[refund_id] = _InFlight(request)
        try:
            recorded = await self._decide_new(request, raw, refund_row, order_row)
        except BaseException as exc:
            self._inflight.pop(refund_id, None)
            future = entry.future
            if future is not None:
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # nobody may be waiting: mark it seen
            raise
        self._inflight.pop(refund_id, None)
        if entry.future is not None:
            entry.future.set_result(recorded.response)
        if recorded.replayed:
            self.metrics.replays.inc()
        return DecisionResult(recorded.response, recorded.replayed)

    async def _decide_new(
        self,
        request: RefundDecisionRequest,
        raw: bytes,
        refund_row: dict[str, Any],
        order_row: dict[str, Any],
    ) -> Recorded:
        if self.history is not None:
            return await self._decide_shared(request, raw, refund_row, order_row)
        # A decision of this customer still being recorded: its refund request is a feature of
        # this one (rare: the same customer twice within a few milliseconds).
        since = asyncio.get_running_loop().time()  # the request waits `record_timeout` at most
        await self.writer.settled(request.customer_id, since)
        snapshot = self.snapshot
        started = time.perf_counter()
        try:
            self._append_order(request, order_row)
        except FactConflictError:
            # A retry of a request decided by an older run, whose order has progressed since
            # (shipped, delivered): the stored decision, not the conflict with today's order.
            earlier = self.log.stored_for(request.refund_id)
            if earlier is None:
                raise
            check_retry(
                request.refund_id, earlier.request_hash, earlier.request, canonical_request(request)
            )
            return Recorded(earlier.response, replayed=True)
        pending = self._pending(
            request, raw, refund_row, snapshot, started, self.ledger.outstanding
        )
        return await self.writer.record(pending, since)

    def _pending(
        self,
        request: RefundDecisionRequest,
        raw: bytes,
        refund_row: dict[str, Any],
        snapshot: Snapshot,
        started: float,
        outstanding: Any,
    ) -> PendingDecision:
        """Features, scores and policy: the decision to record (`outstanding(customer_id)`
        gives the customer's unreturned value)."""
        row = self.builder.vector(refund_row)
        featured = time.perf_counter()
        tier = self.tiers.score(snapshot.models, request.customer_id, request.requested_at)
        scored = score(snapshot.models, row, tier)
        scored_at = time.perf_counter()
        # Analysts' overrides: a dict lookup, None for almost every customer.
        override = self.overrides.active(request.customer_id)
        context = request_context(
            request,
            row,
            outstanding(request.customer_id),
            watchlisted=override is not None and override.watchlisted,
        )
        if override is None:
            decision, reasons, degraded = decide_scored(snapshot, context, scored)
        else:
            decision, reasons, degraded = decide_scored(
                snapshot, context, scored, override.pinned_tier, override.reasons()
            )
        decided = time.perf_counter()
        models = snapshot.models
        abuse_model = None if models.abuse is None else models.abuse.label
        tier_model = None if models.tier is None else models.tier.label
        decided_at = self.clock()
        decision_id = db.new_decision_id()
        abuse_score = None if degraded else round(decision.abuse_score, 6)
        # The answer, field for field as `DecisionOut` (the documented schema) writes it, from
        # values this code made and typed: serialised straight from a dict, which costs a
        # fraction of building the model and dumping it (tests hold the two identical).
        out: dict[str, Any] = {
            "decision_id": decision_id,
            "refund_id": request.refund_id,
            "customer_id": request.customer_id,
            "action": decision.action,
            "abuse_score": abuse_score,
            "abuse_band": None if degraded else decision.abuse_band,
            "tier": decision.tier,
            "tier_score": None if scored.tier_score is None else round(scored.tier_score, 6),
            "tier_source": tier_source(override, decision.tier, scored.tier_score),
            "offered_share": decision.offered_share,
            "offered_amount": decision.offered_amount,
            "rule_id": decision.rule_id,
            "reasons": reasons,
            "customer_message": decision.customer_message,
            "degraded": degraded,
            "versions": {
                "abuse_model": abuse_model,
                "tier_model": tier_model,
                "policy": f"{decision.policy_name} v{decision.policy_version}",
                "policy_hash": decision.policy_hash,
                "tiers_version": decision.tiers_version,
                "tiers_hash": decision.tiers_hash,
                "feature_version": FEATURE_VERSION,
            },
            "decided_at": decided_at,  # naive UTC, written with a "Z" (`_JSON_OPTIONS`)
            "timing": {
                "features_ms": _ms(featured - started),
                "scoring_ms": _ms(scored_at - featured),
                "policy_ms": _ms(decided - scored_at),
                "total_ms": _ms(time.perf_counter() - started),
            },
        }
        features = orjson.dumps(row).decode()  # NaN as null
        return PendingDecision(
            row=db.decision_row(
                decision_id=decision_id,
                refund_id=request.refund_id,
                customer_id=request.customer_id,
                decided_at=decided_at,
                action=decision.action.value,
                rule_id=decision.rule_id,
                degraded=degraded,
                abuse_score=abuse_score,
                tier=decision.tier,
                amount_requested=request.amount_requested,
                abuse_model_version=abuse_model,
                tier_model_version=tier_model,
                policy_hash=decision.policy_hash,
                feature_version=FEATURE_VERSION,
                response=orjson.dumps(out, option=_JSON_OPTIONS).decode(),
                # The body as read is written out as the stored request where it is recorded
                # (by default in the recorder process, off the event loop).
                request=raw or request.model_dump_json(),
                features=features,
            ),
            refund_row=refund_row,
            category=request.order.category,
        )

    async def _decide_shared(
        self,
        request: RefundDecisionRequest,
        raw: bytes,
        refund_row: dict[str, Any],
        order_row: dict[str, Any],
    ) -> Recorded:
        """Decide and record in one transaction holding the customer's lock (a database shared
        by several processes): the customer's history and unreturned value as committed, the
        order appended, the decision and its refund request recorded, then the lock goes.

        Everything up to the commit runs here, on the event loop; the commit (the database's
        disk flush) waits in a worker thread, so the loop decides other requests meanwhile and
        the commits of several decisions share flushes. The customer's lock is held until the
        commit is done: the customer's next decision, in any process, waits for it. A commit
        not done within the record timeout is answered 503 (it may still be recorded: a retry
        with the same refund id then returns it).
        """
        assert self.history is not None
        customer_id = request.customer_id
        snapshot = self.snapshot
        connection = self.engine.connect()
        committing = False
        try:
            try:
                transaction = connection.begin()
                # No statement (the lock's wait included) outlasts the record timeout: a lock
                # held elsewhere or a database gone quiet answers 503, as recording does.
                timeout_ms = max(1, int(self.settings.record_timeout_seconds * 1000))
                connection.execute(sa.text(f"SET LOCAL statement_timeout = {timeout_ms}"))
                lock(connection, customer_id)
                started = time.perf_counter()
                arriving = [(link["kind"], link["fingerprint"]) for link in order_links(order_row)]
                read = self.history.fresh(connection, customer_id, arriving)
                try:
                    writes = int(self._append_order_locked(connection, request, order_row))
                except FactConflictError:
                    # As on one process: a retry of a request decided before whose order has
                    # progressed since gets the stored decision, not the conflict.
                    earlier = self.log.stored_for(request.refund_id)
                    if earlier is None:
                        raise
                    check_retry(
                        request.refund_id,
                        earlier.request_hash,
                        earlier.request,
                        canonical_request(request),
                    )
                    return Recorded(earlier.response, replayed=True)

                def outstanding(customer: str) -> float:
                    return self.log.outstanding(connection, customer)

                pending = self._pending(request, raw, refund_row, snapshot, started, outstanding)
                outcome = record_group(
                    self.log, self.store, connection, [pending.row], [pending.refund_row]
                )
                inserted = pending.decision_id in outcome.inserted
                writes += int(inserted)
                committed = stored_version(connection, customer_id)
            except sa.exc.SQLAlchemyError as exc:
                raise self._unrecorded(exc) from None
            # Handed to a worker thread now, not when the loop next turns: the customer's next
            # decision may be made before then, and would wait for the lock on the loop itself.
            done = asyncio.get_running_loop().run_in_executor(
                None, _commit, connection, transaction
            )
            committing = True  # from here the worker thread closes the connection
            try:
                await asyncio.wait_for(done, timeout=self.settings.record_timeout_seconds)
            except TimeoutError:
                self.metrics.record_timeouts.inc()
                raise DatabaseUnavailableError(
                    f"the decision was not recorded within "
                    f"{self.settings.record_timeout_seconds:g} s; retry later with the same "
                    "refund id (it returns this decision if it was recorded meanwhile)"
                ) from None
            except sa.exc.SQLAlchemyError as exc:
                raise self._unrecorded(exc) from None
        except BaseException:
            # Memory may hold what was not committed: the customer is read again next time.
            self.history.discard([customer_id])
            raise
        finally:
            if not committing:
                connection.close()  # rolls back what was begun
        if inserted:  # recorded: the customer's next decision here sees it without a read
            self.builder.remember({"refund_requests": [pending.refund_row]})
        self.history.confirm(customer_id, read, writes, committed)
        self._recorded([pending] if inserted else [], 0)
        self.history.trim(keep=(customer_id,))
        refund_id = request.refund_id
        if inserted:
            return Recorded(pending.row["response"], replayed=False)
        if refund_id in outcome.stored:
            return Recorded(outcome.stored[refund_id], replayed=True)
        if refund_id in outcome.conflicts:
            raise conflict(refund_id, outcome.conflicts[refund_id])
        raise DatabaseUnavailableError(  # never answer what is not recorded
            "the decision could not be recorded; retry later with the same refund id"
        )

    def _unrecorded(self, exc: sa.exc.SQLAlchemyError) -> DatabaseUnavailableError:
        """Count and log a decision the database did not take; the error to answer with."""
        self._recorded([], 1)
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        log.warning("decision not recorded: %s", first[0] if first else type(exc).__name__)
        return DatabaseUnavailableError(
            "the decision could not be recorded; retry later with the same refund id"
        )

    def _append_order_locked(
        self, connection: sa.Connection, request: RefundDecisionRequest, order: dict[str, Any]
    ) -> bool:
        """`_append_order` in the deciding transaction, from what the database holds; True if
        the order (and account) was written."""
        found = connection.execute(self.orders.select_order, {"order_id": order["order_id"]})
        stored = found.first()
        if stored is not None:
            values = tuple(stored)
            if values == OrderTracker.values(order):
                return False
            _check_progress(dict(zip(ORDER_COLUMNS, values, strict=True)), order)
        new_customer = (
            request.customer is not None
            and connection.execute(
                self.orders.select_customer, {"customer_id": request.customer_id}
            ).first()
            is None
        )
        rows = _order_rows(request, order, new_customer)
        self.store.write(rows, connection)
        self.builder.remember(rows)
        return True

    def _reloaded(self, customer_ids: set[str]) -> None:
        """Histories read again from the database: tier scores computed from them may be old."""
        self.tiers.forget(customer_ids, since=-(2**62))

    def _append_order(self, request: RefundDecisionRequest, order: dict[str, Any]) -> None:
        """Append the request's order (and account) unless the store already holds it as is.

        An order the store holds may only progress (shipped, delivered): one of another
        customer, or with other fixed facts, raises `FactConflictError` and nothing is written.
        """
        if self.orders.is_stored(order):
            return
        stored = self.orders.stored(order["order_id"])
        if stored is not None:
            _check_progress(stored, order)
        new_customer = request.customer is not None and not self.orders.customer_stored(
            request.customer_id
        )
        self.builder.append_many(_order_rows(request, order, new_customer))
        self.orders.remember([order])

    def _recorded(self, winners: Sequence[PendingDecision], failed: int) -> None:
        """After a write: count, and open exposure for refunds paid before the goods are back."""
        if failed:
            self.metrics.store_failures.inc(failed)
            return
        self.metrics.write_batch.observe(len(winners))
        recorded = self._recorded_ids
        for decision in winners:
            row = decision.row
            recorded[row["refund_id"]] = None
            self.metrics.count_decision(row["action"], row["degraded"])
            refund = decision.refund_row
            self.metrics.count_refund(
                decision.category,
                refund["reason"],
                refund["reason_detail"],
                row["amount_requested"],
            )
            if self.history is None and pays_before_return(
                row["action"], decision.refund_row["order_stage"]
            ):
                self.ledger.open(row["customer_id"], row["refund_id"], row["amount_requested"])
        while len(recorded) > RECENT_REFUND_IDS:
            recorded.popitem(last=False)

    async def decide_batch(self, items: Sequence[Any]) -> list[BatchItemOut]:
        """Decide each item on its own; invalid items are answered 422, the rest decided."""
        limit = self.settings.batch_limit
        if len(items) > limit:
            raise RequestTooLargeError(
                f"{len(items)} requests in one batch; the limit is {limit}", field="requests"
            )
        results: list[BatchItemOut | None] = [None] * len(items)
        valid: list[tuple[int, RefundDecisionRequest]] = []
        for index, item in enumerate(items):
            try:
                valid.append((index, RefundDecisionRequest.model_validate(item)))
            except ValidationError as exc:
                error = http_error(exc, self.settings.retry_after_seconds)
                for bad in error.body.fields:
                    if bad.field == "body":  # the item itself, not one of its fields
                        bad.field = f"requests.{index}"
                refund_id = item.get("refund_id") if isinstance(item, dict) else None
                results[index] = BatchItemOut(
                    index=index,
                    refund_id=refund_id if isinstance(refund_id, str) else None,
                    status=error.status,
                    error=error.body,
                )
        outcomes = await asyncio.gather(
            *(self.decide(request) for _, request in valid), return_exceptions=True
        )
        for (index, request), outcome in zip(valid, outcomes, strict=True):
            if isinstance(outcome, DecisionResult):
                results[index] = BatchItemOut(
                    index=index,
                    refund_id=request.refund_id,
                    status=200,
                    replayed=outcome.replayed,
                    decision=DecisionOut.model_validate_json(outcome.body),
                )
            else:
                error = http_error(outcome, self.settings.retry_after_seconds)
                results[index] = BatchItemOut(
                    index=index,
                    refund_id=request.refund_id,
                    status=error.status,
                    error=error.body,
                )
        return [r for r in results if r is not None]

    # --- reading -----------------------------------------------------------------------------

    def stored_decision(self, decision_id: str) -> StoredDecisionOut:
        """A stored decision (by decision id or refund id), its inputs and feature values."""
        row = self.log.get(decision_id)
        if row is None:
            raise NotFoundError(f"no decision with id {decision_id!r}")
        values = pydantic_core.from_json(row["features"])
        names = pydantic_core.from_json(row["feature_names"]) if row["feature_names"] else None
        if names is None or len(names) != len(values):
            names = [f"feature_{i}" for i in range(len(values))]
        return StoredDecisionOut(
            decision=DecisionOut.model_validate_json(row["response"]),
            request=pydantic_core.from_json(row["request"]),
            features=dict(zip(names, values, strict=True)),
        )

    def customer_tier(self, customer_id: str, as_of: datetime | None = None) -> CustomerTierOut:
        """The customer's tier as of `as_of` (default: now), with privileges and exposure.

        The tier is that of the customer's latest monthly snapshot before `as_of`, as decisions
        use it (`serving.tiers`)."""
        when = _now() if as_of is None else as_of
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        snapshot = self.snapshot
        latest_order = self.orders.latest_order(customer_id)
        if latest_order is None and not self.orders.customer_stored(customer_id):
            raise NotFoundError(f"customer {customer_id!r} is not in the event store")
        # As a decision at `when` would see it: the latest monthly snapshot before it.
        if self.history is None:
            loss = self.tiers.score(snapshot.models, customer_id, when)
            outstanding = self.ledger.outstanding(customer_id)
        else:  # as committed, read under the customer's lock as a decision reads it
            with self.engine.begin() as connection:
                lock(connection, customer_id)
                self.history.fresh(connection, customer_id)
                loss = self.tiers.score(snapshot.models, customer_id, when)
                outstanding = self.log.outstanding(connection, customer_id)
            self.history.trim(keep=(customer_id,))
        tier = customer_tier(snapshot.tiers, loss)
        return CustomerTierOut(
            customer_id=customer_id,
            tier=tier.name,
            score=None if loss is None else round(loss, 6),
            privileges=Privileges(
                refund_before_return_allowed=tier.refund_before_return_allowed,
                auto_approve_limit=tier.auto_approve_limit,
                max_outstanding_unreturned=tier.max_outstanding_unreturned,
            ),
            outstanding_unreturned_value=round(outstanding, 2),
            as_of=when.replace(tzinfo=UTC),
            tier_model=None if snapshot.models.tier is None else snapshot.models.tier.label,
            tiers_version=snapshot.policies.tiers.version,
        )

    # --- events ------------------------------------------------------------------------------

    def append_events(self, events: EventsIn) -> EventsOut:
        """Append new events to the store (upserts: sending a row twice changes nothing).

        An order the store holds (or an earlier row of the call) may only progress: if any
        row names another customer's order or changes an order's fixed facts, the whole call
        raises `FactConflictError`, naming each such row's fields, and nothing is written.
        """
        sent = [o.model_dump() for o in events.orders]
        self._check_orders(sent)
        orders = unique_rows(sent, ("order_id",))
        links = [link.model_dump() for link in events.identity_links]
        for order in orders:
            links.extend(order_links(order))
        rows = {
            "customers": unique_rows((c.model_dump() for c in events.customers), ("customer_id",)),
            "orders": orders,
            "outcomes": unique_rows((o.model_dump() for o in events.outcomes), ("outcome_id",)),
            "identity_links": unique_rows(
                links, ("customer_id", "kind", "fingerprint"), keep="earliest_seen"
            ),
        }
        rows = {name: table for name, table in rows.items() if table}
        if rows:
            self.builder.append_many(rows)
        self.orders.remember(orders)
        self.ledger.close(o["refund_id"] for o in rows.get("outcomes", ()))
        return EventsOut(written={name: len(table) for name, table in rows.items()})

    def _check_orders(self, orders: Sequence[dict[str, Any]]) -> None:
        """Raise `FactConflictError` if any order row would rewrite what is recorded of its
        order (in the store, or in an earlier row of the same call)."""
        latest: dict[str, dict[str, Any] | None] = {}
        problems: list[tuple[str, Any]] = []
        refused: dict[str, None] = {}
        for index, order in enumerate(orders):
            order_id = order["order_id"]
            if order_id not in latest:
                stored = self.orders.is_stored(order)
                latest[order_id] = order if stored else self.orders.stored(order_id)
            before = latest[order_id]
            found = [] if before is None else order_changes(before, order)
            if found:
                refused[order_id] = None
                problems.extend((f"orders.{index}.{p.column}", p) for p in found)
            else:
                latest[order_id] = as_recorded(before, order)
        if problems:
            raise _order_conflict(", ".join(repr(o) for o in refused), problems)

    # --- health and administration -----------------------------------------------------------

    def readiness(self) -> ReadinessOut:
        """Whether decisions can be made and recorded (database reachable, recorder answering),
        with which models and policy, whether degraded, and why not if not."""
        checks: dict[str, CheckOut] = {}
        try:
            db.ping(self.engine)
            checks["database"] = CheckOut(ok=True, detail=self.engine.dialect.name)
        except sa.exc.SQLAlchemyError as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            checks["database"] = CheckOut(ok=False, detail=first[0] if first else "unreachable")
        models = self.snapshot.models
        problems = models.problems
        if models.abuse is not None:
            checks["abuse_model"] = CheckOut(
                ok=True, detail=f"{models.abuse.label} ({models.abuse.alias})"
            )
        else:
            problem = problems.get("refund-abuse", "not loaded")
            checks["abuse_model"] = CheckOut(
                ok=False, detail=f"{problem}; deciding with the rules-only policy (degraded)"
            )
        if models.tier is not None:
            checks["tier_model"] = CheckOut(
                ok=True, detail=f"{models.tier.label} ({models.tier.alias})"
            )
        else:
            problem = problems.get("credit-tier", "not loaded")
            checks["tier_model"] = CheckOut(
                ok=True, detail=f"{problem}; every customer gets the default tier"
            )
        checks["policy"] = CheckOut(ok=True, detail=self.snapshot.policies.label)
        unrecorded = self.writer.problem()
        where = (
            "in the recorder process"
            if self.writer.recorder
            else "on the event loop"
            if self.history is None
            else "on the event loop, each under its customer's lock"
        )
        checks["decision_log"] = CheckOut(
            ok=unrecorded is None, detail=unrecorded or f"decisions are recorded {where}"
        )
        # Ready means able to decide and record: degraded (rules-only) is still ready, so an
        # orchestrator keeps the fallback serving instead of taking the instance away.
        ready = checks["database"].ok and checks["decision_log"].ok
        degraded = not checks["abuse_model"].ok
        status = "unavailable" if not ready else "degraded" if degraded else "ready"
        policies = self.snapshot.policies
        return ReadinessOut(
            status=status,  # type: ignore[arg-type]
            ready=ready,
            degraded=degraded,
            models=[
                ModelInUseOut(name=m.name, version=m.version, alias=m.alias)
                for m in (models.abuse, models.tier)
                if m is not None
            ],
            policy=(policies.degraded_policy if degraded else policies.policy).label,
            checks=checks,
        )

    async def reload(self, alias: str | None, policy: bool) -> ReloadOut:
        """Load models by alias (and the policy files) and switch to them at once.

        Loading runs in a worker thread, so requests go on being answered with the models in
        use; the switch is one assignment. A reload that would lose a model now in use, or
        meets an invalid policy file, changes nothing and says why.
        """
        async with self._reload_lock:
            current = self.snapshot
            alias = alias or self.settings.model_alias
            models: ModelSet = await asyncio.to_thread(load_models, self.settings, alias)
            policies: PolicySet = current.policies
            if policy:
                policies = await asyncio.to_thread(
                    load_policy_set, self.settings.policy_path, self.settings.tiers_path
                )
            lost = [
                name
                for name, before, after in (
                    ("refund-abuse", current.models.abuse, models.abuse),
                    ("credit-tier", current.models.tier, models.tier),
                )
                if before is not None and after is None
            ]
            if lost:
                why = "; ".join(f"{n}: {models.problems.get(n, 'not loaded')}" for n in lost)
                raise ConfigurationError(f"reload refused, the models in use are kept ({why})")
            self.snapshot = Snapshot(models, policies)
            self._show_snapshot()
            gc.collect()
            gc.freeze()  # what loading allocated is long-lived too (see `serving.app`)
            return ReloadOut(
                abuse_model=None if models.abuse is None else models.abuse.label,
                tier_model=None if models.tier is None else models.tier.label,
                policy=policies.label,
                degraded=models.degraded,
                problems=models.problems,
            )


def _commit(connection: sa.Connection, transaction: sa.RootTransaction) -> None:
    """Commit and give the connection back (in a worker thread)."""
    try:
        transaction.commit()
    finally:
        connection.close()


def _check_progress(stored: dict[str, Any], order: dict[str, Any]) -> None:
    """Raise `FactConflictError` unless `order` only progresses the stored one (shipped,
    delivered): another customer or other fixed facts are refused, nothing written."""
    problems = order_changes(stored, order)
    if problems:
        raise _order_conflict(
            repr(order["order_id"]),
            [(p.column if p.column == "customer_id" else f"order.{p.column}", p) for p in problems],
        )


def _order_rows(
    request: RefundDecisionRequest, order: dict[str, Any], new_customer: bool
) -> dict[str, list[dict[str, Any]]]:
    """The rows appending a request's order writes: the order, its fingerprints, and the
    account when the store does not hold it yet."""
    rows: dict[str, list[dict[str, Any]]] = {
        "orders": [order],
        "identity_links": order_links(order),
    }
    if new_customer and request.customer is not None:
        rows["customers"] = [{"customer_id": request.customer_id, **request.customer.model_dump()}]
    return rows


def _order_conflict(order_id: str, problems: Sequence[tuple[str, Any]]) -> FactConflictError:
    """The error for rows that would rewrite an order's recorded facts; `problems` pairs each
    field as the caller names it with its `data.facts.Problem`."""
    other = any(p.type == "order_of_another_customer" for _, p in problems)
    why = (
        "names an order of another customer"
        if other
        else "contradicts facts already recorded of the order, which cannot change"
    )
    return FactConflictError(
        f"the request {why} (order {order_id}); nothing was written",
        [(field, p.message, p.type) for field, p in problems],
    )


def _redacted(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)
