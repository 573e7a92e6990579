"""The online builder: the feature row of one incoming refund request, from the event store.

The same definitions as the batch builder, interpreted one request at a time in plain Python
(no pandas on this path: a row must cost a fraction of a millisecond). Each customer's history
is read from the event store once and then kept in memory as sorted event times with running
sums per sub-stream, so a windowed count is two bisections and a sum two subtractions.

The store is the source of truth. Every append is written to the store first, then applied to
the in-memory histories it touches; a history not yet in memory is read from the store when a
request needs it. A fresh process therefore gives the same rows. Appends made by another
process are not seen by this one's memory: one process should own the appends, or each should
re-read (a new builder) when it needs them.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from data.schema import LINK_KINDS, TABLES, Kind
from features.definitions import (
    DAY_US,
    FEATURES,
    SOURCES,
    SUBJECT_TABLES,
    UNKNOWN_CODE,
    Aggregation,
    Entity,
    Feature,
    Filter,
    SubStream,
    substreams,
    substreams_of,
)
from features.events import outcome_changes, refund_event_values, to_us
from features.store import EventStore
from refund_risk.errors import DataValidationError, NotFoundError

Record = dict[str, Any]

_TIME_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(c.name for c in table.columns if c.kind == Kind.TIMESTAMP)
    for name, table in TABLES.items()
}


def normalise(table: str, row: Mapping[str, Any]) -> Record:
    """A raw row with its timestamps as integer microseconds (None when empty)."""
    record = dict(row)
    for column in _TIME_COLUMNS[table]:
        record[column] = to_us(record.get(column))
    return record


def _passes(filters: tuple[Filter, ...], record: Mapping[str, Any]) -> bool:
    for flt in filters:
        value = record.get(flt.column)
        if flt.present:
            if value is None or value != value:  # None or NaN
                return False
        elif value not in flt.values:
            return False
    return True


class _Stream:
    """One entity's events of one sub-stream: sorted (time, id) keys and running sums."""

    __slots__ = ("keys", "prefix", "times")

    def __init__(self, columns: Sequence[tuple[str, bool]]) -> None:
        self.keys: list[tuple[int, str]] = []
        self.times: list[int] = []
        # Running sums start at 0 (int for whole-number columns, 0.0 for money), and add one
        # value at a time in event order, as the batch builder does.
        self.prefix: dict[str, list[Any]] = {c: [0 if integer else 0.0] for c, integer in columns}

    def push(self, time: int, event_id: str, values: Mapping[str, Any]) -> bool:
        """Append an event at the end; False (nothing changed) if it does not sort last."""
        key = (time, event_id)
        if self.keys and key <= self.keys[-1]:
            return False
        self.keys.append(key)
        self.times.append(time)
        for column, sums in self.prefix.items():
            sums.append(sums[-1] + values[column])
        return True


@dataclass
class _History:
    """Everything in memory about one customer."""

    customer_id: str
    customer: Record | None = None
    orders: dict[str, Record] = field(default_factory=dict)
    refunds: dict[str, Record] = field(default_factory=dict)
    outcomes: dict[str, list[tuple[int, str, bool]]] = field(default_factory=dict)
    links: dict[tuple[str, str], int] = field(default_factory=dict)
    streams: dict[tuple[int, str], _Stream] = field(default_factory=dict)
    dirty: bool = True
    fingerprints_loaded: bool = False


class _Request:
    """What one evaluation needs: the time, the subject rows, and per-request caches."""

    __slots__ = ("bounds", "history", "linked", "subjects", "t")

    def __init__(self, t: int, subjects: dict[str, Record | None], history: _History) -> None:
        self.t = t
        self.subjects = subjects
        self.history = history
        self.bounds: dict[tuple[int, int | None], tuple[_Stream | None, int, int]] = {}
        self.linked: dict[str | None, set[str]] | None = None


_EMPTY_TIMES: list[int] = []


