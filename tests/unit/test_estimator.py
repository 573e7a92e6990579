"""The estimator base both models stand on: a score is the stored booster read through the
stored Platt slope and intercept, the one way the service scores from a model's card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from training.abuse import AbuseRiskModel
from training.dataset import FEATURE_NAMES
from training.estimator import CalibratedBooster
from training.run_abuse import score_with_card
from training.tier import CreditTierModel, tier_feature_names

Build = Callable[[], tuple[CalibratedBooster, np.ndarray]]


def _data(columns: int, rows: int = 1_500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, size=(rows, columns)).astype(np.float64)
    X[:, 0] += rng.normal(size=rows)
    y = rng.random(rows) < 1.0 / (1.0 + np.exp(-(X[:, 0] + X[:, 1] - 3.0)))
    return X, y


def _abuse() -> tuple[CalibratedBooster, np.ndarray]:
    X, y = _data(len(FEATURE_NAMES))
    model = AbuseRiskModel(n_estimators=20, evidence_rounds=3, calibration_folds=2, random_state=3)
    return model.fit(X, y), X


def _tier() -> tuple[CalibratedBooster, np.ndarray]:
    X, y = _data(len(tier_feature_names()))
    X_cal, y_cal = _data(len(tier_feature_names()), seed=1)
    model = CreditTierModel(n_estimators=20, min_child_samples=20, random_state=3)
    return model.fit(X, y, X_cal, y_cal), X


@pytest.mark.parametrize("build", [_abuse, _tier], ids=["abuse", "tier"])
def test_a_models_scores_are_its_stored_booster_and_card(build: Build, tmp_path: Path) -> None:
    model, X = build()
    slope, intercept = model.calibration_
    assert (slope, intercept) != (1.0, 0.0), "the fit should have calibrated the margin"
    model.booster_.save_model(str(tmp_path / "model.txt"))
    card = {"calibration": {"method": "platt", "slope": slope, "intercept": intercept}}
    stored = score_with_card(tmp_path / "model.txt", card, X)
    proba = model.predict_proba(X)
    np.testing.assert_array_equal(proba[:, 1], stored)
    np.testing.assert_array_equal(proba[:, 0], 1.0 - stored)
    np.testing.assert_array_equal(model.predict(X), stored > 0.5)


@pytest.mark.parametrize("build", [_abuse, _tier], ids=["abuse", "tier"])
def test_contributions_add_up_to_the_raw_margin(build: Build) -> None:
    model, X = build()
    contributions = model.contributions(X[:50])
    assert contributions.shape == (50, X.shape[1])
    bias = model.booster_.predict(X[:50], pred_contrib=True)[:, -1]
    np.testing.assert_allclose(contributions.sum(axis=1) + bias, model.predict_raw(X[:50]))
