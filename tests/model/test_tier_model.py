"""Behavioural checks on the credit-tier model trained on the default world (seed 7, 20,000
customers): reproducible, monotone where the business says so, tiers that mean what they say."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from built_once import built_once, load, save

from data.generator import World, generate_world
from features.batch import CREDIT_TARGET_COLUMNS, CREDIT_TARGET_DAYS, build_credit_snapshots
from policy.tiers import load_tiers
from training.tier import (
    HISTORY_FEATURE,
    MONOTONE,
    TierTrainingResult,
    default_cutoff,
    has_history,
    rises_strictly,
    suggest_thresholds,
    tier_feature_names,
    tier_table,
    tiers_for,
    train_tier_model,
    with_thresholds,
)

SEED = 7
# Where the tiers' upper bounds go, as quantiles of the scores the model gave in its
# calibration month (known at training time). On five seeds this recipe gave a strictly rising
# loss on four; the one that failed swapped two tiers 0.2 points apart.
QUANTILES = (0.3, 0.5, 0.9, 0.98)


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[World, pd.DataFrame, TierTrainingResult]:
    """The world, its credit snapshots and the model trained on them: built once per test run
    by whichever worker asks first."""

    def build(folder: Path) -> None:
        world = generate_world(20_000, seed=SEED)
        snapshots = pd.concat(list(build_credit_snapshots(world.tables)), ignore_index=True)
        save((world, snapshots, train(snapshots, world)), folder / "built.pickle")

    built: tuple[World, pd.DataFrame, TierTrainingResult] = load(
        built_once(tmp_path_factory, "tier-model", build) / "built.pickle"
    )
    return built


@pytest.fixture(scope="module")
def world(built: tuple[World, pd.DataFrame, TierTrainingResult]) -> World:
    return built[0]


@pytest.fixture(scope="module")
def snapshots(built: tuple[World, pd.DataFrame, TierTrainingResult]) -> pd.DataFrame:
    return built[1]


def train(snapshots: pd.DataFrame, world: World | None) -> TierTrainingResult:
    cutoff = default_cutoff(snapshots, test_months=2)
    return train_tier_model(
        snapshots,
        train_end=cutoff,
        test_start=cutoff,
        seed=SEED,
        tiers=load_tiers(),
        oracle_customers=None if world is None else world.oracle_customers,
    )


@pytest.fixture(scope="module")
def result(built: tuple[World, pd.DataFrame, TierTrainingResult]) -> TierTrainingResult:
    return built[2]


def test_same_seed_same_data_same_model_bit_for_bit(
    snapshots: pd.DataFrame, result: TierTrainingResult
) -> None:
    # The second fit gets no oracle: the oracle must never reach the model.
    again = train(snapshots, None)
    assert again.model.model_string() == result.model.model_string()
    assert again.model.calibration_ == result.model.calibration_
    np.testing.assert_array_equal(again.test["score"], result.test["score"])


def test_inputs_are_tier_features_only(result: TierTrainingResult) -> None:
    assert result.features == tier_feature_names()
    assert result.model.booster_.feature_name() == list(result.features)
    forbidden = set(CREDIT_TARGET_COLUMNS) | {"latent_type", "ring_id", "customer_id"}
    assert not forbidden & set(result.features)


def test_trained_only_on_windows_closed_at_the_cutoff(result: TierTrainingResult) -> None:
    split = result.split
    horizon = pd.Timedelta(days=CREDIT_TARGET_DAYS)
    assert all(d + horizon <= split.train_end for d in split.fit_dates + split.calibration_dates)
    assert min(split.test_dates) >= split.test_start >= split.train_end
    assert result.model.calibrated_


def test_monotone_directions_hold(snapshots: pd.DataFrame, result: TierTrainingResult) -> None:
    rows = snapshots[snapshots["snapshot_at"].isin(result.split.test_dates)]
    rows = rows[has_history(rows)].sample(400, random_state=0)
    for name, (direction, _) in MONOTONE.items():
        top = max(float(snapshots[name].max()), 1.0)
        grid = np.unique(
            np.concatenate(
                [[0.0], np.quantile(snapshots[name], [0.5, 0.9, 0.99]), [top, 2.0 * top]]
            )
        )
        scores = []
        for value in grid:
            moved = rows.copy()
            moved[name] = value
            scores.append(result.model.predict_proba(moved)[:, 1])
        steps = np.diff(np.column_stack(scores), axis=1) * direction
        assert (steps >= -1e-12).all(), f"{name}: score moved against its direction"


def test_realised_loss_rises_strictly_from_the_best_tier_to_the_worst(
    result: TierTrainingResult,
) -> None:
    bounds = suggest_thresholds(result.calibration_scores, result.tiers, QUANTILES)
    tiers = with_thresholds(result.tiers, bounds)
    score = result.test["score"].to_numpy()
    table = tier_table(tiers, tiers_for(score, tiers), result.test["loss"].to_numpy(), score)
    assert rises_strictly(table), table[["tier", "share", "loss_rate"]].to_string()
    # Nobody is crowded into one tier, and the worst tier holds a loss rate several times
    # the best's.
    assert table["share"].max() < 0.7
    rates = table["loss_rate"].to_numpy()
    assert rates[-1] > 3 * rates[0]


def test_the_shipped_tiers_give_a_strictly_rising_loss(result: TierTrainingResult) -> None:
    assert result.loss_rises_strictly, result.tier_table.to_string()


def test_score_ranks_habitual_abusers_above_honest_customers(result: TierTrainingResult) -> None:
    assert result.oracle["oracle_auc_abusive_vs_honest"] > 0.7
    assert (
        result.oracle["abusive_share_worst_tiers"] > 10 * result.oracle["abusive_share_best_tier"]
    )


def test_scores_are_probabilities_of_a_loss(result: TierTrainingResult) -> None:
    metrics = result.metrics
    assert metrics["roc_auc"] > 0.55
    assert metrics["calibration_error"] < 0.01
    assert abs(metrics["mean_score"] - metrics["loss_rate"]) < 0.25 * metrics["loss_rate"]


def test_new_customers_get_the_default_tier(
    snapshots: pd.DataFrame, result: TierTrainingResult
) -> None:
    test = result.test
    new = test["score"].isna().to_numpy()
    rows = snapshots[snapshots["snapshot_at"].isin(result.split.test_dates)]
    assert (rows[HISTORY_FEATURE].to_numpy() == 0).tolist() == new.tolist()
    assert new.any()
    assert set(test.loc[new, "tier"]) == {result.tiers.default.name}


def test_figures_render(result: TierTrainingResult) -> None:
    assert set(result.figures) == {"tier_loss", "score_by_type"}
    for figure in result.figures.values():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getbuffer().nbytes > 1_000
