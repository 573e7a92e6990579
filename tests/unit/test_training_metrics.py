"""Evaluation figures computed by hand on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from training.metrics import capacity_metrics, expected_calibration_error, safe_auc, slice_metrics


def test_calibration_error_is_zero_when_predictions_match_rates() -> None:
    y = np.array([0, 0, 0, 1] * 100)  # ten bins of 40 rows, each a quarter abusive
    prob = np.full(400, 0.25)
    assert math.isclose(expected_calibration_error(y, prob), 0.0, abs_tol=1e-12)
    assert math.isclose(expected_calibration_error(y, np.full(400, 0.75)), 0.5)


def test_calibration_error_does_not_let_over_and_under_prediction_cancel() -> None:
    # Low half predicted 0.1 but abusive 30% of the time (0.2 under), high half predicted 0.9
    # but abusive 70% of the time (0.2 over): every bin is off by 0.2, signed gaps sum to 0.
    low = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0] * 10)
    high = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0] * 10)
    y = np.concatenate([low, high])
    prob = np.concatenate([np.full(100, 0.1), np.full(100, 0.9)])
    assert math.isclose(expected_calibration_error(y, prob), 0.2)


def test_capacity_reviews_the_riskiest_per_day() -> None:
    day = pd.Series(pd.to_datetime(["2025-01-01"] * 4 + ["2025-01-02"] * 4))
    y = np.array([1, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.6, 0.1, 0.0])
    money = np.array([100.0, 1, 1, 1, 1, 50.0, 30.0, 1])
    out = capacity_metrics(day, y, score, money, per_day=2)
    # Day 1 reviews 0.9 (abusive) and 0.8; day 2 reviews 0.7 and 0.6 (abusive).
    assert out["precision"] == 0.5
    assert math.isclose(out["recall"], 2 / 3)
    assert math.isclose(out["money_recall"], 150 / 180)
    assert out["reviewed_share"] == 0.5


def test_auc_is_nan_without_both_classes_and_slices_report_it() -> None:
    assert math.isnan(safe_auc(np.array([0, 0]), np.array([0.1, 0.2])))
    frame = pd.DataFrame({"c": ["a", "a", "b", "b"], "y": [1, 0, 0, 0], "s": [0.9, 0.1, 0.5, 0.4]})
    table = slice_metrics(frame, "c", "y", "s").set_index("value")
    assert table.loc["a", "roc_auc"] == 1.0
    assert math.isnan(table.loc["b", "roc_auc"])
