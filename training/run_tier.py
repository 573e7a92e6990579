"""One credit-tier training run end to end: snapshots, fit, evaluate, log, register, gate."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from features.batch import (
    CREDIT_TARGET_DAYS,
    BatchBuilder,
    data_end_us,
    snapshot_dates,
)
from features.definitions import DAY_US, FEATURE_VERSION
from features.events import times_us
from policy.tiers import Tiers
from refund_risk.errors import DataValidationError
from refund_risk.model_contract.card import (
    CHAMPION,
    CUTOFFS,
    TIER_MODEL,
    client_for,
    download_scoring,
)
from refund_risk.settings import Settings
from training.data_source import TrainingInputs
from training.registry import (
    GateResult,
    experiment_id,
    finite_metrics,
    log_and_register,
    set_alias,
)
from training.tier import (
    LOSS_DEFINITIONS,
    MONOTONE,
    CreditTierModel,
    SnapshotPart,
    TierTrainingResult,
    check_snapshot_columns,
    default_cutoff,
    feature_columns,
    history_needed,
    join_parts,
    plan_tier_split,
    snapshot_part,
    train_tier_parts,
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


def snapshot_months(inputs: TrainingInputs) -> pd.DataFrame:
    """One row per snapshot month that holds a customer: `snapshot_at` and whether its 90-day
    target window closed before the data ends (`target_window_complete`), as the snapshot rows
    of that month would say; enough to plan the split before any month is built."""
    customers = inputs.tables["customers"]
    signups = times_us(customers["signup_at"])
    first_signup = int(signups.min()) if len(signups) else None
    end = data_end_us(inputs.tables)
    horizon = CREDIT_TARGET_DAYS * DAY_US
    rows = []
    for at in snapshot_dates(inputs.tables):
        t0 = int(pd.Timestamp(at).value // 1_000)
        if first_signup is not None and first_signup < t0:
            rows.append({"snapshot_at": at, "target_window_complete": t0 + horizon <= end})
    return pd.DataFrame(rows, columns=["snapshot_at", "target_window_complete"])


def _no_snapshot(inputs: TrainingInputs) -> DataValidationError:
    orders = len(inputs.tables["orders"])
    return DataValidationError(
        f"there is no monthly customer snapshot to train on: the data holds {orders:,} "
        "orders, and snapshots start at the first month after the first order; import the "
        f"shop's orders (`refund-risk data import`). {history_needed(2)}"
    )


def snapshot_parts(
    inputs: TrainingInputs,
    dates: Sequence[pd.Timestamp],
    features: Sequence[str],
    builder: BatchBuilder,
    test: bool = False,
) -> Iterator[SnapshotPart]:
    """The snapshot months `dates`, built one at a time and each cut down at once to what tier
    training reads: the model's `features` of customers with a history (for `test` months,
    every feature column and each row's snapshot date and customer id)."""
    for at in dates:
        yield _month_part(builder, at, features, test)


def _month_part(
    builder: BatchBuilder, at: pd.Timestamp, features: Sequence[str], test: bool
) -> SnapshotPart:
    # A function of its own, so the whole month's frame is released before the next is built.
    frame = builder.snapshot_rows(at)
    check_snapshot_columns(frame, features)
    columns = feature_columns(frame) if test else features
    return snapshot_part(frame, columns, with_head=test)


def _champion_value(client: Any, result: TierTrainingResult) -> GateResult:
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
        # The test months' customers with a history, as the new model scored them.
        X = result.test_rows.loc[:, champion.card["features"]].to_numpy(dtype=np.float64)
        scores = score_with_card(champion.model_file, champion.card, X)
        test = result.test
        value = safe_auc(test["loss"].to_numpy(dtype=bool)[test["score"].notna()], scores)
        how = "champion re-scored on these customer-months"
    return GateResult(GATE_METRIC, new_value, value, champion.version, bool(new_value > value), how)


def held_back_if_disordered(gate: GateResult | None, problem: str | None) -> GateResult | None:
    """The gate's verdict, kept from promoting a model whose tiers' realised loss does not rise
    from the best to the worst (`problem` says how): such tiers would hand privileges to
    riskier customers, whatever the model's ranking figure."""
    if gate is None or not gate.promoted or problem is None:
        return gate
    return replace(gate, promoted=False, how=problem)


def train_tier_streamed(
    inputs: TrainingInputs,
    tiers: Tiers,
    seed: int,
    test_months: int = 2,
    loss: str = "auto",
) -> tuple[TierTrainingResult, pd.DataFrame]:
    """`train_tier_model` on every snapshot month of `inputs` and its default cutoff, with the
    months built one at a time; the same result, in a fraction of the memory. Also returns the
    first five fitted rows (the model's input example).
    """
    # Month by month: only the split's months are built, each is cut down to the rows and
    # columns training reads as soon as it is built, and the test months are built after the
    # model is fitted (at a million customers, all months at once took 10.4 GB).
    months = snapshot_months(inputs)
    if months.empty:
        raise _no_snapshot(inputs)
    cutoff = default_cutoff(months, test_months)
    split = plan_tier_split(months, cutoff, cutoff)
    model = CreditTierModel()
    features = model._feature_list()
    builder = BatchBuilder(inputs.tables)
    # The fit and calibration parts are not kept here: training releases them once fitted,
    # before the test months are built.
    result = train_tier_parts(
        split,
        join_parts(snapshot_parts(inputs, split.fit_dates, features, builder)),
        join_parts(snapshot_parts(inputs, split.calibration_dates, features, builder)),
        snapshot_parts(inputs, split.test_dates, features, builder, test=True),
        seed=seed,
        tiers=tiers,
        oracle_customers=inputs.oracle_customers,
        model=model,
        loss=loss,
    )
    return result, result.example_rows


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

    result, example_rows = train_tier_streamed(inputs, tiers, settings.seed, test_months, loss)
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
        example = example_rows.astype("float64")
        version = log_and_register(
            TIER_MODEL,
            result.model.booster_,
            tier_card(result),
            example,
            result.model.predict_raw(example),
        )
        gate = _champion_value(client, result) if promote else None
        gate = held_back_if_disordered(gate, result.ordering_problem)
        if gate is not None:
            mlflow.set_tag("gate", gate.describe())
        set_alias(client, TIER_MODEL, version, promoted=bool(gate and gate.promoted))
    return TierRun(result, run.info.run_id, version, gate)
