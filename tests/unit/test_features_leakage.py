"""Leakage: nothing at or after a request's time may change its row.

For sampled requests of a random world, every row dated at or after the request (and every
timestamp of an earlier row that falls at or after it: a later delivery, a later outcome) is
pushed further into the future and its values scrambled. The request's row must not change, in
either builder. Moving one event the other way, from before to exactly the request time, must
change it: the test can tell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from data.schema import CATEGORIES, REASON_DETAILS
from features.batch import BatchBuilder
from features.definitions import FEATURE_NAMES
from features.online import OnlineFeatureBuilder
from features.store import EventStore

Tables = dict[str, pd.DataFrame]

_TIME_COLUMNS = {
    "customers": ("signup_at",),
    "orders": ("ordered_at", "shipped_at", "delivered_at"),
    "refund_requests": ("requested_at",),
    "outcomes": ("known_at",),
    "identity_links": ("seen_at",),
}


def _scramble_future(tables: Tables, refund: pd.Series, seed: int) -> Tables:
    """A copy where everything at or after the refund's time moves later and changes value."""
    rng = np.random.default_rng(seed)
    t = refund["requested_at"]
    out = {name: frame.copy() for name, frame in tables.items()}
    for name, columns in _TIME_COLUMNS.items():
        frame = out[name]
        for column in columns:
            stamps = frame[column]
            future = (stamps >= t).to_numpy(dtype=bool).copy()
            if name == "refund_requests":
                future &= (frame["refund_id"] != refund["refund_id"]).to_numpy(dtype=bool)
            if name == "orders" and column == "ordered_at":
                future &= (frame["order_id"] != refund["order_id"]).to_numpy(dtype=bool)
            if name == "customers":
                future &= (frame["customer_id"] != refund["customer_id"]).to_numpy(dtype=bool)
            later = pd.to_timedelta(rng.integers(1, 10**7, future.sum()), unit="s")
            frame.loc[future, column] = stamps[future] + later
            if name == "orders" and column == "ordered_at":
                frame.loc[future, "amount"] = rng.uniform(1, 999, future.sum()).round(2)
                frame.loc[future, "category"] = rng.choice(CATEGORIES, future.sum())
            if name == "refund_requests":
                details = rng.choice(list(REASON_DETAILS), future.sum())
                frame.loc[future, "reason_detail"] = details
                frame.loc[future, "reason"] = [REASON_DETAILS[d] for d in details]
                frame.loc[future, "refund_type"] = rng.choice(
                    ["refund_only", "return_and_refund"], future.sum()
                )
            if name == "outcomes":
                frame.loc[future, "is_abusive"] = ~frame.loc[future, "is_abusive"]
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


def _batch_row(tables: Tables, refund_id: str) -> dict[str, Any]:
    frame = BatchBuilder(tables).refund_rows().set_index("refund_id")
    return {name: frame.at[refund_id, name] for name in FEATURE_NAMES}


def _online_row(tables: Tables, refund_id: str, path: Path) -> dict[str, Any]:
    store = EventStore.open(f"sqlite:///{path}")
    store.write_frames(tables)
    refunds = tables["refund_requests"]
    record = refunds[refunds["refund_id"] == refund_id].to_dict("records")[0]
    row = OnlineFeatureBuilder(store).row(record)
    store.dispose()
    return row


def _sample(tables: Tables, n: int, seed: int) -> list[str]:
    ids = tables["refund_requests"]["refund_id"].to_numpy()
    return list(np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False))


def test_future_events_change_nothing_in_batch_rows(random_world: Callable[..., Tables]) -> None:
    tables = random_world(seed=11, n_customers=60)
    base = BatchBuilder(tables).refund_rows().set_index("refund_id")
    refunds = tables["refund_requests"].set_index("refund_id", drop=False)
    for i, refund_id in enumerate(_sample(tables, 30, seed=1)):
        shifted = _scramble_future(tables, refunds.loc[refund_id], seed=i)
        row = _batch_row(shifted, refund_id)
        changed = [n for n in FEATURE_NAMES if not _same(row[n], base.at[refund_id, n])]
        assert not changed, f"{refund_id}: future events changed {changed}"


