"""The tier model trained month by month (as `train tier` does, to stay within memory on a
large world) is the model trained on every snapshot month at once, figure for figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.generator import generate_world
from features.batch import build_credit_snapshots
from policy.tiers import load_tiers
from refund_risk.errors import DataValidationError
from training.data_source import TrainingInputs
from training.run_tier import train_tier_streamed
from training.tier import (
    TierTrainingResult,
    default_cutoff,
    feature_columns,
    has_history,
    train_tier_model,
)


def _all_at_once(inputs: TrainingInputs, seed: int, test_months: int) -> TierTrainingResult:
    snapshots = pd.concat(list(build_credit_snapshots(inputs.tables)), ignore_index=True)
    cutoff = default_cutoff(snapshots, test_months)
    return train_tier_model(
        snapshots,
        train_end=cutoff,
        test_start=cutoff,
        seed=seed,
        tiers=load_tiers(),
        oracle_customers=inputs.oracle_customers,
    )


def _inputs(customers: int, seed: int) -> TrainingInputs:
    world = generate_world(customers, seed=seed)
    empty = world.tables["refund_requests"].iloc[:0]
    return TrainingInputs(
        empty, world.tables["outcomes"], world.tables, None, world.oracle_customers
    )


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    customers=st.integers(min_value=1_500, max_value=3_000),
    test_months=st.integers(min_value=1, max_value=2),
)
def test_month_by_month_training_gives_the_all_at_once_model_and_figures(
    seed: int, customers: int, test_months: int
) -> None:
    inputs = _inputs(customers, seed)
    try:
        whole = _all_at_once(inputs, seed, test_months)
    except DataValidationError as refused:
        # A world too small to train on is refused the same way, month by month.
        with pytest.raises(DataValidationError) as streamed_refusal:
            train_tier_streamed(inputs, load_tiers(), seed, test_months)
        assert str(streamed_refusal.value) == str(refused)
        return
    streamed, example = train_tier_streamed(inputs, load_tiers(), seed, test_months)

    assert streamed.split == whole.split
    assert streamed.loss == whole.loss
    assert streamed.model.model_string() == whole.model.model_string()
    assert streamed.model.calibration_ == whole.model.calibration_
    assert streamed.cutoffs == whole.cutoffs
    np.testing.assert_array_equal(streamed.calibration_scores, whole.calibration_scores)
    assert streamed.metrics.keys() == whole.metrics.keys()
    np.testing.assert_array_equal(list(streamed.metrics.values()), list(whole.metrics.values()))
    assert streamed.oracle.keys() == whole.oracle.keys()
    np.testing.assert_array_equal(list(streamed.oracle.values()), list(whole.oracle.values()))
    pd.testing.assert_frame_equal(streamed.tier_table, whole.tier_table)
    pd.testing.assert_frame_equal(streamed.test, whole.test)
    # What the champion is re-scored on: the test months' customers with a history.
    snapshots = pd.concat(list(build_credit_snapshots(inputs.tables)), ignore_index=True)
    test = snapshots[snapshots["snapshot_at"].isin(whole.split.test_dates)]
    test = test[has_history(test)].reset_index(drop=True)
    assert list(streamed.test_rows.columns) == feature_columns(snapshots)
    # Kept in narrower dtypes where every value is exact in them: the values are the same.
    pd.testing.assert_frame_equal(
        streamed.test_rows.astype("float64"),
        test.loc[:, feature_columns(snapshots)].astype("float64"),
    )
    fit = snapshots[snapshots["snapshot_at"].isin(whole.split.fit_dates)]
    expected_example = fit[has_history(fit)].loc[:, list(whole.features)].head(5)
    pd.testing.assert_frame_equal(
        example.astype("float64"), expected_example.reset_index(drop=True).astype("float64")
    )
