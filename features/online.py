"""The online builder: the feature row of one incoming refund request, from the event store.

The same definitions as the batch builder, interpreted one request at a time in plain Python
(no pandas on this path: a row must cost a fraction of a millisecond). Each customer's history
is read from the event store once and then kept in memory as sorted event times with running
sums per sub-stream, so a windowed count is two bisections and a sum two subtractions. The
definitions are compiled once into a short plan (see "the evaluation plan" below): the features
reading one sub-stream share its bisections, and a row is written by position.

`customer_vector(customer_id, at)` gives the customer-level features alone as of any time: the
customer's credit snapshot row, which the credit-tier model scores.

The store is the source of truth. Every append is written to the store first, then applied to
the in-memory histories it touches; a history not yet in memory is read from the store when a
request needs it. A fresh process therefore gives the same rows. Appends made by another
process are not seen by this one's memory: one process should own the appends, or each should
re-read (a new builder) when it needs them.
"""

from __future__ import annotations

import math
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
    """What one evaluation needs: the time, the subject rows and the customer's history."""

    __slots__ = ("history", "order_id", "subjects", "t")

    def __init__(self, t: int, subjects: dict[str, Record | None], history: _History) -> None:
        self.t = t
        self.subjects = subjects
        self.history = history
        request = subjects.get("refund_requests")
        self.order_id: str | None = None if request is None else str(request["order_id"])


Evaluator = Callable[[_Request, list[Any]], None]
"""Writes the values of some features into their positions of a row."""


_NAN = float("nan")