def test_future_events_change_nothing_in_online_rows(
    random_world: Callable[..., Tables], tmp_path: Path
) -> None:
    tables = random_world(seed=12, n_customers=40)
    base = BatchBuilder(tables).refund_rows().set_index("refund_id")
    refunds = tables["refund_requests"].set_index("refund_id", drop=False)
    for i, refund_id in enumerate(_sample(tables, 5, seed=2)):
        shifted = _scramble_future(tables, refunds.loc[refund_id], seed=i)
        row = _online_row(shifted, refund_id, tmp_path / f"events{i}.db")
        changed = [n for n in FEATURE_NAMES if not _same(row[n], base.at[refund_id, n])]
        assert not changed, f"{refund_id}: future events changed {changed}"


def test_moving_a_past_event_to_the_request_time_is_noticed(
    random_world: Callable[..., Tables],
) -> None:
    tables = random_world(seed=13, n_customers=60)
    base = BatchBuilder(tables).refund_rows().set_index("refund_id")
    refund_id = base.index[(base["customer_orders_all_time"] >= 2).to_numpy()][0]
    refund = tables["refund_requests"].set_index("refund_id").loc[refund_id]
    orders = tables["orders"].copy()
    earlier = orders[
        (orders["customer_id"] == refund["customer_id"])
        & (orders["ordered_at"] < refund["requested_at"])
        & (orders["order_id"] != refund["order_id"])
    ]
    orders.loc[earlier.index[-1], "ordered_at"] = refund["requested_at"]
    row = _batch_row({**tables, "orders": orders}, refund_id)
    assert row["customer_orders_all_time"] == base.at[refund_id, "customer_orders_all_time"] - 1


@pytest.mark.parametrize("builder", ["batch", "online"])
def test_an_outcome_counts_only_once_known(
    random_world: Callable[..., Tables], tmp_path: Path, builder: str
) -> None:
    tables = random_world(seed=14, n_customers=80)
    base = BatchBuilder(tables).refund_rows().set_index("refund_id")
    refund_id = base.index[(base["customer_confirmed_abusive_refunds"] > 0).to_numpy()][0]
    t = base.at[refund_id, "requested_at"]
    customer = base.at[refund_id, "customer_id"]
    # The customer's refunds whose latest outcome known before t is abusive.
    outcomes = tables["outcomes"]
    mine = outcomes[
        outcomes["refund_id"].isin(
            tables["refund_requests"].loc[
                tables["refund_requests"]["customer_id"] == customer, "refund_id"
            ]
        )
    ]
    known = mine[mine["known_at"] < t].sort_values(["known_at", "outcome_id"])
    latest = known.drop_duplicates("refund_id", keep="last")
    flagged = latest.loc[latest["is_abusive"], "refund_id"].iloc[0]

    def row_with_known_at(when: pd.Timestamp, path: Path) -> dict[str, Any]:
        changed = outcomes.copy()
        # Its outcomes known before t (ids grow with time, so the abusive one stays last).
        moved = (changed["refund_id"] == flagged) & (changed["known_at"] < t)
        changed.loc[moved, "known_at"] = when
        world = {**tables, "outcomes": changed}
        if builder == "batch":
            return _batch_row(world, refund_id)
        return _online_row(world, refund_id, path)

    just_before = row_with_known_at(t - pd.Timedelta(microseconds=1), tmp_path / "a.db")
    at_t = row_with_known_at(t, tmp_path / "b.db")
    count = base.at[refund_id, "customer_confirmed_abusive_refunds"]
    assert just_before["customer_confirmed_abusive_refunds"] == count
    assert at_t["customer_confirmed_abusive_refunds"] == count - 1
