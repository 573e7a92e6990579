"""The batch builder: point-in-time feature rows for every refund request, and credit snapshots.

Vectorised over all rows at once. Every event stream is sorted by (entity, time, event id) and
indexed by a composite integer key (entity code, rank of the time); one `searchsorted` per window
then finds, for every row at once, the events of its entity strictly before its time `t` and at
or after `t - window`. Counts are differences of positions, sums differences of prefix sums.

Prefix sums of money are accumulated per entity in event order, one addition at a time, exactly
as the online builder does, so both give bit-identical floats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import (
    CUSTOMER_FEATURES,
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
    substreams_of,
)
from features.events import NOT_SET, order_rows_of, source_events, times_us
from features.labels import final_labels
from refund_risk.errors import DataValidationError

Progress = Callable[[str, float], None]

CREDIT_TARGET_DAYS = 90
"""How far ahead of a credit snapshot its target looks."""

CREDIT_TARGET_COLUMNS: tuple[str, ...] = (
    "target_refund_requests_90d",
    "target_abusive_refunds_90d",
    "target_loss_amount_90d",
    "target_has_loss_90d",
    "target_window_complete",
)
"""Columns of a credit snapshot that are targets, never features."""


def _no_progress(stage: str, fraction: float) -> None:
    """Default progress callback: silent."""


# --- sorted streams -------------------------------------------------------------------------


def _segment_cumsum(values: np.ndarray, segment_start: np.ndarray) -> np.ndarray:
    """Running sum within each segment, one addition at a time in order.

    `np.cumsum` over all segments would carry rounding from earlier segments, and pandas'
    grouped cumsum compensates rounding; neither matches the plain running sum the online
    builder keeps. Here step k adds the k-th value of every segment at once, so the loop runs
    as many times as the longest segment has events, each step vectorised.
    """
    n = len(values)
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    pos = np.arange(n) - segment_start
    order = np.argsort(pos, kind="stable")
    edges = np.searchsorted(pos[order], np.arange(int(pos.max()) + 2))
    first = order[edges[0] : edges[1]]
    out[first] = 0.0 + values[first]
    for k in range(1, len(edges) - 1):
        idx = order[edges[k] : edges[k + 1]]
        out[idx] = out[idx - 1] + values[idx]
    return out


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending (`np.unique` hashes millions of values far more slowly)."""
    ordered = np.sort(values)
    if len(ordered) == 0:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _order_by_key_then_id(keys: np.ndarray, ids: np.ndarray | pd.Series) -> np.ndarray:
    """The permutation sorting events by key, and events with equal keys by id (as text).

    Equal keys (one entity, one instant) are rare, so ids are compared only for those: sorting
    millions of id strings would cost more than everything else here.
    """
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    tied = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if len(tied):
        slots = _sorted_unique(np.concatenate([tied, tied + 1]))
        members = order[slots]
        texts = (
            ids.iloc[members].astype("str").tolist()
            if isinstance(ids, pd.Series)
            else [str(x) for x in np.asarray(ids)[members]]
        )
        resorted = sorted(range(len(slots)), key=lambda i: (sorted_keys[slots[i]], texts[i]))
        order[slots] = members[resorted]
    return order


