"""The training split never lets a model see the future or a label it could not have had."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.generator import World, generate_world
from features.batch import build_refund_features
from refund_risk.errors import DataValidationError
from training.abuse import AbuseRiskModel, train_abuse
from training.dataset import AbuseDataset, build_abuse_dataset, feature_matrix, plan_split


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(8_000, seed=5)


@pytest.fixture(scope="module")
def dataset(world: World) -> AbuseDataset:
    rows = build_refund_features(world.tables)
    split = plan_split(rows["requested_at"])
    return build_abuse_dataset(rows, world.tables["outcomes"], split, world.oracle_refunds)


def test_periods_are_time_ordered_with_a_delay_gap(dataset: AbuseDataset) -> None:
    split = dataset.split
    assert dataset.train["requested_at"].max() < split.calibration_start
    assert dataset.calibration["requested_at"].min() >= split.calibration_start
    assert dataset.calibration["requested_at"].max() < split.label_cutoff
    assert dataset.test["requested_at"].min() >= split.deploy_at
    assert (split.deploy_at - split.label_cutoff).days == split.label_delay_days


def test_training_labels_are_those_known_at_deployment(world: World, dataset: AbuseDataset) -> None:
    outcomes = world.tables["outcomes"]
    known = outcomes[outcomes["known_at"] < dataset.split.deploy_at]
    train_ids = set(dataset.train["refund_id"]) | set(dataset.calibration["refund_id"])
    assert train_ids <= set(known["refund_id"]), "no request without a label known by then"
    # Evidence that arrives after deployment must not reach training: flip one training
    # request to abusive by an outcome known a day after deployment.
    honest_id = dataset.train.loc[~dataset.train["label"], "refund_id"].iloc[0]
    late = pd.DataFrame(
        {
            "outcome_id": ["x-late"],
            "refund_id": [honest_id],
            "is_abusive": [True],
            "known_at": [dataset.split.deploy_at + pd.Timedelta(days=1)],
            "source": ["investigation"],
        }
    )
    rows = build_refund_features(world.tables)
    again = build_abuse_dataset(rows, pd.concat([outcomes, late], ignore_index=True), dataset.split)
    assert not again.train.set_index("refund_id").loc[honest_id, "label"]


def test_no_label_or_oracle_column_is_a_feature(dataset: AbuseDataset) -> None:
    from training.dataset import FEATURE_NAMES

    forbidden = ("label", "oracle", "true", "is_abusive", "pattern")
    assert not [n for n in FEATURE_NAMES if any(word in n for word in forbidden)]


def test_the_model_is_fitted_on_every_month_labelled_before_the_delay_gap(
    dataset: AbuseDataset,
) -> None:
    fitting = dataset.fitting
    assert len(fitting) == len(dataset.train) + len(dataset.calibration)
    assert fitting["requested_at"].is_monotonic_increasing
    assert fitting["requested_at"].max() < dataset.split.label_cutoff
    assert not set(fitting["refund_id"]) & set(dataset.test["refund_id"])


def test_calibration_scores_come_from_boosters_that_never_saw_the_row(
    dataset: AbuseDataset,
) -> None:
    fitting = dataset.fitting
    X, y = feature_matrix(fitting), fitting["label"].to_numpy(bool)
    model = AbuseRiskModel(n_estimators=40, calibration_folds=3, random_state=3)
    scores = model.cross_fitted_raw(X, y)
    first_block = np.arange(len(X)) < len(np.array_split(np.arange(len(X)), 3)[0])
    flipped = np.where(first_block, ~y, y)  # other labels for the first block only
    again = model.cross_fitted_raw(X, flipped)
    np.testing.assert_array_equal(scores[first_block], again[first_block])
    assert not np.array_equal(scores[~first_block], again[~first_block])


def test_same_seed_same_model_bit_for_bit(dataset: AbuseDataset) -> None:
    X, y = feature_matrix(dataset.fitting), dataset.fitting["label"].to_numpy(bool)
    first = AbuseRiskModel(random_state=3).fit(X, y)
    second = AbuseRiskModel(random_state=3).fit(X, y)
    assert first.booster_.model_to_string() == second.booster_.model_to_string()
    assert first.calibration_ == second.calibration_
    X_test = feature_matrix(dataset.test)
    np.testing.assert_array_equal(first.predict_proba(X_test), second.predict_proba(X_test))


def test_model_beats_both_baselines_and_reports_every_figure(dataset: AbuseDataset) -> None:
    result = train_abuse(dataset, seed=7)
    by_name = {e.name: e.headline for e in result.evaluations}
    assert by_name["lightgbm"]["roc_auc"] > by_name["hand_rules"]["roc_auc"] + 0.1
    assert by_name["lightgbm"]["roc_auc_true"] > by_name["logistic_regression"]["roc_auc_true"]
    for key in (
        "average_precision",
        "calibration_error",
        "at_capacity_money_recall",
        "roc_auc_ratio_to_oracle",
    ):
        assert key in by_name["lightgbm"]
    slices = result.evaluations[0].slices
    assert {"order_category", "request_reason", "request_order_stage"} <= set(slices["slice"])
    assert "apparel" in set(slices["value"]), "slices are named, not coded"


def test_too_short_data_is_refused() -> None:
    from refund_risk.errors import DataValidationError

    with pytest.raises(DataValidationError, match="too short"):
        plan_split(pd.Series(pd.date_range("2025-01-01", periods=30, freq="D")))


def test_without_outcomes_the_abuse_model_says_what_is_missing_and_what_to_do(
    world: World,
) -> None:
    rows = build_refund_features(world.tables)
    split = plan_split(rows["requested_at"])
    no_outcomes = world.tables["outcomes"].iloc[:0]
    with pytest.raises(DataValidationError) as caught:
        build_abuse_dataset(rows, no_outcomes, split)
    message = str(caught.value)
    learnable = int((rows["requested_at"] < split.label_cutoff).sum())
    assert f"the {learnable:,} refund requests before" in message  # they exist, unlabelled
    assert "no outcome is known" in message
    assert "refund-risk events export" in message and "refund-risk train tier" in message


def test_outcomes_that_never_find_abuse_are_refused_with_what_to_record(world: World) -> None:
    rows = build_refund_features(world.tables)
    split = plan_split(rows["requested_at"])
    honest = world.tables["outcomes"].assign(is_abusive=False)
    with pytest.raises(DataValidationError) as caught:
        build_abuse_dataset(rows, honest, split)
    message = str(caught.value)
    assert message.startswith("the train period (requests before")
    assert "none abusive" in message and "needs both kinds" in message
    assert "Record outcomes that find abuse" in message
