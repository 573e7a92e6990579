"""One credit-tier training run end to end: snapshots, fit, evaluate, log, register, gate."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from features.batch import (
    CREDIT_TARGET_DAYS,
    build_credit_snapshots,
    data_end_us,
    snapshot_dates,
)
from features.definitions import FEATURE_VERSION
from policy.model import Tiers
from refund_risk.errors import DataValidationError
from refund_risk.settings import Settings
from training.data_source import TrainingInputs
from training.registry import (
    CHAMPION,
    CUTOFFS,
    TIER_MODEL,
    GateResult,
    client_for,
    download_scoring,
    experiment_id,
    finite_metrics,
    log_and_register,
    set_alias,
)
from training.tier import (
    LOSS_DEFINITIONS,
    MONOTONE,
    TierTrainingResult,
    default_cutoff,
    has_history,
    history_needed,
    loss_labels,
    train_tier_model,
)

GATE_METRIC = "roc_auc"


@dataclass
class TierRun:
    """What one tier training run produced."""

    result: TierTrainingResult
    run_id: str
    version: str
    gate: GateResult | None


def tier_card(result: TierTrainingResult) -> dict[str, Any]:
    """The JSON card stored beside the tier booster."""
    slope, intercept = result.model.calibration_
    return {
        "model": TIER_MODEL,
        "features": list(result.features),
        "feature_version": FEATURE_VERSION,
        "calibration": {"method": "platt", "slope": slope, "intercept": intercept},
        "history_feature": "customer_orders_all_time",
        "split": result.split.describe(),
        "monotone": {k: v[0] for k, v in MONOTONE.items()},
        "loss": {"name": result.loss, "counts": LOSS_DEFINITIONS[result.loss]},
        # The service puts these bounds in force with the tiers file's privileges.
        CUTOFFS: dict(result.cutoffs),
        "tier_shares": dict(zip(result.tiers.names, result.tiers.shares or (), strict=False)),
        "tiers_version": result.tiers.version,
    }


def needed_dates(inputs: TrainingInputs, test_months: int) -> list[pd.Timestamp]:
    """The snapshot months the split will use: those whose 90-day window had closed by the
    cutoff (fit and calibration) and the test months; the months between are never read, so
    they are not built (at a million customers each month is ~700,000 rows)."""
    dates = snapshot_dates(inputs.tables)
    end = pd.Timestamp(data_end_us(inputs.tables), unit="us")
    horizon = pd.Timedelta(days=CREDIT_TARGET_DAYS)
    complete = [d for d in dates if d + horizon <= end]
    if len(complete) < test_months:
        return dates  # let the split explain what is missing
    cutoff = complete[-test_months]
    return [d for d in dates if d + horizon <= cutoff or d >= cutoff]


def build_snapshots(
    inputs: TrainingInputs, dates: list[pd.Timestamp] | None = None
) -> pd.DataFrame:
    """The monthly customer snapshots of the world (all months, or `dates`), in one frame."""
    frames = list(build_credit_snapshots(inputs.tables, dates=dates))
    if not frames:
        orders = len(inputs.tables["orders"])
        raise DataValidationError(
            f"there is no monthly customer snapshot to train on: the data holds {orders:,} "
            "orders, and snapshots start at the first month after the first order; import the "
            f"shop's orders (`refund-risk data import`). {history_needed(2)}"
        )
    return pd.concat(frames, ignore_index=True)


def _champion_value(client: Any, result: TierTrainingResult, snapshots: pd.DataFrame) -> GateResult:
    """Compare with the champion tier model on the same test customer-months."""
    from training.metrics import safe_auc
    from training.run_abuse import score_with_card

    new_value = result.metrics[GATE_METRIC]
    try:
        champion = download_scoring(client, TIER_MODEL, CHAMPION)
    except Exception:  # no champion yet
        return GateResult(GATE_METRIC, new_value, None, None, True, "first version")
    if champion.feature_version != FEATURE_VERSION:
        run = client.get_run(champion.run_id)
        value = run.data.metrics.get(f"headline.{GATE_METRIC}", float("-inf"))
        how = "champion built on other features: its recorded figure"
    else:
        test = snapshots[snapshots["snapshot_at"].isin(result.split.test_dates)]
        test = test[has_history(test)]
        X = test.loc[:, champion.card["features"]].to_numpy(dtype=np.float64)
        scores = score_with_card(champion.model_file, champion.card, X)
        value = safe_auc(loss_labels(test, result.loss), scores)
        how = "champion re-scored on these customer-months"
    return GateResult(GATE_METRIC, new_value, value, champion.version, bool(new_value > value), how)


def held_back_if_disordered(gate: GateResult | None, problem: str | None) -> GateResult | None:
    """The gate's verdict, kept from promoting a model whose tiers' realised loss does not rise
    from the best to the worst (`problem` says how): such tiers would hand privileges to
    riskier customers, whatever the model's ranking figure."""
    if gate is None or not gate.promoted or problem is None:
        return gate
    return replace(gate, promoted=False, how=problem)


def run_tier_training(
    settings: Settings,
    inputs: TrainingInputs,
    tiers: Tiers,
    promote: bool,
    test_months: int = 2,
    loss: str = "auto",
) -> TierRun:
    """Fit the tier model on monthly snapshots, log it to MLflow, register it, run the gate.

    The card stores the tiers' cut-offs fitted at the tiers file's shares, and the loss
    definition trained on; both are also run parameters (`cutoff.<tier>`, `loss`).
    """
    import mlflow
    import mlflow.lightgbm

    snapshots = build_snapshots(inputs, needed_dates(inputs, test_months))
    cutoff = default_cutoff(snapshots, test_months)
    result = train_tier_model(
        snapshots,
        train_end=cutoff,
        test_start=cutoff,
        seed=settings.seed,
        tiers=tiers,
        oracle_customers=inputs.oracle_customers,
        loss=loss,
    )
    client = client_for(settings)
    exp = experiment_id(client, settings)
    with mlflow.start_run(experiment_id=exp, run_name="credit-tier") as run:
        mlflow.set_tags({"model": TIER_MODEL, "feature_version": FEATURE_VERSION})
        mlflow.log_params(
            {
                **{f"lgb.{k}": v for k, v in result.model.get_params().items() if k != "features"},
                **{f"split.{k}": v for k, v in result.split.describe().items()},
                "seed": settings.seed,
                "tiers_version": tiers.version,
                "feature_version": FEATURE_VERSION,
                "loss": result.loss,
                **{f"cutoff.{k}": v for k, v in result.cutoffs.items()},
            }
        )
        mlflow.log_metrics(
            finite_metrics({f"headline.{k}": v for k, v in result.summary().items()})
        )
        mlflow.log_metric("training_seconds", result.seconds)
        mlflow.log_dict(inputs.manifest, "data/manifest.json")
        mlflow.log_text(result.tier_table.to_csv(index=False), "evaluation/tiers.csv")
        for name, figure in result.figures.items():
            mlflow.log_figure(figure, f"plots/{name}.png")
        example_rows = snapshots[has_history(snapshots)].head(5)
        example = example_rows.loc[:, list(result.features)].astype("float64")
        version = log_and_register(
            TIER_MODEL,
            result.model.booster_,
            tier_card(result),
            example,
            result.model.predict_raw(example),
        )
        gate = _champion_value(client, result, snapshots) if promote else None
        gate = held_back_if_disordered(gate, result.ordering_problem)
        if gate is not None:
            mlflow.set_tag("gate", gate.describe())
        set_alias(client, TIER_MODEL, version, promoted=bool(gate and gate.promoted))
    return TierRun(result, run.info.run_id, version, gate)