_SUMMING = frozenset({Aggregation.SUM, Aggregation.MEAN, Aggregation.LINKED_SUM})
"""Aggregations that read a sub-stream's running sums of a column."""


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
        # Each sub-stream keeps running sums of the columns its features add up, and no others.
        summed: dict[SubStream, set[str]] = {}
        for f in features:
            if f.aggregation in _SUMMING and f.column is not None:
                for sub in substreams_of(f):
                    summed.setdefault(sub, set()).add(f.column)
        self._columns: dict[int, list[tuple[str, bool]]] = {}
        for i, sub in enumerate(self._subs):
            spec = SOURCES[sub.source]
            key_column = spec.entity_column(sub.entity)
            self._subs_by_source.setdefault(sub.source, []).append((i, sub, key_column))
            used = summed.get(sub, set())
            self._columns[i] = [(c, c in spec.integer_columns) for c in spec.columns if c in used]
        self._position = {f.name: i for i, f in enumerate(features)}
        self._plan: tuple[Evaluator, ...] = self._compile_plan(tuple(enumerate(features)))
        customer_level = {Entity.CUSTOMER, Entity.LINKED_ACCOUNTS}
        self._customer_plan: tuple[Evaluator, ...] = self._compile_plan(
            tuple((i, f) for i, f in enumerate(features) if f.entity in customer_level)
        )
        self._histories: dict[str, _History] = {}
        self._refund_owner: dict[str, str] = {}
        self._fingerprints: dict[tuple[str, str], dict[str, int]] = {}
        self._orphans: dict[str, list[tuple[int, str, bool]]] = {}
        self._orphan_refunds: set[str] = set()
        self._complete = False
        self._listeners: list[Callable[[Mapping[str, Sequence[Mapping[str, Any]]]], None]] = []
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

    # --- a bounded cache of histories (`serving.history`) -------------------------------------

    def history_count(self) -> int:
        """Customer histories held in memory."""
        return len(self._histories)

    def cached_customers(self) -> list[str]:
        """The customers whose histories are in memory."""
        with self._lock:
            return list(self._histories)

    def install(self, customer_ids: Iterable[str], rows: Mapping[str, Sequence[Record]]) -> None:
        """Replace the histories of `customer_ids` in memory with their store rows (`rows`, as
        `EventStore.histories` reads them). Who uses any of their fingerprints, before or now,
        is forgotten too: it is read again when a customer needs it."""
        with self._lock:
            ids = list(customer_ids)
            for customer_id in ids:
                old = self._histories.get(customer_id)
                if old is not None:
                    for refund_id in old.refunds:
                        self._refund_owner.pop(refund_id, None)
                    for key in old.links:
                        self._fingerprints.pop(key, None)
            self._install(ids, rows)
            for link in rows.get("identity_links", ()):
                self._fingerprints.pop((link["kind"], link["fingerprint"]), None)

    def forget(self, customer_ids: Iterable[str]) -> None:
        """Drop these customers' histories from memory, with who-shares-what of their
        fingerprints (a history needed again is read from the store)."""
        with self._lock:
            for customer_id in customer_ids:
                history = self._histories.pop(customer_id, None)
                if history is None:
                    continue
                for refund_id in history.refunds:
                    self._refund_owner.pop(refund_id, None)
                for key in history.links:
                    self._fingerprints.pop(key, None)

    def fingerprint_keys(self, customer_id: str) -> list[tuple[str, str]]:
        """The (kind, fingerprint) pairs of the customer's history in memory."""
        history = self._histories.get(customer_id)
        return [] if history is None else list(history.links)

    def replace_fingerprints(
        self, customer_id: str, keys: Iterable[tuple[str, str]], links: Iterable[Record]
    ) -> None:
        """Take who uses each of `keys` from `links` (their store rows, all of them), replacing
        what memory held; the customer's fingerprints then count as loaded."""
        with self._lock:
            for key in keys:
                self._fingerprints[key] = {}
            for link in links:
                self._add_fingerprint(
                    link["kind"], link["fingerprint"], link["customer_id"], to_us(link["seen_at"])
                )
            history = self._histories.get(customer_id)
            if history is not None:
                history.fingerprints_loaded = True

    def linked_in_memory(self, customer_id: str) -> set[str] | None:
        """The other accounts sharing any fingerprint with the customer, as memory has them;
        None when memory does not know (the history or a fingerprint's users are not held)."""
        history = self._histories.get(customer_id)
        if history is None or not history.fingerprints_loaded:
            return None
        found: set[str] = set()
        for key in history.links:
            accounts = self._fingerprints.get(key)
            if accounts is None:
                return None
            found.update(accounts)
        found.discard(customer_id)
        return found

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
        self._check_tables(rows)
        with self._lock:
            self.store.write(rows)
            self._remember(rows)

    def remember(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Take into memory rows that are already in the store (written by a transaction of
        the caller's, or by another process on this builder's behalf)."""
        self._check_tables(rows)
        with self._lock:
            self._remember(rows)

    @staticmethod
    def _check_tables(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        unknown = set(rows) - set(TABLES)
        if unknown:
            raise DataValidationError(f"unknown table(s): {', '.join(sorted(unknown))}")

    def _remember(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Apply written rows to memory and tell the listeners; the caller holds the lock."""
        self._find_orphans(rows)
        for name in TABLES:
            for row in rows.get(name, ()):
                self._apply(name, normalise(name, row))
        for listener in self._listeners:
            listener(rows)

    def on_append(
        self, listener: Callable[[Mapping[str, Sequence[Mapping[str, Any]]]], None]
    ) -> None:
        """Call `listener` with the rows of every append, once they are in memory (for caches
        of values computed from the histories)."""
        self._listeners.append(listener)

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
        return dict(zip(self.feature_names, self._evaluate(request), strict=True))

    def vector(self, request: Mapping[str, Any]) -> list[float]:
        """The feature row as floats in `FEATURE_NAMES` order, ready for a model."""
        return list(map(float, self._evaluate(request)))

    def customer_vector(self, customer_id: str, at: Any) -> list[float] | None:
        """The customer's own and linked-account features as of `at`, in a full row.

        These features depend only on the customer and the time, so this is the customer's
        credit snapshot row at `at` (`features.batch.BatchBuilder.snapshot_rows`), in the
        positions a request's row has them; the request and order features are NaN. None when
        there is no snapshot: the customer is unknown or signed up at `at` or later.
        """
        t = to_us(at)
        if t is None:
            raise DataValidationError("a customer snapshot needs a time")
        with self._lock:
            history = self._history(customer_id, with_links=True)
            customer = history.customer
            signup = None if customer is None else customer.get("signup_at")
            if signup is None or signup >= t:
                return None
            ctx = _Request(t, {"customers": customer}, history)
            out: list[Any] = [_NAN] * len(self.features)
            for evaluate in self._customer_plan:
                evaluate(ctx, out)
        return list(map(float, out))

    def linked_customers(self, customer_ids: Iterable[str]) -> set[str]:
        """Accounts sharing any fingerprint with these customers, at any time, as in memory."""
        found: set[str] = set()
        for customer_id in customer_ids:
            history = self._histories.get(customer_id)
            if history is None:
                continue
            for key in history.links:
                found.update(self._fingerprints.get(key, ()))
        return found

    def refund_owner(self, refund_id: str) -> str | None:
        """The customer of a refund request held in memory, if any."""
        return self._refund_owner.get(refund_id)

    def score_and_record(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The request's row; then the request is appended, so later requests see it."""
        with self._lock:
            result = self.row(request)
            self.append("refund_requests", [request])
        return result

    def _evaluate(self, request: Mapping[str, Any]) -> list[Any]:
        with self._lock:
            return self._evaluate_locked(request)

    def _evaluate_locked(self, request: Mapping[str, Any]) -> list[Any]:
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
        out: list[Any] = [None] * len(self.features)
        for evaluate in self._plan:
            evaluate(ctx, out)
        return out

    # --- the evaluation plan ----------------------------------------------------------------
    #
    # A row is evaluated by a short list of evaluators, each writing several features: one per
    # subject feature, one per history sub-stream (its events are found once, and every window
    # of every count, sum, mean and days-since feature on it is read off the same positions),
    # one per group of "distinct" features, one per linked-account feature, and the ratios
    # last, from the values already written.

    def _compile_plan(self, features: tuple[tuple[int, Feature], ...]) -> tuple[Evaluator, ...]:
        """The evaluators of `features` (position in the row, definition), ratios last."""
        plan: list[Evaluator] = []
        streams: dict[int, list[tuple[int, Feature]]] = {}
        distinct: dict[tuple[int, ...], list[tuple[int, Feature]]] = {}
        ratios: list[tuple[int, Feature]] = []
        linked: list[tuple[int, Feature]] = []
        for pos, f in features:
            agg = f.aggregation
            if agg == Aggregation.RATIO:
                ratios.append((pos, f))
            elif agg in (Aggregation.LINKED_ACCOUNTS, Aggregation.LINKED_SUM):
                linked.append((pos, f))
            elif agg == Aggregation.DISTINCT:
                indexes = tuple(self._sub_index[s] for s in substreams_of(f))
                distinct.setdefault(indexes, []).append((pos, f))
            elif agg in (
                Aggregation.COUNT,
                Aggregation.SUM,
                Aggregation.MEAN,
                Aggregation.DAYS_SINCE_LAST,
            ):
                (sub,) = substreams_of(f)
                streams.setdefault(self._sub_index[sub], []).append((pos, f))
            else:
                plan.append(self._compile_subject(pos, f))
        plan.extend(self._compile_stream(index, members) for index, members in streams.items())
        plan.extend(self._compile_distinct(idx, members) for idx, members in distinct.items())
        if linked:
            plan.append(self._compile_linked(linked))
        if ratios:
            plan.append(self._compile_ratios(ratios))
        return tuple(plan)

    def _compile_ratios(self, ratios: list[tuple[int, Feature]]) -> Evaluator:
        """All ratios, in definition order (a ratio may divide earlier ratios)."""
        terms = []
        for pos, f in ratios:
            assert f.numerator is not None and f.denominator is not None
            terms.append((pos, self._position[f.numerator], self._position[f.denominator], f.empty))
        plan = tuple(terms)

        def ratios_(ctx: _Request, out: list[Any]) -> None:
            for pos, num, den, empty in plan:
                d = out[den]
                out[pos] = out[num] / d if d != 0 else empty

        return ratios_

    def _compile_subject(self, pos: int, f: Feature) -> Evaluator:
        """A property of the request, its order or the customer, as of `t`."""
        table = SUBJECT_TABLES[f.entity]
        agg, column, empty = f.aggregation, f.column, f.empty
        if agg == Aggregation.MATCHES:
            filters = f.filters

            def matches(ctx: _Request, out: list[Any]) -> None:
                subject = ctx.subjects[table]
                out[pos] = 1 if subject is not None and _passes(filters, subject) else 0

            return matches
        assert column is not None
        if agg == Aggregation.FIELD:
            cast: Callable[[Any], Any] = int if f.integer else float

            def field_value(ctx: _Request, out: list[Any]) -> None:
                subject = ctx.subjects[table]
                value = None if subject is None else subject.get(column)
                out[pos] = empty if value is None else cast(value)

            return field_value
        if agg == Aggregation.CODE:
            codes = {v: i for i, v in enumerate(f.values)}
            after = f.visible_after

            def code(ctx: _Request, out: list[Any]) -> None:
                subject = ctx.subjects[table]
                value = UNKNOWN_CODE
                if subject is not None:
                    when = None if after is None else subject.get(after)
                    if after is None or (when is not None and when < ctx.t):
                        value = codes.get(str(subject.get(column)), UNKNOWN_CODE)
                out[pos] = value

            return code
        if agg == Aggregation.HAPPENED:

            def happened(ctx: _Request, out: list[Any]) -> None:
                subject = ctx.subjects[table]
                when = None if subject is None else subject.get(column)
                out[pos] = 1 if when is not None and when < ctx.t else 0

            return happened
        # AGE_DAYS sees the subject's own creation time even at `t`; DAYS_SINCE_EVENT needs
        # the event strictly before `t`.
        own_time = agg == Aggregation.AGE_DAYS

        def days(ctx: _Request, out: list[Any]) -> None:
            subject = ctx.subjects[table]
            when = None if subject is None else subject.get(column)
            if when is None or (not own_time and when >= ctx.t):
                out[pos] = empty
            else:
                out[pos] = (ctx.t - when) / DAY_US

        return days

    def _compile_stream(self, index: int, members: list[tuple[int, Feature]]) -> Evaluator:
        """One evaluator for every count, sum, mean and days-since feature on one sub-stream.

        The events before `t` end at one position for every window; each window adds one
        bisection for its start, and each feature is a subtraction or two from there. The
        evaluator is written out as straight-line Python for this sub-stream's windows and
        features (as `dataclasses` writes an `__init__`): a loop over the windows and over
        each window's features cost about twice as much, most of it in the looping.
        """
        by_order = self._subs[index].entity == Entity.ORDER
        integer_columns = SOURCES[self._subs[index].source].integer_columns
        constants: list[Any] = []  # values that have no literal (NaN), passed by name

        def constant(value: Any) -> str:
            constants.append(value)
            return f"C[{len(constants) - 1}]"

        # Per window: counts, (position, column) sums, (position, column, empty) means,
        # (position, empty) days since the latest event.
        windows: dict[int | None, tuple[list[Any], list[Any], list[Any], list[Any]]] = {}
        missing: list[str] = []  # each feature's value when there are no events
        for pos, f in members:
            counts, sums, means, lasts = windows.setdefault(f.window_start_us, ([], [], [], []))
            agg = f.aggregation
            if agg == Aggregation.COUNT:
                counts.append(pos)
                missing.append(f"    out[{pos}] = 0")
            elif agg == Aggregation.SUM:
                assert f.column is not None
                sums.append((pos, f.column))
                zero = "0" if f.column in integer_columns else "0.0"
                missing.append(f"    out[{pos}] = {zero}")
            elif agg == Aggregation.MEAN:
                means.append((pos, f.column, constant(f.empty)))
                missing.append(f"    out[{pos}] = {constant(f.empty)}")
            else:
                lasts.append((pos, constant(f.empty)))
                missing.append(f"    out[{pos}] = {constant(f.empty)}")
        key = "ctx.order_id" if by_order else "ctx.history.customer_id"
        lines = [
            "def stream_features(ctx, out):",
            f"    stream = ctx.history.streams.get(({index}, {key}))",
            "    if stream is None:",
            *("    " + line for line in missing),
            "        return",
            "    times, prefix, t = stream.times, stream.prefix, ctx.t",
            "    hi = bisect_left(times, t)",
        ]
        for span, (counts, sums, means, lasts) in windows.items():
            if span is None:
                lines.append("    lo = 0")
            else:
                lines.append(f"    lo = bisect_left(times, t - {span}, 0, hi)")
            lines.append("    n = hi - lo")
            lines.extend(f"    out[{pos}] = n" for pos in counts)
            for pos, column in sums:
                lines.append(f"    total = prefix[{column!r}]")
                lines.append(f"    out[{pos}] = total[hi] - total[lo]")
            for pos, column, empty in means:
                lines.append(f"    total = prefix[{column!r}]")
                lines.append(f"    out[{pos}] = (total[hi] - total[lo]) / n if n > 0 else {empty}")
            for pos, empty in lasts:
                lines.append(f"    out[{pos}] = (t - times[hi - 1]) / DAY_US if n > 0 else {empty}")
        namespace: dict[str, Any] = {"bisect_left": bisect_left, "DAY_US": DAY_US, "C": constants}
        exec("\n".join(lines), namespace)  # the source is built above, from the definitions
        evaluate: Evaluator = namespace["stream_features"]
        return evaluate

    def _compile_distinct(
        self, indexes: tuple[int, ...], members: list[tuple[int, Feature]]
    ) -> Evaluator:
        """One evaluator for "distinct" features over the same values and several windows.

        A value was used in a window when its sub-stream's latest event before `t` lies in
        the window: one bisection per value, whatever the number of windows.
        """
        by_order = self._subs[indexes[0]].entity == Entity.ORDER
        positions = tuple(pos for pos, _ in members)
        spans = tuple(f.window_start_us for _, f in members)

        def distinct(ctx: _Request, out: list[Any]) -> None:
            key = ctx.order_id if by_order else ctx.history.customer_id
            streams, t = ctx.history.streams, ctx.t
            used = [0] * len(spans)
            for index in indexes:
                stream = streams.get((index, key))  # type: ignore[arg-type]
                if stream is None:
                    continue
                times = stream.times
                hi = bisect_left(times, t)
                if hi == 0:
                    continue
                latest = times[hi - 1]
                for i, span in enumerate(spans):
                    if span is None or latest >= t - span:
                        used[i] += 1
            for pos, value in zip(positions, used, strict=True):
                out[pos] = value

        return distinct

    def _linked_accounts(self, ctx: _Request) -> dict[str | None, set[str]] | None:
        """Other accounts sharing a fingerprint with the customer, both seen before `t`, by
        link kind (None: any kind); None when there are none, as for most customers."""
        t, me = ctx.t, ctx.history.customer_id
        fingerprints = self._fingerprints
        found: list[tuple[str, str]] = []
        for (kind, fingerprint), seen in ctx.history.links.items():
            if seen >= t:
                continue
            accounts = fingerprints.get((kind, fingerprint))
            if accounts is None:
                continue
            for other, other_seen in accounts.items():
                if other_seen < t and other != me:
                    found.append((kind, other))
        if not found:
            return None
        linked: dict[str | None, set[str]] = {kind: set() for kind in LINK_KINDS}
        for kind, other in found:
            linked.setdefault(kind, set()).add(other)
        linked[None] = set().union(*linked.values())
        return linked

    def _compile_linked(self, features: list[tuple[int, Feature]]) -> Evaluator:
        """One evaluator for the linked-account features: the accounts are found once, and
        each account's total is read once however many link kinds it is counted under."""
        counts: list[tuple[int, str | None]] = []
        sums: list[tuple[int, str | None, int, str]] = []
        for pos, f in features:
            if f.aggregation == Aggregation.LINKED_ACCOUNTS:
                counts.append((pos, f.link_kind))
                continue
            (sub,) = substreams_of(f)
            assert f.column is not None
            sums.append((pos, f.link_kind, self._sub_index[sub], f.column))
        count_plan, sum_plan = tuple(counts), tuple(sums)
        plan_kinds = tuple((pos, f.link_kind) for pos, f in features)
        linked_accounts, history_of = self._linked_accounts, self._history

        def linked_features(ctx: _Request, out: list[Any]) -> None:
            t = ctx.t
            # Kinds of fingerprint the customer had before `t`; for the others, who shares one
            # is unknown, and the feature is missing (None: any kind).
            own: set[str | None] = {k for (k, _), seen in ctx.history.links.items() if seen < t}
            if own:
                own.add(None)
            linked = linked_accounts(ctx)
            if linked is None:  # no linked account: every count and sum is 0
                for pos, kind in plan_kinds:
                    out[pos] = 0 if kind in own else math.nan
                return
            for pos, kind in count_plan:
                out[pos] = len(linked[kind]) if kind in own else math.nan
            known: dict[tuple[str, int, str], Any] = {}
            for pos, kind, index, column in sum_plan:
                if kind not in own:
                    out[pos] = math.nan
                    continue
                total = 0
                for other in linked[kind]:
                    key = (other, index, column)
                    value = known.get(key)
                    if value is None:
                        stream = history_of(other, with_links=False).streams.get((index, other))
                        value = 0
                        if stream is not None:
                            value = stream.prefix[column][bisect_left(stream.times, t)]
                        known[key] = value
                    total += value
                out[pos] = total

        return linked_features