class SortedStream:
    """Events sorted by (entity code, time, event id), answering windowed questions in bulk."""

    def __init__(
        self,
        codes: np.ndarray,
        times: np.ndarray,
        ids: np.ndarray | pd.Series,
        columns: Mapping[str, np.ndarray],
        integer_columns: frozenset[str] | set[str] = frozenset(),
        unique_times: np.ndarray | None = None,
    ) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        # Ranks of times keep the composite key small: (code, rank) fits an int64 where
        # (code, microseconds) would not. A superset of the times (the whole source's) works
        # as well and is shared by all sub-streams of a source.
        self.unique_times = _sorted_unique(times) if unique_times is None else unique_times
        self.modulus = len(self.unique_times) + 1
        keys = codes * self.modulus + np.searchsorted(self.unique_times, times)
        order = _order_by_key_then_id(keys, ids)
        self.keys = keys[order]
        self.codes = codes[order]
        self.times = times[order]
        self.columns = {name: np.asarray(v)[order] for name, v in columns.items()}
        self.integer_columns = frozenset(integer_columns)
        self._prefix: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.codes)

    def before(self, codes: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Per query: the position just past its entity's last event strictly before its time."""
        rank = np.searchsorted(self.unique_times, times, side="left")
        return np.searchsorted(self.keys, codes * self.modulus + rank, side="left")

    def starts(self, codes: np.ndarray) -> np.ndarray:
        """Per query: the position of its entity's first event."""
        return np.searchsorted(self.keys, codes * self.modulus, side="left")

    def _prefix_of(self, column: str) -> np.ndarray:
        if column not in self._prefix:
            values = self.columns[column]
            if column in self.integer_columns:
                prefix = np.zeros(len(values) + 1, dtype=np.int64)
                np.cumsum(values.astype(np.int64), out=prefix[1:])
            else:
                start = np.searchsorted(self.codes, self.codes, side="left")
                prefix = _segment_cumsum(values.astype(np.float64), start)
            self._prefix[column] = prefix
        return self._prefix[column]

    def window_sum(
        self, column: str, lo: np.ndarray, hi: np.ndarray, start: np.ndarray
    ) -> np.ndarray:
        """Sum of `column` over positions [lo, hi) of each query (all inside one entity)."""
        prefix = self._prefix_of(column)
        if column in self.integer_columns:
            return prefix[hi] - prefix[lo]
        if len(prefix) == 0:
            return np.zeros(len(lo), dtype=np.float64)
        upper = np.where(hi > start, prefix[np.maximum(hi - 1, 0)], 0.0)
        lower = np.where(lo > start, prefix[np.maximum(lo - 1, 0)], 0.0)
        return upper - lower


# --- queries and the builder ----------------------------------------------------------------


@dataclass
class Queries:
    """Rows to compute features for: a time each, entity codes, and the subject rows."""

    times: np.ndarray
    codes: dict[Entity, np.ndarray]
    subjects: dict[str, pd.DataFrame]


@dataclass
class _SourceArrays:
    """One source's events: the frame (for filters) and the arrays every sub-stream needs."""

    frame: pd.DataFrame
    times: np.ndarray
    ids: pd.Series
    codes: dict[Entity, np.ndarray]
    columns: dict[str, np.ndarray]
    unique_times: np.ndarray


def filter_columns(source: str) -> list[str]:
    """The event columns the defined features filter `source`'s events on."""
    return sorted(
        {
            flt.column
            for feature in FEATURES
            for sub in substreams_of(feature)
            if sub.source == source
            for flt in sub.filters
        }
    )


def _filter_mask(frame: pd.DataFrame, filters: tuple[Filter, ...]) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for flt in filters:
        column = frame[flt.column]
        if flt.present:
            mask &= column.notna().to_numpy()
        else:
            mask &= column.isin(list(flt.values)).to_numpy(dtype=bool)
    return mask


def _days(t: np.ndarray, then: np.ndarray) -> np.ndarray:
    return (t - then) / DAY_US


class BatchBuilder:
    """Point-in-time feature rows from the five raw tables.

    Construction is cheap; event streams are prepared on first use and then shared by every
    feature and every row set (refund rows and all credit snapshots) built from this object.
    """

    def __init__(self, tables: Mapping[str, pd.DataFrame]) -> None:
        self.tables = tables
        self._index: dict[Entity, pd.Index] = {}
        self._events: dict[str, pd.DataFrame] = {}
        self._sources: dict[str, _SourceArrays] = {}
        self._streams: dict[SubStream, SortedStream] = {}
        self._pairs: dict[str | None, pd.DataFrame] | None = None
        self._link_streams: dict[str | None, SortedStream] = {}
        self._linked_sums: dict[tuple[str | None, SubStream, str], SortedStream] = {}
        self._own_links: dict[str | None, SortedStream] = {}
        self._credit: SortedStream | None = None
        self._customer_codes: np.ndarray | None = None
        self._order_rows: np.ndarray | None = None
        self._signups = np.zeros(0, dtype=np.int64)

    # entity codes

    def entity_index(self, entity: Entity) -> pd.Index:
        """The ids of `entity` seen so far, as an index giving each a code."""
        if entity not in self._index:
            t = self.tables
            if entity == Entity.CUSTOMER:
                base = t["customers"]["customer_id"]
            elif entity == Entity.ORDER:
                # Orders are entities only of refund requests' history: their ids suffice.
                base = t["refund_requests"]["order_id"]
            else:
                raise KeyError(f"{entity} has no codes")
            self._index[entity] = pd.Index(pd.unique(base.dropna()))
        return self._index[entity]

    def codes(self, entity: Entity, ids: pd.Series) -> np.ndarray:
        """Codes of `ids`; an id seen for the first time gets the next free code."""
        index = self.entity_index(entity)
        found = index.get_indexer(pd.Index(ids)).astype(np.int64)
        missing = found < 0
        if missing.any():
            # Validated data never gets here (every id is in its parent table); other data
            # still gets codes, at the cost of one more lookup.
            extra = pd.unique(ids[missing].dropna())
            index = self._index[entity] = index.append(pd.Index(extra))
            found[missing] = index.get_indexer(pd.Index(ids[missing])).astype(np.int64)
        return found

    # event streams

    def events(self, source: str) -> pd.DataFrame:
        """The events of `source` (see `features.events`)."""
        if source not in self._events:
            self._events[source] = source_events(source, self.tables, self.order_rows())
        return self._events[source]

    def _customer_rows(self, codes: np.ndarray) -> np.ndarray:
        """Rows in the customers table of the customers with these codes (-1 if none)."""
        customers = self.tables["customers"]["customer_id"]
        index = self.entity_index(Entity.CUSTOMER)
        if index[: len(customers)].equals(pd.Index(customers)):
            # Codes were handed out in the customers table's order: a code is a row there.
            return np.where(codes < len(customers), codes, -1)
        return pd.Index(customers).get_indexer(index[codes])

    def order_rows(self) -> np.ndarray:
        """Per refund request, the row of its order in the orders table (-1 if none)."""
        if self._order_rows is None:
            self._order_rows = order_rows_of(self.tables["refund_requests"], self.tables["orders"])
        return self._order_rows

    def _source(self, source: str) -> _SourceArrays:
        """A source's events as arrays, computed once and shared by its sub-streams."""
        if source not in self._sources:
            spec = SOURCES[source]
            # Built here, not kept by `events`: the orders source is a copy of the whole orders
            # table, and only its arrays and filter columns are read from now on.
            events = self._events.pop(source, None)
            events = (
                source_events(source, self.tables, self.order_rows()) if events is None else events
            )
            times = events["time_us"].to_numpy(dtype=np.int64)
            self._sources[source] = _SourceArrays(
                frame=events.loc[:, filter_columns(source)],
                times=times,
                ids=events["event_id"].reset_index(drop=True),
                codes={
                    entity: self.codes(entity, events[column])
                    for entity, column in spec.entity_columns
                },
                columns={c: events[c].to_numpy() for c in spec.columns},
                unique_times=_sorted_unique(times[times != NOT_SET]),
            )
        return self._sources[source]

    def stream(self, sub: SubStream) -> SortedStream:
        """The sorted events of one sub-stream."""
        if sub not in self._streams:
            spec = SOURCES[sub.source]
            src = self._source(sub.source)
            codes = src.codes[sub.entity]
            # A filter on a column no defined feature filters on reads the whole events again.
            known = all(flt.column in src.frame.columns for flt in sub.filters)
            frame = src.frame if known else self.events(sub.source)
            keep = _filter_mask(frame, sub.filters) & (codes >= 0) & (src.times != NOT_SET)
            picked = np.flatnonzero(keep)
            self._streams[sub] = SortedStream(
                codes[picked],
                src.times[picked],
                src.ids.iloc[picked].reset_index(drop=True),
                {c: values[picked] for c, values in src.columns.items()},
                set(spec.integer_columns),
                unique_times=src.unique_times,
            )
        return self._streams[sub]

    def link_pairs(self) -> dict[str | None, pd.DataFrame]:
        """Per link kind (None = any kind): (code, other, since) for every pair of accounts
        sharing a fingerprint, `since` being when both had been seen with it (earliest such)."""
        if self._pairs is None:
            links = self.tables["identity_links"]
            kinds, kind_names = pd.factorize(links["kind"])
            frame = pd.DataFrame(
                {
                    "code": self.codes(Entity.CUSTOMER, links["customer_id"]),
                    # Integers join and group much faster than millions of strings.
                    "kind": kinds,
                    "fingerprint": pd.factorize(links["fingerprint"])[0],
                    "seen": times_us(links["seen_at"]),
                }
            )
            size = frame.groupby(["kind", "fingerprint"])["code"].transform("size")
            shared = frame[size.to_numpy() > 1]
            pairs = shared.merge(shared, on=["kind", "fingerprint"], suffixes=("", "_other"))
            pairs = pairs[pairs["code"].to_numpy() != pairs["code_other"].to_numpy()]
            pairs = pairs.assign(since=np.maximum(pairs["seen"], pairs["seen_other"]))
            per_kind = pairs.groupby(["kind", "code", "code_other"], as_index=False)["since"].min()
            result: dict[str | None, pd.DataFrame] = {
                str(kind_names[kind]): group.drop(columns="kind").reset_index(drop=True)
                for kind, group in per_kind.groupby("kind")
            }
            result[None] = per_kind.groupby(["code", "code_other"], as_index=False)["since"].min()
            self._pairs = result
        return self._pairs

    def _pairs_of(self, kind: str | None) -> pd.DataFrame:
        pairs = self.link_pairs()
        if kind in pairs:
            return pairs[kind]
        empty = np.zeros(0, dtype=np.int64)
        return pd.DataFrame({"code": empty, "code_other": empty, "since": empty})

    def own_link_stream(self, kind: str | None) -> SortedStream:
        """One event per fingerprint of `kind` (any kind if None) on each account, when first
        seen: whether a customer had any such fingerprint before `t`."""
        if kind not in self._own_links:
            links = self.tables["identity_links"]
            if kind is not None:
                links = links[links["kind"].to_numpy() == kind]
            self._own_links[kind] = SortedStream(
                self.codes(Entity.CUSTOMER, links["customer_id"]),
                times_us(links["seen_at"]),
                np.arange(len(links)),
                {},
            )
        return self._own_links[kind]

    def link_stream(self, kind: str | None) -> SortedStream:
        """One event per linked account, at the time the link was first visible."""
        if kind not in self._link_streams:
            pairs = self._pairs_of(kind)
            self._link_streams[kind] = SortedStream(
                pairs["code"].to_numpy(),
                pairs["since"].to_numpy(),
                pairs["code_other"].to_numpy(),
                {},
            )
        return self._link_streams[kind]

    def linked_sum_stream(self, kind: str | None, sub: SubStream, column: str) -> SortedStream:
        """The events of linked accounts, each at the time both it and the link were visible."""
        key = (kind, sub, column)
        if key not in self._linked_sums:
            pairs = self._pairs_of(kind)
            own = self.stream(sub)
            events = pd.DataFrame(
                {
                    "code_other": own.codes,
                    "time": own.times,
                    "value": own.columns[column],
                }
            )
            joined = pairs.merge(events, on="code_other")
            visible = np.maximum(joined["since"].to_numpy(), joined["time"].to_numpy())
            self._linked_sums[key] = SortedStream(
                joined["code"].to_numpy(),
                visible,
                joined["code_other"].to_numpy(),
                {column: joined["value"].to_numpy()},
                {column},
            )
        return self._linked_sums[key]

    # evaluation

    def evaluate(self, features: tuple[Feature, ...], queries: Queries) -> dict[str, np.ndarray]:
        """Every feature's values for every query row, in `features` order."""
        values: dict[str, np.ndarray] = {}
        bounds: dict[tuple[SubStream, int | None], tuple[np.ndarray, ...]] = {}
        # A sub-stream's first event and end are the same for every window: held once.
        ends: dict[SubStream, tuple[np.ndarray, np.ndarray]] = {}

        def window(sub: SubStream, feature: Feature) -> tuple[np.ndarray, ...]:
            key = (sub, feature.window_days)
            if key not in bounds:
                s = self.stream(sub)
                codes, t = queries.codes[sub.entity], queries.times
                if sub not in ends:
                    ends[sub] = (s.starts(codes), s.before(codes, t))
                start, hi = ends[sub]
                w = feature.window_start_us
                lo = start if w is None else s.before(codes, t - w)
                bounds[key] = (lo, hi, start)
            return bounds[key]

        # Each feature's positions are released after the last feature that reads them.
        last_window: dict[tuple[SubStream, int | None], int] = {}
        last_sub: dict[SubStream, int] = {}
        for i, feature in enumerate(features):
            for sub in substreams_of(feature):
                last_window[(sub, feature.window_days)] = last_sub[sub] = i
        for i, feature in enumerate(features):
            values[feature.name] = self._evaluate_one(feature, queries, values, window)
            for key in [k for k in bounds if last_window.get(k, i) <= i]:
                del bounds[key]
            for sub in [k for k in ends if last_sub.get(k, i) <= i]:
                del ends[sub]
        return values

    def _evaluate_one(
        self,
        f: Feature,
        q: Queries,
        done: dict[str, np.ndarray],
        window: Callable[[SubStream, Feature], tuple[np.ndarray, ...]],
    ) -> np.ndarray:
        agg, t, n = f.aggregation, q.times, len(q.times)
        if agg == Aggregation.RATIO:
            assert f.numerator is not None and f.denominator is not None
            num, den = done[f.numerator], done[f.denominator]
            out = np.full(n, f.empty, dtype=np.float64)
            nz = den != 0
            out[nz] = num[nz] / den[nz]
            return out
        if agg in (Aggregation.LINKED_ACCOUNTS, Aggregation.LINKED_SUM):
            codes = q.codes[Entity.CUSTOMER]
            if agg == Aggregation.LINKED_ACCOUNTS:
                links = self.link_stream(f.link_kind)
                found = (links.before(codes, t) - links.starts(codes)).astype(np.float64)
            else:
                assert f.column is not None
                (sub,) = substreams_of(f)
                linked = self.linked_sum_stream(f.link_kind, sub, f.column)
                start = linked.starts(codes)
                found = linked.window_sum(f.column, start, linked.before(codes, t), start)
                found = found.astype(np.float64)
            # No fingerprint of this kind known for the customer: who shares it is unknown.
            own = self.own_link_stream(f.link_kind)
            found[own.before(codes, t) == own.starts(codes)] = f.empty
            return found
        if agg in (
            Aggregation.COUNT,
            Aggregation.SUM,
            Aggregation.MEAN,
            Aggregation.DISTINCT,
            Aggregation.DAYS_SINCE_LAST,
        ):
            subs = substreams_of(f)
            if agg == Aggregation.DISTINCT:
                used = np.zeros(n, dtype=np.int64)
                for sub in subs:
                    lo, hi, _ = window(sub, f)
                    used += (hi > lo).astype(np.int64)
                return used
            (sub,) = subs
            lo, hi, start = window(sub, f)
            if agg == Aggregation.COUNT:
                return (hi - lo).astype(np.int64)
            stream = self.stream(sub)
            if agg == Aggregation.DAYS_SINCE_LAST:
                out = np.full(n, f.empty, dtype=np.float64)
                has = hi > lo
                out[has] = _days(t[has], stream.times[hi[has] - 1])
                return out
            assert f.column is not None
            total = stream.window_sum(f.column, lo, hi, start)
            if agg == Aggregation.SUM:
                return total
            count = hi - lo
            out = np.full(n, f.empty, dtype=np.float64)
            has = count > 0
            out[has] = total[has] / count[has]
            return out
        return self._subject(f, q)

    def _subject(self, f: Feature, q: Queries) -> np.ndarray:
        """Evaluators of the subject aggregations: properties of the row's own request, order,
        or customer as of `t`."""
        frame = q.subjects[SUBJECT_TABLES[f.entity]]
        agg, t, n = f.aggregation, q.times, len(q.times)
        if agg == Aggregation.MATCHES:
            return _filter_mask(frame, f.filters).astype(np.int64)
        assert f.column is not None
        column = frame[f.column]
        if agg == Aggregation.FIELD:
            return column.to_numpy(dtype=np.int64 if f.integer else np.float64)
        if agg == Aggregation.CODE:
            codes = pd.Categorical(column, categories=list(f.values)).codes.astype(np.int64)
            if f.visible_after is not None:
                codes[~(times_us(frame[f.visible_after]) < t)] = UNKNOWN_CODE
            return codes
        then = times_us(column)
        happened = then < t
        if agg == Aggregation.HAPPENED:
            return happened.astype(np.int64)
        if agg == Aggregation.AGE_DAYS:
            # The subject's own creation time: visible even when equal to `t`.
            happened = then != NOT_SET
        out = np.full(n, f.empty, dtype=np.float64)
        out[happened] = _days(t[happened], then[happened])
        return out

    # row sets

    def refund_rows(self, features: tuple[Feature, ...] = FEATURES) -> pd.DataFrame:
        """One row per refund request: ids, time, features as of `requested_at`, final labels."""
        raw = self.tables["refund_requests"].reset_index(drop=True)
        orders = self.tables["orders"]
        customers = self.tables["customers"]
        order_pos = self.order_rows()
        if (order_pos < 0).any():
            missing = raw["refund_id"][order_pos < 0].iloc[0]
            raise DataValidationError(f"refund request {missing} is about an unknown order")
        customer_codes = self.codes(Entity.CUSTOMER, raw["customer_id"])
        times = times_us(raw["requested_at"])
        # Rows in (customer, time) order: the many binary searches then walk memory forwards.
        order = np.lexsort((times, customer_codes))
        refunds = raw.iloc[order].reset_index(drop=True)
        cust_pos = self._customer_rows(customer_codes)[order]
        queries = Queries(
            times=times[order],
            codes={
                Entity.CUSTOMER: customer_codes[order],
                Entity.ORDER: self.codes(Entity.ORDER, refunds["order_id"]),
            },
            subjects={
                "refund_requests": refunds,
                "orders": orders.iloc[order_pos[order]].reset_index(drop=True),
                "customers": _take_or_empty(customers, cust_pos),
            },
        )
        values = self.evaluate(features, queries)
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        head = raw[["refund_id", "customer_id", "order_id", "requested_at"]]
        features_frame = pd.DataFrame({k: v[back] for k, v in values.items()}, index=head.index)
        labels = final_labels(raw, self.tables["outcomes"])
        return pd.concat([head, features_frame, labels.set_axis(head.index)], axis=1)

    def snapshot_rows(
        self, at: pd.Timestamp, features: tuple[Feature, ...] = CUSTOMER_FEATURES
    ) -> pd.DataFrame:
        """One row per customer who signed up before `at`: features as of `at`, and targets."""
        customers = self.tables["customers"]
        if self._customer_codes is None:
            self._customer_codes = self.codes(Entity.CUSTOMER, customers["customer_id"])
            self._signups = times_us(customers["signup_at"])
        t0 = int(pd.Timestamp(at).value // 1_000)
        signed_up = self._signups < t0
        chosen = customers[signed_up].reset_index(drop=True)
        times = np.full(len(chosen), t0, dtype=np.int64)
        codes = self._customer_codes[signed_up]
        queries = Queries(
            times=times, codes={Entity.CUSTOMER: codes}, subjects={"customers": chosen}
        )
        values = self.evaluate(features, queries)
        head = pd.DataFrame(
            {
                "snapshot_at": pd.Series(np.full(len(chosen), t0).astype("datetime64[us]")),
                "customer_id": chosen["customer_id"].astype("str"),
            }
        )
        targets = self._credit_targets(codes, times)
        return pd.concat([head, pd.DataFrame(values), pd.DataFrame(targets)], axis=1)

    def _credit_targets(self, codes: np.ndarray, times: np.ndarray) -> dict[str, np.ndarray]:
        """Forward-looking targets of a snapshot, from the final labels (training data only).

        A refund requested in [t, t + 90 days) is a loss if its latest outcome says abusive, or
        if it was refund-only after delivery (the customer kept the goods and the money).
        Cancellations before shipping and parcels lost in transit are not the customer's doing,
        so they are not losses for the customer's tier.
        """
        if self._credit is None:
            refunds = self.tables["refund_requests"]
            labels = final_labels(refunds, self.tables["outcomes"])
            abusive = labels["label_is_abusive_final"].fillna(False).to_numpy(dtype=bool)
            refund_only = (
                (refunds["refund_type"] == "refund_only") & (refunds["order_stage"] == "delivered")
            ).to_numpy(dtype=bool)
            ev = pd.DataFrame(
                {
                    "code": self.codes(Entity.CUSTOMER, refunds["customer_id"]),
                    "time": times_us(refunds["requested_at"]),
                    "id": refunds["refund_id"].reset_index(drop=True),
                    "abusive": abusive.astype(np.int64),
                    "loss": np.where(
                        abusive | refund_only, refunds["amount_requested"].to_numpy(), 0.0
                    ),
                }
            )
            self._credit = SortedStream(
                ev["code"].to_numpy(),
                ev["time"].to_numpy(),
                ev["id"],
                {"abusive": ev["abusive"].to_numpy(), "loss": ev["loss"].to_numpy()},
                {"abusive"},
            )
        s = self._credit
        horizon = CREDIT_TARGET_DAYS * DAY_US
        lo, hi, start = s.before(codes, times), s.before(codes, times + horizon), s.starts(codes)
        loss = s.window_sum("loss", lo, hi, start)
        return {
            "target_refund_requests_90d": (hi - lo).astype(np.int64),
            "target_abusive_refunds_90d": s.window_sum("abusive", lo, hi, start),
            "target_loss_amount_90d": loss,
            "target_has_loss_90d": loss > 0,
            "target_window_complete": times + horizon <= data_end_us(self.tables),
        }


def _take_or_empty(frame: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
    """Rows at `pos`, with an all-empty row where `pos` is -1 (an unknown id)."""
    if (pos >= 0).all():
        return frame.iloc[pos].reset_index(drop=True)
    padded = pd.concat([frame, frame.iloc[:0].reindex([len(frame)])], ignore_index=True)
    return padded.iloc[np.where(pos >= 0, pos, len(frame))].reset_index(drop=True)


def data_end_us(tables: Mapping[str, pd.DataFrame]) -> int:
    """The latest moment the raw tables know about, in microseconds."""
    latest = [
        tables["orders"]["ordered_at"].max(),
        tables["refund_requests"]["requested_at"].max(),
        tables["outcomes"]["known_at"].max() if len(tables["outcomes"]) else pd.NaT,
    ]
    known = [pd.Timestamp(x) for x in latest if not pd.isna(x)]
    return int(max(known).value // 1_000) if known else 0


def snapshot_dates(tables: Mapping[str, pd.DataFrame]) -> list[pd.Timestamp]:
    """Month starts after the first order and not after the data's end: credit snapshot dates."""
    orders = tables["orders"]
    if not len(orders):
        return []
    first = pd.Timestamp(orders["ordered_at"].min())
    end = pd.Timestamp(data_end_us(tables), unit="us")
    start = (first + pd.offsets.MonthBegin(1)).normalize()
    return list(pd.date_range(start, end, freq="MS"))


def build_refund_features(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One training row per refund request, computed strictly as of its `requested_at`."""
    return BatchBuilder(tables).refund_rows()


def build_credit_snapshots(
    tables: Mapping[str, pd.DataFrame],
    dates: list[pd.Timestamp] | None = None,
    builder: BatchBuilder | None = None,
    progress: Progress = _no_progress,
) -> Iterator[pd.DataFrame]:
    """Credit-tier rows, one frame per snapshot date (so a large world is never all in memory)."""
    builder = builder or BatchBuilder(tables)
    dates = snapshot_dates(tables) if dates is None else dates
    for i, at in enumerate(dates):
        progress(f"credit snapshot {at.date()}", i / max(len(dates), 1))
        yield builder.snapshot_rows(at)
