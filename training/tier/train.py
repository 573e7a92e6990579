"""Fitting the tier model on a split and evaluating it on the test months."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.base import clone
from sklearn.metrics import brier_score_loss

from policy.tiers import Tiers, with_bounds
from refund_risk.errors import DataValidationError
from training.metrics import expected_calibration_error, safe_ap, safe_auc
from training.tier.evaluation import (
    LATENT_TYPES,
    oracle_agreement,
    ordering_problem,
    rises_strictly,
    tier_table,
)
from training.tier.figures import score_distribution_figure, tier_loss_figure
from training.tier.loss import LOSS_DEFINITIONS, choose_loss, loss_labels
from training.tier.model import CreditTierModel
from training.tier.parts import SnapshotPart, check_snapshot_columns, feature_columns, snapshot_part
from training.tier.split import TierSplit, plan_tier_split
from training.tier.tiers import fit_cutoffs, tiers_for


@dataclass
class TierTrainingResult:
    """A fitted tier model and its figures on the test months.

    `test` holds one row per test customer-month: `snapshot_at`, `customer_id`, `score` (NaN
    for new customers), `tier`, `loss` (the realised target) and, with the oracle,
    `latent_type`.
    """

    model: CreditTierModel
    features: tuple[str, ...]
    split: TierSplit
    tiers: Tiers
    """The tiers in force: the file's, with the fitted cut-offs as upper bounds."""
    metrics: dict[str, float]
    tier_table: pd.DataFrame
    loss_rises_strictly: bool
    oracle: dict[str, float]
    test: pd.DataFrame
    calibration_scores: np.ndarray
    seconds: float
    figures: dict[str, Figure] = field(default_factory=dict)
    loss: str = "kept"
    """The loss definition trained on (a key of `LOSS_DEFINITIONS`)."""
    cutoffs: dict[str, float] = field(default_factory=dict)
    """Each tier's upper score bound, fitted at the tiers file's shares (or the file's own)."""
    ordering_problem: str | None = None
    """Why realised loss does not rise strictly across tiers, and what to try; None if it does."""
    test_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The feature columns of the test months' customers with a history, in `test` order."""
    example_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The first five fitted rows (calibration rows if fewer), the model's input example."""

    def summary(self) -> dict[str, float]:
        """Every headline figure in one flat mapping, for logs and MLflow metrics."""
        out = dict(self.metrics)
        out.update(self.oracle)
        out["loss_rises_strictly"] = float(self.loss_rises_strictly)
        table = self.tier_table
        for name, share, rate in zip(
            table["tier"], table["share"], table["loss_rate"], strict=True
        ):
            out[f"tier_{name}_share"] = float(share)
            out[f"tier_{name}_loss_rate"] = float(rate)
        return out


def train_tier_model(
    snapshots: pd.DataFrame,
    *,
    train_end: pd.Timestamp,
    test_start: pd.Timestamp,
    seed: int,
    tiers: Tiers,
    oracle_customers: pd.DataFrame | None = None,
    calibration_months: int = 1,
    model: CreditTierModel | None = None,
    loss: str = "auto",
) -> TierTrainingResult:
    """Fit the tier model on snapshots known at `train_end`; evaluate it from `test_start` on.

    `snapshots` is the concatenation of `build_credit_snapshots` frames. Customers with no
    history are left out of fitting (their tier is the default, whatever a model would say) but
    kept in the test months' tier table, in the default tier. `oracle_customers` (customer_id,
    latent_type), for a synthetic world only, adds the latent-type figures; it never reaches the
    model. `model` sets hyperparameters (its `random_state` is replaced by `seed`). `loss` is a
    key of `LOSS_DEFINITIONS` or `auto` (see the module docstring). When the tiers file gives
    shares, the tiers' cut-offs are fitted at them on the calibration months' scores (the fit
    months' without calibration) and `tiers` of the result holds them.

    Returns the model, its inputs, ROC-AUC / average precision / Brier / calibration error and
    base rates on the test months, the per-tier table, whether realised loss rises strictly from
    the best tier to the worst, the oracle agreement, and two figures: `tier_loss` and
    `score_by_type` (by latent type with the oracle, else by realised loss).
    `train_tier_parts` does the same from snapshot months built one at a time.
    """
    started = time.perf_counter()
    estimator = clone(model or CreditTierModel()).set_params(random_state=seed)
    features = estimator._feature_list()
    check_snapshot_columns(snapshots, features)
    split = plan_tier_split(snapshots, train_end, test_start, calibration_months)
    at = snapshots["snapshot_at"]

    def part(dates: tuple[pd.Timestamp, ...], columns: Sequence[str], head: bool) -> SnapshotPart:
        return snapshot_part(snapshots[at.isin(dates).to_numpy()], columns, head)

    return train_tier_parts(
        split,
        part(split.fit_dates, features, False),
        part(split.calibration_dates, features, False),
        iter([part(split.test_dates, feature_columns(snapshots), True)]),
        seed=seed,
        tiers=tiers,
        oracle_customers=oracle_customers,
        model=estimator,
        loss=loss,
        started=started,
    )


