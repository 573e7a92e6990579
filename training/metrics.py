"""Evaluation the way the field does it: ranking, calibration, capacity, money, slices.

All functions are pure: arrays in, numbers or frames out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def safe_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC, or NaN when only one class is present (a slice with no abuse)."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return math.nan
    return float(roc_auc_score(y, score))


def safe_ap(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision, or NaN when there is no positive."""
    y = np.asarray(y, dtype=bool)
    if not y.any():
        return math.nan
    return float(average_precision_score(y, score))


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """Mean gap between predicted and observed abuse rate over equal-count score bins.

    Equal-count bins, because scores pile up near zero: equal-width bins would put almost every
    request in the first bin and hide miscalibration where decisions are made.
    """
    y = np.asarray(y, dtype=float)
    prob = np.asarray(prob, dtype=float)
    if len(y) == 0:
        return math.nan
    order = np.argsort(prob, kind="stable")
    gaps = 0.0
    for chunk in np.array_split(order, min(bins, len(order))):
        gaps += len(chunk) * abs(prob[chunk].mean() - y[chunk].mean())
    return float(gaps / len(y))


def reliability_table(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per equal-count bin: mean predicted probability, observed rate, count (for the plot)."""
    order = np.argsort(np.asarray(prob), kind="stable")
    rows = []
    for chunk in np.array_split(order, min(bins, max(len(order), 1))):
        if len(chunk):
            rows.append(
                {
                    "predicted": float(np.asarray(prob)[chunk].mean()),
                    "observed": float(np.asarray(y, dtype=float)[chunk].mean()),
                    "count": len(chunk),
                }
            )
    return pd.DataFrame(rows)


def capacity_metrics(
    day: pd.Series, y: np.ndarray, score: np.ndarray, money: np.ndarray, per_day: int
) -> dict[str, float]:
    """Precision and recall if reviewers check the `per_day` riskiest requests of each day.

    Returns precision, recall (by count) and recall of abusive refund money among the reviewed.
    """
    frame = pd.DataFrame(
        {"day": day.to_numpy(), "y": np.asarray(y, dtype=bool), "s": score, "m": money}
    )
    frame["rank"] = frame.groupby("day")["s"].rank(method="first", ascending=False)
    reviewed = frame["rank"] <= per_day
    positives = frame["y"].sum()
    abusive_money = frame.loc[frame["y"], "m"].sum()
    caught = frame["y"] & reviewed
    return {
        "reviewed_share": float(reviewed.mean()) if len(frame) else math.nan,
        "precision": float(caught.sum() / reviewed.sum()) if reviewed.any() else math.nan,
        "recall": float(caught.sum() / positives) if positives else math.nan,
        "money_recall": float(frame.loc[caught, "m"].sum() / abusive_money)
        if abusive_money
        else math.nan,
    }


def slice_metrics(frame: pd.DataFrame, by: str, y: str, score: str) -> pd.DataFrame:
    """Rows, abuse rate, ROC-AUC and average precision for each value of column `by`."""
    rows = []
    for value, part in frame.groupby(by, sort=True, observed=True):
        labels = part[y].to_numpy(dtype=bool)
        rows.append(
            {
                "slice": by,
                "value": str(value),
                "rows": len(part),
                "abuse_rate": float(labels.mean()),
                "roc_auc": safe_auc(labels, part[score].to_numpy()),
                "average_precision": safe_ap(labels, part[score].to_numpy()),
            }
        )
    return pd.DataFrame(rows)
