"""What tier training does to stay within memory on a large world changes no value it reads:
narrowed number columns, the orders columns it loads, the event columns the builder keeps."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from features.batch import BatchBuilder, snapshot_dates
from features.definitions import Entity, Filter, SubStream
from features.events import order_events
from training.data_source import snapshot_order_columns
from training.tier import compact

Tables = dict[str, pd.DataFrame]

numbers = st.one_of(
    arrays(np.float64, st.integers(0, 30), elements=st.floats(allow_nan=True, width=64)),
    arrays(np.float64, st.integers(0, 30), elements=st.integers(-(2**24), 2**24).map(float)),
    arrays(np.int64, st.integers(0, 30), elements=st.integers(-(2**40), 2**40)),
    arrays(np.int64, st.integers(0, 30), elements=st.integers(-(2**31), 2**31 - 1)),
)


@settings(max_examples=200, deadline=None)
@given(columns=st.lists(numbers, min_size=1, max_size=4))
def test_compact_keeps_every_value_exactly(columns: list[np.ndarray]) -> None:
    rows = min(len(c) for c in columns)
    frame = pd.DataFrame({f"c{i}": c[:rows] for i, c in enumerate(columns)})
    narrow = compact(frame)
    assert list(narrow.columns) == list(frame.columns)
    for name in frame.columns:
        before, after = frame[name].to_numpy(), narrow[name].to_numpy()
        assert after.dtype.itemsize <= before.dtype.itemsize
        assert after.dtype.kind == before.dtype.kind
        np.testing.assert_array_equal(after.astype(np.float64), before.astype(np.float64))
        assert np.array_equal(np.signbit(after), np.signbit(before))


def test_compact_narrows_what_fits_and_keeps_what_does_not() -> None:
    frame = pd.DataFrame(
        {
            "count": np.array([0, 3, 2**31 - 1], dtype=np.int64),
            "big": np.array([0, 1, 2**31], dtype=np.int64),
            "halves": np.array([0.5, np.nan, 12.0]),
            "rate": np.array([1 / 3, 0.5, 0.0]),
        }
    )
    dtypes = compact(frame).dtypes.to_dict()
    assert dtypes == {
        "count": np.dtype(np.int32),
        "big": np.dtype(np.int64),
        "halves": np.dtype(np.float32),
        "rate": np.dtype(np.float64),
    }


def test_snapshots_from_the_orders_columns_training_loads_are_the_full_tables_snapshots(
    random_world: Callable[..., Tables],
) -> None:
    tables = random_world(seed=5, n_customers=80)
    slim = {**tables, "orders": tables["orders"].loc[:, snapshot_order_columns()]}
    assert len(slim["orders"].columns) < len(tables["orders"].columns)
    full, reduced = BatchBuilder(tables), BatchBuilder(slim)
    for at in snapshot_dates(tables):
        pd.testing.assert_frame_equal(reduced.snapshot_rows(at), full.snapshot_rows(at))


def test_a_sub_stream_filtered_on_a_column_no_feature_filters_on_is_still_built(
    random_world: Callable[..., Tables],
) -> None:
    tables = random_world(seed=2, n_customers=40)
    builder = BatchBuilder(tables)
    category = tables["orders"]["category"].iloc[0]
    sub = SubStream(Entity.CUSTOMER, "orders", (Filter("category", (category,)),))
    stream = builder.stream(sub)
    events = order_events(tables["orders"])
    assert len(stream) == int((events["category"] == category).sum()) > 0
    assert sorted(stream.columns["amount"]) == sorted(
        events.loc[events["category"] == category, "amount"]
    )