def train_tier_parts(
    split: TierSplit,
    fit: SnapshotPart,
    calibration: SnapshotPart,
    test_parts: Iterable[SnapshotPart],
    *,
    seed: int,
    tiers: Tiers,
    oracle_customers: pd.DataFrame | None = None,
    model: CreditTierModel | None = None,
    loss: str = "auto",
    started: float | None = None,
) -> TierTrainingResult:
    """`train_tier_model` on snapshot rows already cut into the split's parts.

    `fit` and `calibration` hold the split's fit and calibration months (their `rows` at least
    the model's features); `test_parts` yields the test months in order, each with its `head`
    and the feature columns a champion may read. It is read only after the model is fitted, so
    a caller may build each test month as it is asked for. The result's `test_rows` keeps the
    test months' known rows, for re-scoring a champion on them.
    """
    started = time.perf_counter() if started is None else started
    estimator = clone(model or CreditTierModel()).set_params(random_state=seed)
    features = estimator._feature_list()
    fit_labels = fit.labels.loc[fit.known]
    cal_labels = calibration.labels.loc[calibration.known]
    loss_name = choose_loss(fit_labels, loss, split.fit_dates)
    y_fit = loss_labels(fit_labels, loss_name)
    if y_fit.all():
        raise DataValidationError(
            f"every customer of the fit months has a refund loss ({LOSS_DEFINITIONS[loss_name]})"
            ": there is nobody to tell them apart from; train with --loss kept, or check that "
            "the refund types and order stages were imported as they are"
        )
    cal_rows = calibration.rows
    estimator.fit(
        fit.rows,
        y_fit,
        cal_rows if len(cal_rows) else None,
        loss_labels(cal_labels, loss_name) if len(cal_rows) else None,
    )
    calibration_scores = estimator.predict_proba(cal_rows)[:, 1] if len(cal_rows) else np.zeros(0)
    # The cut-offs come from the latest months known at training, as the model then scores them.
    population = calibration_scores if len(cal_rows) else estimator.predict_proba(fit.rows)[:, 1]
    fit_rows = len(fit.rows)
    example_rows = pd.concat(
        [p.loc[:, list(features)].head(5) for p in (fit.rows, cal_rows) if len(p)],
        ignore_index=True,
    ).head(5)
    # Released before the test months are read: a caller may build those only now.
    del fit, calibration, cal_rows
    cutoffs = fit_cutoffs(population, tiers)
    tiers = with_bounds(tiers, cutoffs)
    scores, losses, heads, kept_rows = [], [], [], []
    for part in test_parts:
        score = np.full(len(part), np.nan)
        if part.known.any():
            score[part.known] = estimator.predict_proba(part.rows)[:, 1]
        scores.append(score)
        losses.append(loss_labels(part.labels, loss_name))
        heads.append(part.head)
        kept_rows.append(part.rows)
    score = np.concatenate(scores) if scores else np.zeros(0)
    loss_of_test = np.concatenate(losses) if losses else np.zeros(0, dtype=bool)
    head = pd.concat(heads, ignore_index=True) if heads else pd.DataFrame()
    tier = tiers_for(score, tiers)
    scored = ~np.isnan(score)
    metrics = {
        "roc_auc": safe_auc(loss_of_test[scored], score[scored]),
        "average_precision": safe_ap(loss_of_test[scored], score[scored]),
        "brier": float(brier_score_loss(loss_of_test[scored], score[scored])),
        "calibration_error": expected_calibration_error(loss_of_test[scored], score[scored]),
        "mean_score": float(score[scored].mean()),
        "loss_rate": float(loss_of_test[scored].mean()),
        "loss_rate_new_customers": (
            float(loss_of_test[~scored].mean()) if (~scored).any() else math.nan
        ),
        "new_customer_share": float((~scored).mean()),
        "fit_rows": float(fit_rows),
        "calibration_rows": float(len(cal_labels)),
        "test_rows": float(len(score)),
    }
    test = pd.DataFrame(
        {
            "snapshot_at": head["snapshot_at"].to_numpy(),
            "customer_id": head["customer_id"].to_numpy(),
            "score": score,
            "tier": tier,
            "loss": loss_of_test,
        }
    )
    latent: np.ndarray | None = None
    oracle: dict[str, float] = {}
    if oracle_customers is not None:
        types = oracle_customers.set_index("customer_id")["latent_type"]
        latent = types.reindex(test["customer_id"]).to_numpy(dtype=object)
        test["latent_type"] = latent
        oracle = oracle_agreement(score, tier, latent, tiers)
    table = tier_table(tiers, tier, loss_of_test, score, latent)
    if latent is not None:
        groups, order = latent, LATENT_TYPES
    else:
        groups = np.where(loss_of_test, "loss in 90 days", "no loss")
        order = ("no loss", "loss in 90 days")
    figures = {
        "tier_loss": tier_loss_figure(table),
        "score_by_type": score_distribution_figure(score, groups, order, tiers),
    }
    return TierTrainingResult(
        model=estimator,
        features=features,
        split=split,
        tiers=tiers,
        metrics=metrics,
        tier_table=table,
        loss_rises_strictly=rises_strictly(table),
        oracle=oracle,
        test=test,
        calibration_scores=calibration_scores,
        seconds=time.perf_counter() - started,
        figures=figures,
        loss=loss_name,
        cutoffs=cutoffs,
        ordering_problem=ordering_problem(table, loss_name),
        test_rows=pd.concat(kept_rows, ignore_index=True) if kept_rows else pd.DataFrame(),
        example_rows=example_rows,
    )
