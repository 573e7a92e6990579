"""Turning raw rows into the event streams of `features.definitions.SOURCES`.

Two of the streams carry values derived from more than one row: a refund request's days from
delivery to claim (needs its order) and the outcome changes (need the refund's earlier outcomes).
Each derivation is written here twice, side by side: once over whole tables for the batch
builder, once over one customer's rows for the online builder. The parity test holds them equal.
Everything else about a feature lives in the definitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from features.definitions import DAY_US

NOT_SET = np.iinfo(np.int64).max
"""The time of something that has not happened: never before any `t`."""

_EPOCH = datetime(1970, 1, 1)


# --- times ----------------------------------------------------------------------------------


def times_us(values: pd.Series) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch; empty ones become NOT_SET."""
    arr = values.to_numpy(dtype="datetime64[us]")
    out = arr.view(np.int64).copy()
    out[np.isnat(arr)] = NOT_SET
    return out


def to_us(value: Any) -> int | None:
    """One timestamp (datetime, pandas Timestamp, numpy datetime64, ISO text) as microseconds.

    None, NaT and NaN give None: the thing has not happened.
    """
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        if value.tzinfo is not None:
            value = value.tz_convert("UTC").tz_localize(None)
        # Floor to the microsecond, as `times_us` does for nanosecond data.
        return int(value.value // 1_000)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, float) and value != value:
        return None
    return to_us(pd.Timestamp(value))


def from_us(value: int | None) -> datetime | None:
    """Microseconds since the epoch back to a naive UTC datetime."""
    if value is None:
        return None
    return datetime(1970, 1, 1) + pd.Timedelta(microseconds=value).to_pytimedelta()


def days_between(start_us: int, end_us: int) -> float:
    """Days from `start_us` to `end_us`, computed exactly as the batch builder does."""
    return (end_us - start_us) / DAY_US


# --- whole tables (batch) -------------------------------------------------------------------


def order_events(orders: pd.DataFrame) -> pd.DataFrame:
    """The `orders` stream: one event per order at `ordered_at`."""
    out = orders.copy()
    out["time_us"] = times_us(orders["ordered_at"])
    out["event_id"] = orders["order_id"]
    return out


def order_rows_of(refunds: pd.DataFrame, orders: pd.DataFrame) -> np.ndarray:
    """Per refund request, the row of its order in `orders` (-1 if there is none).

    Looks the orders up in a table of the refunds' order ids, not the other way round: a small
    hash table probed millions of times is far faster than a table of millions of orders.
    """
    wanted = pd.Index(pd.unique(refunds["order_id"]))
    hit = wanted.get_indexer(pd.Index(orders["order_id"]))
    found = hit >= 0
    row_of = np.full(len(wanted), -1, dtype=np.int64)
    row_of[hit[found]] = np.flatnonzero(found)
    return row_of[wanted.get_indexer(pd.Index(refunds["order_id"]))]


def refund_events(
    refunds: pd.DataFrame, orders: pd.DataFrame, order_rows: np.ndarray | None = None
) -> pd.DataFrame:
    """The `refund_requests` stream, with the days from the order's delivery to the request."""
    out = refunds.copy()
    out["time_us"] = times_us(refunds["requested_at"])
    out["event_id"] = refunds["refund_id"]
    pos = order_rows_of(refunds, orders) if order_rows is None else order_rows
    delivered = (
        times_us(orders["delivered_at"].iloc[np.maximum(pos, 0)])
        if len(orders)
        else (np.full(len(pos), NOT_SET, dtype=np.int64))
    )
    deliv = np.where(pos >= 0, delivered, NOT_SET)
    req = out["time_us"].to_numpy()
    seen = deliv < req
    gap = np.full(len(out), np.nan)
    gap[seen] = (req[seen] - deliv[seen]) / DAY_US
    out["days_from_delivery_to_claim"] = gap
    return out


def outcome_change_events(outcomes: pd.DataFrame, refunds: pd.DataFrame) -> pd.DataFrame:
    """The `outcome_changes` stream: per outcome, how it changed what was known of its refund."""
    known = times_us(outcomes["known_at"])
    frame = pd.DataFrame(
        {
            "refund_id": outcomes["refund_id"].to_numpy(),
            "event_id": outcomes["outcome_id"].to_numpy(),
            "time_us": known,
            "is_abusive": outcomes["is_abusive"].to_numpy(dtype=bool),
        }
    )
    # A refund's outcomes in the order they became known (ties: by outcome id).
    frame = frame.sort_values(["refund_id", "time_us", "event_id"], kind="stable")
    state = frame["is_abusive"].to_numpy().astype(np.int64)
    first = np.ones(len(frame), dtype=bool)
    refund = frame["refund_id"].to_numpy()
    if len(frame) > 1:
        first[1:] = refund[1:] != refund[:-1]
    previous = np.zeros(len(frame), dtype=np.int64)
    previous[1:] = state[:-1]
    previous[first] = 0
    frame["abusive_change"] = state - previous
    frame["resolved_change"] = first.astype(np.int64)
    info = refunds.set_index("refund_id")[["customer_id", "amount_requested"]]
    pos = info.index.get_indexer(pd.Index(frame["refund_id"]))
    keep = pos >= 0  # an outcome of an unknown refund describes no customer
    frame = frame[keep]
    pos = pos[keep]
    frame["customer_id"] = info["customer_id"].to_numpy()[pos]
    amount = info["amount_requested"].to_numpy(dtype=np.float64)[pos]
    frame["abusive_amount_change"] = frame["abusive_change"].to_numpy() * amount
    return frame.reset_index(drop=True)


def source_events(
    name: str, tables: Mapping[str, pd.DataFrame], order_rows: np.ndarray | None = None
) -> pd.DataFrame:
    """The events of source `name` from the raw tables (`order_rows`: see `order_rows_of`)."""
    if name == "orders":
        return order_events(tables["orders"])
    if name == "refund_requests":
        return refund_events(tables["refund_requests"], tables["orders"], order_rows)
    if name == "outcome_changes":
        return outcome_change_events(tables["outcomes"], tables["refund_requests"])
    raise KeyError(f"unknown event source {name!r}")


# --- one customer's rows (online) -----------------------------------------------------------


def refund_event_values(requested_us: int, delivered_us: int | None) -> float:
    """Days from delivery to a refund request; NaN unless delivered before the request."""
    if delivered_us is None or delivered_us >= requested_us:
        return float("nan")
    return (requested_us - delivered_us) / DAY_US


def outcome_changes(
    outcomes: Sequence[tuple[int, str, bool]], amount_requested: float
) -> list[tuple[int, str, int, float, int]]:
    """One refund's outcomes, as (known_us, outcome_id, is_abusive), turned into change events.

    Returns (known_us, outcome_id, abusive_change, abusive_amount_change, resolved_change) in
    the order the outcomes became known.
    """
    changes: list[tuple[int, str, int, float, int]] = []
    previous = 0
    for i, (known, outcome_id, is_abusive) in enumerate(sorted(outcomes)):
        state = 1 if is_abusive else 0
        change = state - previous
        changes.append((known, outcome_id, change, change * amount_requested, 1 if i == 0 else 0))
        previous = state
    return changes
