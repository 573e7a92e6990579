"""One abuse-model training run end to end: data, fit, evaluate, log, register, gate."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.definitions import FEATURE_VERSION
from refund_risk.model_contract.card import ABUSE_MODEL, CHAMPION, client_for, download_scoring
from refund_risk.model_contract.drift import references
from refund_risk.model_contract.explain import fit_contribution_tables
from refund_risk.settings import Settings
from training.abuse import EVIDENCE, MONOTONE_UP, AbuseTrainingResult, family_figures, train_abuse
from training.dataset import FEATURE_NAMES, AbuseDataset, feature_matrix
from training.registry import (
    GateResult,
    experiment_id,
    finite_metrics,
    log_and_register,
    set_alias,
)

GATE_METRIC = "average_precision"
"""What the gate compares: precision over recall on the labels a shop sees, where it matters."""


@dataclass
class AbuseRun:
    """What one training run produced."""

    result: AbuseTrainingResult
    run_id: str
    version: str
    gate: GateResult | None
    seconds: float
    families: pd.DataFrame


def scoring_card(result: AbuseTrainingResult) -> dict[str, Any]:
    """The JSON card stored beside the booster: enough to score without MLflow."""
    a, b = result.model.calibration_
    X = feature_matrix(result.dataset.fitting)
    if len(X) > 20_000:  # the tables need a sample, not every row
        X = X[np.random.default_rng(0).choice(len(X), 20_000, replace=False)]
    tables = fit_contribution_tables(FEATURE_NAMES, X, result.model.contributions(X))
    return {
        "model": ABUSE_MODEL,
        "features": list(FEATURE_NAMES),
        "feature_version": FEATURE_VERSION,
        "calibration": {"method": "platt", "slope": a, "intercept": b},
        "evidence": list(EVIDENCE),
        "split": result.dataset.split.describe(),
        "monotone_increasing": sorted(MONOTONE_UP),
        "explainer": tables.to_json(),
        "drift_reference": references(FEATURE_NAMES, X, result.model.predict_proba(X)[:, 1]),
    }


def score_with_card(model_file: Path, card: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """Calibrated probabilities from a stored booster and its card."""
    booster = lgb.Booster(model_file=str(model_file))
    raw = np.asarray(booster.predict(X, raw_score=True, num_threads=1))
    cal = card["calibration"]
    return np.asarray(1.0 / (1.0 + np.exp(-(cal["slope"] * raw + cal["intercept"]))))


def _gate(client: Any, dataset: AbuseDataset, new_value: float) -> GateResult:
    """Compare the new model with the champion on the same test rows."""
    from training.abuse import evaluate_scores

    try:
        champion = download_scoring(client, ABUSE_MODEL, CHAMPION)
    except Exception:  # no champion yet
        return GateResult(GATE_METRIC, new_value, None, None, True, "first version")
    if champion.feature_version == FEATURE_VERSION:
        scores = score_with_card(champion.model_file, champion.card, feature_matrix(dataset.test))
        value = evaluate_scores("champion", dataset.test, scores).headline[GATE_METRIC]
        how = "champion re-scored on these rows"
    else:
        run = client.get_run(champion.run_id)
        value = run.data.metrics.get(f"headline.{GATE_METRIC}", float("-inf"))
        how = "champion built on other features: its recorded figure"
    return GateResult(GATE_METRIC, new_value, value, champion.version, bool(new_value > value), how)


def run_abuse_training(
    settings: Settings,
    rows: pd.DataFrame,
    outcomes: pd.DataFrame,
    dataset: AbuseDataset,
    manifest: dict[str, Any],
    promote: bool,
    review_share: float = 0.15,
) -> AbuseRun:
    """Fit, evaluate, log to MLflow, register, and (with `promote`) run the gate."""
    import mlflow
    import mlflow.lightgbm

    from training import plots

    began = time.perf_counter()
    result = train_abuse(dataset, seed=settings.seed, review_share=review_share)
    seconds = time.perf_counter() - began
    client = client_for(settings)
    exp = experiment_id(client, settings)
    test = dataset.test
    labelled = test["labelled"].to_numpy(bool)

    with mlflow.start_run(experiment_id=exp, run_name="refund-abuse") as run:
        mlflow.set_tags({"model": ABUSE_MODEL, "feature_version": FEATURE_VERSION})
        mlflow.log_params(
            {
                **{f"lgb.{k}": v for k, v in result.model.get_params().items()},
                **{f"split.{k}": v for k, v in dataset.split.describe().items()},
                **{f"rows.{k}": v for k, v in dataset.summary().items()},
                "seed": settings.seed,
                "review_share": review_share,
                "feature_version": FEATURE_VERSION,
            }
        )
        for evaluation in result.evaluations:
            prefix = "headline" if evaluation.name == "lightgbm" else evaluation.name
            mlflow.log_metrics(
                finite_metrics({f"{prefix}.{k}": v for k, v in evaluation.headline.items()})
            )
            mlflow.log_text(
                evaluation.slices.to_csv(index=False), f"evaluation/slices_{evaluation.name}.csv"
            )
        mlflow.log_metric("training_seconds", seconds)
        mlflow.log_dict(manifest, "data/manifest.json")

        scores = {e.name: e.scores for e in result.evaluations}
        y = test["label"].to_numpy(bool)[labelled]
        mlflow.log_figure(
            plots.roc_figure(y, {k: v[labelled] for k, v in scores.items()}), "plots/roc.png"
        )
        mlflow.log_figure(
            plots.precision_recall_figure(y, {k: v[labelled] for k, v in scores.items()}),
            "plots/precision_recall.png",
        )
        mlflow.log_figure(
            plots.calibration_figure(y, result.test_scores[labelled], "Calibration (labels)"),
            "plots/calibration.png",
        )
        families = family_figures(result.model, feature_matrix(test))
        mlflow.log_text(families.to_csv(index=False), "evaluation/feature_families.csv")
        # MLflow keys allow no quotes: each family in plain letters and underscores.
        keys = [re.sub(r"[^a-z0-9]+", "_", str(f)).strip("_") for f in families["family"]]
        shares = families["gain_share"].to_numpy(dtype=float)
        mlflow.log_metrics(
            finite_metrics(
                {f"family_gain_share.{k}": float(v) for k, v in zip(keys, shares, strict=True)}
            )
        )
        gains = result.model.booster_.feature_importance(importance_type="gain")
        mlflow.log_figure(
            plots.importance_figure(list(FEATURE_NAMES), np.asarray(gains)),
            "plots/feature_importance.png",
        )

        example = pd.DataFrame(feature_matrix(test.head(5)), columns=list(FEATURE_NAMES))
        version = log_and_register(
            ABUSE_MODEL,
            result.model.booster_,
            scoring_card(result),
            example,
            result.model.predict_raw(example.to_numpy()),
        )
        gate = None
        if promote:
            gate = _gate(client, dataset, result.champion_metric)
            mlflow.set_tag("gate", gate.describe())
        set_alias(client, ABUSE_MODEL, version, promoted=bool(gate and gate.promoted))
    return AbuseRun(result, run.info.run_id, version, gate, seconds, families)
