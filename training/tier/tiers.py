"""From scores to tiers: scoring snapshot rows, the tier of a score, and fitting the cut-offs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from policy.tiers import Tiers, assign_tier, with_bounds
from refund_risk.errors import DataValidationError
from training.tier.inputs import HISTORY_FEATURE
from training.tier.model import CreditTierModel


def has_history(frame: pd.DataFrame) -> np.ndarray:
    """Per snapshot row: whether the customer had ordered before the snapshot date."""
    return frame[HISTORY_FEATURE].to_numpy(dtype=np.float64) > 0


def score_customers(model: CreditTierModel, frame: pd.DataFrame) -> np.ndarray:
    """Loss probability per snapshot row, 1-D; NaN for customers with no history yet."""
    scores = np.full(len(frame), np.nan)
    known = has_history(frame)
    if known.any():
        scores[known] = model.predict_proba(frame.loc[known])[:, 1]
    return scores


def tier_for(score: float | None, tiers: Tiers) -> str:
    """The tier name for one score; None or NaN (a new customer) gives the default tier."""
    return assign_tier(score, tiers).name


def tiers_for(scores: np.ndarray, tiers: Tiers) -> np.ndarray:
    """Tier names for many scores (NaN: the default tier), by the policy's own `assign_tier`."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.full(len(scores), tiers.default.name, dtype=object)
    known = ~np.isnan(scores)
    # Each distinct score is assigned once: the policy's rule stays the only definition of it.
    unique, inverse = np.unique(scores[known], return_inverse=True)
    names = np.array([tier_for(float(s), tiers) for s in unique], dtype=object)
    out[known] = names[inverse] if len(unique) else out[known]
    return out


def customer_tiers(
    model: CreditTierModel,
    snapshot: pd.DataFrame,
    tiers: Tiers,
    customer_ids: Sequence[str] | pd.Series | None = None,
) -> pd.DataFrame:
    """Score and tier per customer of one snapshot: `customer_id`, `score`, `tier`.

    With `customer_ids`, one row per id in that order; ids absent from the snapshot (signed up
    after it, or unknown) get no score and the default tier.
    """
    scored = pd.DataFrame(
        {
            "customer_id": snapshot["customer_id"].to_numpy(),
            "score": score_customers(model, snapshot),
        }
    )
    if customer_ids is not None:
        ids = pd.Index(np.asarray(customer_ids, dtype=object))
        scored = scored.set_index("customer_id").reindex(ids).rename_axis("customer_id")
        scored = scored.reset_index()
    scored["tier"] = tiers_for(scored["score"].to_numpy(dtype=np.float64), tiers)
    return scored


def suggest_thresholds(
    scores: np.ndarray, tiers: Tiers, quantiles: Sequence[float]
) -> dict[str, float]:
    """Upper bounds for every tier but the worst, at the given quantiles of `scores`.

    For choosing the tiers file's `max_loss_probability` values from scores the model gave on
    data known at training time (the calibration months), never from the test months. Bounds
    are rounded to 4 decimals (a file people read) and kept strictly rising.
    """
    if len(quantiles) != len(tiers.tiers) - 1:
        raise ValueError(
            f"{len(tiers.tiers)} tiers need {len(tiers.tiers) - 1} quantiles, got {len(quantiles)}"
        )
    known = np.asarray(scores, dtype=np.float64)
    known = known[~np.isnan(known)]
    if not len(known):
        raise ValueError("no scores to take quantiles of")
    bounds: dict[str, float] = {}
    previous = 0.0
    for tier, q in zip(tiers.tiers[:-1], quantiles, strict=True):
        bound = max(round(float(np.quantile(known, q)), 4), round(previous + 1e-4, 4))
        bounds[tier.name] = bound
        previous = bound
    bounds[tiers.tiers[-1].name] = 1.0
    return bounds


def with_thresholds(tiers: Tiers, thresholds: Mapping[str, float]) -> Tiers:
    """The same tiers with other upper bounds, validated again as a tiers file would be."""
    return with_bounds(tiers, thresholds, source=f"{tiers.source} (thresholds replaced)")


def fit_cutoffs(scores: np.ndarray, tiers: Tiers) -> dict[str, float]:
    """Each tier's upper score bound, at the tiers' cumulative shares of `scores`, best first.

    `scores` are the training population's (NaN, customers with no history, are left out: they
    take the default tier whatever the bounds). A bound is the score below which the tier's
    share (and the better tiers') of customers lie: `np.quantile` with the "inverted_cdf"
    method, an actual score, and a tier holds the scores at or below it. Where many customers
    share the score at the bound, they all go to the tier or all to the next, whichever leaves
    the tier's share nearer; so a tier can hold more or less than its share; a bound equal to
    the previous
    one is nudged up by the smallest step so bounds still rise (the tier is then empty). The
    worst tier's bound is 1.0 (it takes every customer). Without shares in the tiers file the
    file's own bounds are returned.
    """
    shares = tiers.shares
    if shares is None:
        return {t.name: t.max_loss_probability for t in tiers.tiers}
    known = np.asarray(scores, dtype=np.float64)
    known = known[~np.isnan(known)]
    if not len(known):
        raise DataValidationError(
            "no customer of the training months has a score to fit the tiers' cut-offs on"
        )
    cumulative = np.cumsum(shares)[:-1]
    bounds: dict[str, float] = {}
    previous = 0.0
    for tier, q in zip(tiers.tiers[:-1], cumulative, strict=True):
        bound = float(np.quantile(known, min(float(q), 1.0), method="inverted_cdf"))
        # Customers sharing the bound's score all fall in the tier; when leaving them to the
        # next tier comes nearer the share, the bound is the score just below theirs.
        below = known[known < bound]
        if len(below) and abs(len(below) / len(known) - q) < abs(np.mean(known <= bound) - q):
            bound = float(below.max())
        bound = max(bound, float(np.nextafter(previous, 1.0)))
        bounds[tier.name] = min(bound, float(np.nextafter(1.0, 0.0)))
        previous = bounds[tier.name]
    bounds[tiers.tiers[-1].name] = 1.0
    return bounds