class OnlineFeatureBuilder:
    """Feature rows for single refund requests, from an event store.

    `row(request)` computes the row as of `request["requested_at"]`; `append(table, rows)`
    records new events (to the store, then to memory); `score_and_record(request)` does both
    for a request being scored, so the next request of the same customer sees it.
    """

    def __init__(self, store: EventStore, features: tuple[Feature, ...] = FEATURES) -> None:
        self.store = store
        self.features = features
        self.feature_names: tuple[str, ...] = tuple(f.name for f in features)
        self._subs: tuple[SubStream, ...] = substreams(features)
        self._sub_index: dict[SubStream, int] = {s: i for i, s in enumerate(self._subs)}
        self._subs_by_source: dict[str, list[tuple[int, SubStream, str]]] = {}
        self._columns: dict[int, list[tuple[str, bool]]] = {}
        for i, sub in enumerate(self._subs):
            spec = SOURCES[sub.source]
            key_column = spec.entity_column(sub.entity)
            self._subs_by_source.setdefault(sub.source, []).append((i, sub, key_column))
            self._columns[i] = [(c, c in spec.integer_columns) for c in spec.columns]
        self._plan: list[Callable[[_Request, dict[str, Any]], Any]] = [
            self._compile(f) for f in features
        ]
        self._histories: dict[str, _History] = {}
        self._refund_owner: dict[str, str] = {}
        self._fingerprints: dict[tuple[str, str], dict[str, int]] = {}
        self._orphans: dict[str, list[tuple[int, str, bool]]] = {}
        self._orphan_refunds: set[str] = set()
        self._complete = False
        # Histories are plain dicts and lists mutated in place; a web server calling from a
        # thread pool must not interleave a row with an append. Uncontended, this costs ~0.1 us.
        self._lock = threading.RLock()

    # --- loading from the store -------------------------------------------------------------

    def preload(self) -> None:
        """Read the whole store into memory (service start-up); later misses need no query."""
        with self._lock:
            self._preload()

    def _preload(self) -> None:
        rows: dict[str, list[Record]] = {name: [] for name in TABLES}
        for name in TABLES:
            for batch in self.store.scan(name):
                rows[name].extend(batch)
        self._histories.clear()
        self._refund_owner.clear()
        self._fingerprints.clear()
        self._orphans.clear()
        customer_ids = {
            r["customer_id"] for name in TABLES if name != "outcomes" for r in rows[name]
        }
        self._install(customer_ids, rows)
        for link in rows["identity_links"]:
            self._fingerprints.setdefault((link["kind"], link["fingerprint"]), {})
        for link in rows["identity_links"]:
            self._add_fingerprint(
                link["kind"], link["fingerprint"], link["customer_id"], to_us(link["seen_at"])
            )
        for history in self._histories.values():
            history.fingerprints_loaded = True
        self._complete = True

    def _install(self, customer_ids: Iterable[str], rows: Mapping[str, Sequence[Record]]) -> None:
        """Make fresh histories for `customer_ids` from their store rows."""
        fresh = {cid: _History(cid) for cid in customer_ids}
        self._histories.update(fresh)
        for r in rows["refund_requests"]:
            # The store has these refunds' outcomes now; nothing is waiting for them any more.
            self._orphans.pop(r["refund_id"], None)
        for r in rows["customers"]:
            fresh[r["customer_id"]].customer = normalise("customers", r)
        for r in rows["orders"]:
            fresh[r["customer_id"]].orders[r["order_id"]] = normalise("orders", r)
        for r in rows["refund_requests"]:
            fresh[r["customer_id"]].refunds[r["refund_id"]] = normalise("refund_requests", r)
            self._refund_owner[r["refund_id"]] = r["customer_id"]
        for r in rows["outcomes"]:
            owner = self._refund_owner.get(r["refund_id"])
            if owner in fresh:
                known = to_us(r["known_at"])
                assert known is not None
                fresh[owner].outcomes.setdefault(r["refund_id"], []).append(
                    (known, r["outcome_id"], bool(r["is_abusive"]))
                )
        for r in rows["identity_links"]:
            seen = to_us(r["seen_at"])
            assert seen is not None
            links = fresh[r["customer_id"]].links
            key = (r["kind"], r["fingerprint"])
            links[key] = min(seen, links.get(key, seen))

    def _history(self, customer_id: str, with_links: bool) -> _History:
        """The customer's history in memory, read from the store first if needed."""
        history = self._histories.get(customer_id)
        if history is None:
            if self._complete:
                history = self._histories[customer_id] = _History(customer_id)
                history.fingerprints_loaded = True
            else:
                self._install([customer_id], self.store.histories([customer_id]))
                history = self._histories[customer_id]
        if with_links and not history.fingerprints_loaded:
            self._load_fingerprints(history)
        if history.dirty:
            self._rebuild(history)
        return history

    def _load_fingerprints(self, history: _History) -> None:
        """Read who else uses this customer's fingerprints, and those accounts' histories."""
        missing = [key for key in history.links if key not in self._fingerprints]
        if missing:
            for key in missing:
                self._fingerprints[key] = {}
            for link in self.store.fingerprint_links(missing):
                self._add_fingerprint(
                    link["kind"], link["fingerprint"], link["customer_id"], to_us(link["seen_at"])
                )
        others = {
            other
            for key in history.links
            for other in self._fingerprints.get(key, {})
            if other not in self._histories
        }
        if others:
            self._install(others, self.store.histories(others))
        history.fingerprints_loaded = True

    def _add_fingerprint(
        self, kind: str, fingerprint: str, customer_id: str, seen: int | None
    ) -> None:
        assert seen is not None
        accounts = self._fingerprints.get((kind, fingerprint))
        if accounts is not None:
            accounts[customer_id] = min(seen, accounts.get(customer_id, seen))

    # --- sub-streams ------------------------------------------------------------------------

    def _events(self, history: _History, source: str) -> list[tuple[int, str, Record]]:
        """All events of `source` in one customer's history, sorted by (time, id)."""
        events: list[tuple[int, str, Record]] = []
        if source == "orders":
            events = [(o["ordered_at"], oid, o) for oid, o in history.orders.items()]
        elif source == "refund_requests":
            for rid, r in history.refunds.items():
                events.append((r["requested_at"], rid, self._refund_event(history, r)))
        elif source == "outcome_changes":
            for rid, outcomes in history.outcomes.items():
                refund = history.refunds.get(rid)
                if refund is None:
                    continue
                for change in outcome_changes(outcomes, refund["amount_requested"]):
                    events.append((change[0], change[1], self._change_event(refund, change)))
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    @staticmethod
    def _refund_event(history: _History, refund: Record) -> Record:
        order = history.orders.get(refund["order_id"])
        delivered = None if order is None else order["delivered_at"]
        event = dict(refund)
        event["days_from_delivery_to_claim"] = refund_event_values(
            refund["requested_at"], delivered
        )
        return event

    @staticmethod
    def _change_event(refund: Record, change: tuple[int, str, int, float, int]) -> Record:
        return {
            "customer_id": refund["customer_id"],
            "refund_id": refund["refund_id"],
            "abusive_change": change[2],
            "abusive_amount_change": change[3],
            "resolved_change": change[4],
        }

    def _rebuild(self, history: _History) -> None:
        """Recompute every sub-stream of one customer from its rows."""
        history.streams = {}
        for source, subs in self._subs_by_source.items():
            events = self._events(history, source)
            for time, event_id, record in events:
                self._offer(history, subs, time, event_id, record)
        history.dirty = False

    def _offer(
        self,
        history: _History,
        subs: Sequence[tuple[int, SubStream, str]],
        time: int,
        event_id: str,
        record: Mapping[str, Any],
    ) -> bool:
        """Push one event into every sub-stream it belongs to; False if one was out of order."""
        in_order = True
        for index, sub, key_column in subs:
            if not _passes(sub.filters, record):
                continue
            key = (index, record[key_column])
            stream = history.streams.get(key)
            if stream is None:
                stream = history.streams[key] = _Stream(self._columns[index])
            if not stream.push(time, event_id, record):
                in_order = False
        return in_order

    def _push_or_dirty(
        self, history: _History, source: str, time: int, event_id: str, record: Mapping[str, Any]
    ) -> None:
        if history.dirty:
            return
        subs = self._subs_by_source.get(source, [])
        if not self._offer(history, subs, time, event_id, record):
            history.dirty = True

    # --- appending --------------------------------------------------------------------------

    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Record new rows of one raw table: write them to the store, then to memory."""
        self.append_many({table: rows})

    def append_many(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Record rows of several tables in one store transaction (in dependency order)."""
        unknown = set(rows) - set(TABLES)
        if unknown:
            raise DataValidationError(f"unknown table(s): {', '.join(sorted(unknown))}")
        with self._lock:
            self.store.write(rows)
            self._find_orphans(rows)
            for name in TABLES:
                for row in rows.get(name, ()):
                    self._apply(name, normalise(name, row))

    def _find_orphans(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Note outcomes that arrive before their refund request, to apply when it comes.

        An outcome names only its refund. If the refund is in memory, so is its customer; if
        the store has it, its customer is simply not in memory yet. Only an outcome whose
        refund is nowhere yet is kept aside, so nothing is lost from memory that the store has.
        """
        new_refunds = {r["refund_id"] for r in rows.get("refund_requests", ())}
        unknown = {
            o["refund_id"]
            for o in rows.get("outcomes", ())
            if o["refund_id"] not in self._refund_owner and o["refund_id"] not in new_refunds
        }
        if unknown and not self._complete:
            unknown -= set(self.store.refund_owners(unknown))
        self._orphan_refunds = unknown

    def _cached(self, customer_id: str) -> _History | None:
        history = self._histories.get(customer_id)
        if history is None and self._complete:
            history = self._histories[customer_id] = _History(customer_id)
            history.fingerprints_loaded = True
        return history

    def _apply(self, table: str, r: Record) -> None:
        """Apply one written row to whatever is in memory (nothing, if nothing it touches is)."""
        if table == "customers":
            history = self._cached(r["customer_id"])
            if history is not None:
                history.customer = r
        elif table == "orders":
            history = self._cached(r["customer_id"])
            if history is not None:
                known = r["order_id"] in history.orders
                history.orders[r["order_id"]] = r
                if known:
                    history.dirty = True  # a changed order changes its refunds' derived values
                else:
                    self._push_or_dirty(history, "orders", r["ordered_at"], r["order_id"], r)
        elif table == "refund_requests":
            history = self._cached(r["customer_id"])
            if history is not None:
                known = r["refund_id"] in history.refunds
                history.refunds[r["refund_id"]] = r
                self._refund_owner[r["refund_id"]] = r["customer_id"]
                orphans = self._orphans.pop(r["refund_id"], None)
                if orphans:
                    history.outcomes.setdefault(r["refund_id"], []).extend(orphans)
                if known or r["refund_id"] in history.outcomes:
                    history.dirty = True
                else:
                    event = self._refund_event(history, r)
                    self._push_or_dirty(
                        history, "refund_requests", r["requested_at"], r["refund_id"], event
                    )
        elif table == "outcomes":
            self._apply_outcome(r)
        elif table == "identity_links":
            seen = r["seen_at"]
            key = (r["kind"], r["fingerprint"])
            accounts = self._fingerprints.get(key)
            if accounts is None and self._complete:
                accounts = self._fingerprints[key] = {}
            if accounts is not None:
                accounts[r["customer_id"]] = min(seen, accounts.get(r["customer_id"], seen))
            history = self._cached(r["customer_id"])
            if history is not None:
                history.links[key] = min(seen, history.links.get(key, seen))
                if key not in self._fingerprints:
                    history.fingerprints_loaded = False

    def _apply_outcome(self, r: Record) -> None:
        if r["refund_id"] in self._orphan_refunds:
            self._orphans.setdefault(r["refund_id"], []).append(
                (r["known_at"], r["outcome_id"], bool(r["is_abusive"]))
            )
            return
        owner = self._refund_owner.get(r["refund_id"])
        history = None if owner is None else self._histories.get(owner)
        if history is None:
            return
        outcomes = history.outcomes.setdefault(r["refund_id"], [])
        entry = (r["known_at"], r["outcome_id"], bool(r["is_abusive"]))
        replaced = any(o[1] == r["outcome_id"] for o in outcomes)
        if replaced:
            outcomes[:] = [o for o in outcomes if o[1] != r["outcome_id"]]
        last = max(outcomes) if outcomes else None
        outcomes.append(entry)
        refund = history.refunds.get(r["refund_id"])
        if replaced or refund is None or (last is not None and entry <= last):
            history.dirty = True
            return
        change = outcome_changes(outcomes, refund["amount_requested"])[-1]
        self._push_or_dirty(
            history, "outcome_changes", change[0], change[1], self._change_event(refund, change)
        )

    # --- rows -------------------------------------------------------------------------------

    def row(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The feature row of `request` (a refund_requests row) as of its `requested_at`."""
        values = self._evaluate(request)
        return {name: values[name] for name in self.feature_names}

    def vector(self, request: Mapping[str, Any]) -> list[float]:
        """The feature row as floats in `FEATURE_NAMES` order, ready for a model."""
        values = self._evaluate(request)
        return [float(values[name]) for name in self.feature_names]

    def score_and_record(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The request's row; then the request is appended, so later requests see it."""
        with self._lock:
            result = self.row(request)
            self.append("refund_requests", [request])
        return result

    def _evaluate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            return self._evaluate_locked(request)

    def _evaluate_locked(self, request: Mapping[str, Any]) -> dict[str, Any]:
        req = normalise("refund_requests", request)
        t = req["requested_at"]
        if t is None:
            raise DataValidationError("a refund request needs requested_at")
        history = self._history(req["customer_id"], with_links=True)
        order = history.orders.get(req["order_id"])
        if order is None:
            raise NotFoundError(
                f"order {req['order_id']} of customer {req['customer_id']} is not in the event "
                "store; append it before scoring a refund request about it"
            )
        subjects = {"refund_requests": req, "orders": order, "customers": history.customer}
        ctx = _Request(t, subjects, history)
        values: dict[str, Any] = {}
        for feature, evaluate in zip(self.features, self._plan, strict=True):
            values[feature.name] = evaluate(ctx, values)
        return values

    # --- one evaluator per aggregation kind -------------------------------------------------

    def _compile(self, f: Feature) -> Callable[[_Request, dict[str, Any]], Any]:
        """Bind one feature's definition to the evaluator of its aggregation kind."""
        agg = f.aggregation
        empty = f.empty
        if agg == Aggregation.RATIO:
            num, den = f.numerator, f.denominator
            assert num is not None and den is not None

            def ratio(ctx: _Request, done: dict[str, Any]) -> Any:
                d = done[den]
                return done[num] / d if d != 0 else empty

            return ratio
        if agg in (Aggregation.LINKED_ACCOUNTS, Aggregation.LINKED_SUM):
            return self._compile_linked(f)
        if agg in (
            Aggregation.COUNT,
            Aggregation.SUM,
            Aggregation.MEAN,
            Aggregation.DISTINCT,
            Aggregation.DAYS_SINCE_LAST,
        ):
            return self._compile_history(f)
        return self._compile_subject(f)

    def _compile_subject(self, f: Feature) -> Callable[[_Request, dict[str, Any]], Any]:
        table = SUBJECT_TABLES[f.entity]
        agg, column, empty = f.aggregation, f.column, f.empty
        if agg == Aggregation.MATCHES:
            filters = f.filters

            def matches(ctx: _Request, done: dict[str, Any]) -> Any:
                subject = ctx.subjects[table]
                return 1 if subject is not None and _passes(filters, subject) else 0

            return matches
        assert column is not None
        if agg == Aggregation.FIELD:
            cast: Callable[[Any], Any] = int if f.integer else float

            def field_value(ctx: _Request, done: dict[str, Any]) -> Any:
                subject = ctx.subjects[table]
                value = None if subject is None else subject.get(column)
                return empty if value is None else cast(value)

            return field_value
        if agg == Aggregation.CODE:
            codes = {v: i for i, v in enumerate(f.values)}
            after = f.visible_after

            def code(ctx: _Request, done: dict[str, Any]) -> Any:
                subject = ctx.subjects[table]
                if subject is None:
                    return UNKNOWN_CODE
                if after is not None:
                    when = subject.get(after)
                    if when is None or when >= ctx.t:
                        return UNKNOWN_CODE
                return codes.get(str(subject.get(column)), UNKNOWN_CODE)

            return code
        if agg == Aggregation.HAPPENED:

            def happened(ctx: _Request, done: dict[str, Any]) -> Any:
                subject = ctx.subjects[table]
                when = None if subject is None else subject.get(column)
                return 1 if when is not None and when < ctx.t else 0

            return happened
        # AGE_DAYS sees the subject's own creation time even at `t`; DAYS_SINCE_EVENT needs
        # the event strictly before `t`.
        own_time = agg == Aggregation.AGE_DAYS

        def days(ctx: _Request, done: dict[str, Any]) -> Any:
            subject = ctx.subjects[table]
            when = None if subject is None else subject.get(column)
            if when is None or (not own_time and when >= ctx.t):
                return empty
            return (ctx.t - when) / DAY_US

        return days

    def _bounds(
        self,
        ctx: _Request,
        index: int,
        key: str,
        window_us: int | None,
    ) -> tuple[_Stream | None, int, int]:
        """The stream of sub-stream `index` for entity `key`, and positions [lo, hi) of the
        events in the window before `ctx.t`."""
        cache_key = (index, window_us)
        found = ctx.bounds.get(cache_key)
        if found is not None:
            return found
        stream = ctx.history.streams.get((index, key))
        if stream is None:
            result: tuple[_Stream | None, int, int] = (None, 0, 0)
        else:
            times = stream.times
            hi = bisect_left(times, ctx.t)
            lo = 0 if window_us is None else bisect_left(times, ctx.t - window_us, 0, hi)
            result = (stream, lo, hi)
        ctx.bounds[cache_key] = result
        return result

    def _compile_history(self, f: Feature) -> Callable[[_Request, dict[str, Any]], Any]:
        agg, column, empty, window = f.aggregation, f.column, f.empty, f.window_start_us
        indexes = [self._sub_index[s] for s in substreams_of(f)]
        by_order = f.entity == Entity.ORDER
        bounds = self._bounds

        def key_of(ctx: _Request) -> str:
            if by_order:
                request = ctx.subjects["refund_requests"]
                assert request is not None
                return str(request["order_id"])
            return ctx.history.customer_id

        if agg == Aggregation.DISTINCT:

            def distinct(ctx: _Request, done: dict[str, Any]) -> Any:
                key = key_of(ctx)
                used = 0
                for index in indexes:
                    _, lo, hi = bounds(ctx, index, key, window)
                    if hi > lo:
                        used += 1
                return used

            return distinct
        (index,) = indexes
        if agg == Aggregation.COUNT:

            def count(ctx: _Request, done: dict[str, Any]) -> Any:
                _, lo, hi = bounds(ctx, index, key_of(ctx), window)
                return hi - lo

            return count
        if agg == Aggregation.DAYS_SINCE_LAST:

            def days_since_last(ctx: _Request, done: dict[str, Any]) -> Any:
                stream, lo, hi = bounds(ctx, index, key_of(ctx), window)
                if stream is None or hi <= lo:
                    return empty
                return (ctx.t - stream.times[hi - 1]) / DAY_US

            return days_since_last
        assert column is not None
        zero: Any = 0 if column in SOURCES[f.source].integer_columns else 0.0
        if agg == Aggregation.SUM:

            def total(ctx: _Request, done: dict[str, Any]) -> Any:
                stream, lo, hi = bounds(ctx, index, key_of(ctx), window)
                if stream is None:
                    return zero
                sums = stream.prefix[column]
                return sums[hi] - sums[lo]

            return total

        def mean(ctx: _Request, done: dict[str, Any]) -> Any:
            stream, lo, hi = bounds(ctx, index, key_of(ctx), window)
            if stream is None or hi <= lo:
                return empty
            sums = stream.prefix[column]
            return (sums[hi] - sums[lo]) / (hi - lo)

        return mean

    def _linked_accounts(self, ctx: _Request) -> dict[str | None, set[str]]:
        """Other accounts sharing a fingerprint with the customer, both seen before `t`."""
        if ctx.linked is None:
            t, me = ctx.t, ctx.history.customer_id
            linked: dict[str | None, set[str]] = {kind: set() for kind in LINK_KINDS}
            for (kind, fingerprint), seen in ctx.history.links.items():
                if seen >= t:
                    continue
                found = linked.setdefault(kind, set())
                for other, other_seen in self._fingerprints.get((kind, fingerprint), {}).items():
                    if other_seen < t and other != me:
                        found.add(other)
            linked[None] = set().union(*linked.values())
            ctx.linked = linked
        return ctx.linked

    def _compile_linked(self, f: Feature) -> Callable[[_Request, dict[str, Any]], Any]:
        kind = f.link_kind
        linked_accounts = self._linked_accounts
        if f.aggregation == Aggregation.LINKED_ACCOUNTS:

            def count_linked(ctx: _Request, done: dict[str, Any]) -> Any:
                return len(linked_accounts(ctx)[kind])

            return count_linked
        (sub,) = substreams_of(f)
        index, column = self._sub_index[sub], f.column
        assert column is not None

        def linked_sum(ctx: _Request, done: dict[str, Any]) -> Any:
            total = 0
            t = ctx.t
            for other in linked_accounts(ctx)[kind]:
                history = self._history(other, with_links=False)
                stream = history.streams.get((index, other))
                if stream is not None:
                    total += stream.prefix[column][bisect_left(stream.times, t)]
            return total

        return linked_sum
