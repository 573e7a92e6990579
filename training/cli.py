"""`refund-risk train ...` and `refund-risk models ...`: fit, evaluate, register, promote, list."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from refund_risk.console import out, print_result, reports_errors
from refund_risk.settings import load_settings

train_app = typer.Typer(help="Train, evaluate and register models.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models and their aliases.", no_args_is_help=True)

HEADLINE = (
    "roc_auc",
    "average_precision",
    "calibration_error",
    "at_capacity_precision",
    "at_capacity_recall",
    "at_capacity_money_recall",
    "roc_auc_true",
    "oracle_roc_auc_true",
    "roc_auc_ratio_to_oracle",
    "calibration_error_true",
)


@train_app.command("abuse")
@reports_errors
def train_abuse_command(
    promote: Annotated[
        bool, typer.Option(help="Make it champion if it beats the current one.")
    ] = False,
    review_share: Annotated[
        float, typer.Option(help="Reviewer capacity as a share of daily requests.")
    ] = 0.15,
    test_months: Annotated[int, typer.Option(help="Months at the end used as test.")] = 3,
) -> None:
    """Fit the refund-abuse model and its baselines on a time-ordered split; log to MLflow."""
    from training.data_source import load_training_inputs
    from training.dataset import build_abuse_dataset, plan_split
    from training.run_abuse import run_abuse_training

    settings = load_settings()
    inputs = load_training_inputs(settings)
    split = plan_split(inputs.rows["requested_at"], test_months=test_months)
    dataset = build_abuse_dataset(inputs.rows, inputs.outcomes, split, inputs.oracle_refunds)
    out.print(f"split: {split.describe()}")
    out.print(f"rows: {dataset.summary()}")
    run = run_abuse_training(
        settings, inputs.rows, inputs.outcomes, dataset, inputs.manifest, promote, review_share
    )
    table = Table(title=f"refund-abuse v{run.version}: test months from {split.deploy_at.date()}")
    table.add_column("figure")
    for evaluation in run.result.evaluations:
        table.add_column(evaluation.name, justify="right")
    for key in HEADLINE:
        values = [e.headline.get(key) for e in run.result.evaluations]
        if all(v is None for v in values):
            continue
        table.add_row(key, *("-" if v is None else f"{v:.3f}" for v in values))
    typer.echo("")
    print_result(table)
    slices = run.result.evaluations[0].slices
    typer.echo(slices.round(3).to_string(index=False))
    typer.echo(
        "\nfeature families: share of split gain; mean contribution (log-odds) on test requests "
        "where the family is non-zero (rows) and where it is zero"
    )
    typer.echo(run.families.round(3).to_string(index=False))
    typer.echo(f"trained in {run.seconds:.1f} s; MLflow run {run.run_id}")
    if run.gate is not None:
        typer.echo(f"gate: {run.gate.describe()}")
    else:
        typer.echo(f"registered {run.version} as challenger (use --promote to run the gate)")


TIER_HELP = "\n\n".join(
    [
        "Fit the credit-tier model on monthly customer snapshots; log and register it.",
        "The model predicts each customer's chance of causing a refund loss in the next 90 "
        "days. No shop knows its true losses, so a loss is one of these documented proxies "
        "(--loss):",
        "kept: a refund an outcome found abusive (a return whose goods never came back, or came "
        "back swapped, is recorded so), or a refund-only claim on delivered goods (the customer "
        "kept goods and money). The second kind needs no outcomes at all.",
        "refunds: any refund request, returns and cancellations included (each costs the shop "
        "handling, shipping and the sale); for a shop whose data has no kept-goods loss.",
        "auto (the default): kept when the training months hold such a loss, else refunds.",
        "Tiers are shares of the shop's customers: each tier's upper score bound is fitted at "
        "the tiers file's `share`s of the training customers' scores and stored with the model, "
        "and the service uses those bounds. The run says whether the realised loss rises "
        "strictly from the best tier to the worst on the test months, and what to try if not.",
    ]
)


@train_app.command("tier", help=TIER_HELP)
@reports_errors
def train_tier_command(
    promote: Annotated[
        bool, typer.Option(help="Make it champion if it beats the current one.")
    ] = False,
    tiers_file: Annotated[
        str | None, typer.Option("--tiers", help="Credit tiers file (default: shipped).")
    ] = None,
    test_months: Annotated[int, typer.Option(help="Snapshot months used as test.")] = 2,
    loss: Annotated[
        str, typer.Option(help="What counts as a refund loss: auto, kept or refunds (see above).")
    ] = "auto",
) -> None:
    """Fit the credit-tier model on monthly customer snapshots; log and register it."""
    from policy.tiers import load_tiers
    from training.data_source import load_training_inputs
    from training.run_tier import run_tier_training
    from training.tier import LOSS_DEFINITIONS

    settings = load_settings()
    tiers = load_tiers(tiers_file) if tiers_file else load_tiers()
    inputs = load_training_inputs(settings, refund_rows=False)
    run = run_tier_training(settings, inputs, tiers, promote, test_months, loss)
    result = run.result
    typer.echo(f"split: {result.split.describe()}")
    typer.echo(f"loss counted: {result.loss}: {LOSS_DEFINITIONS[result.loss]}")
    for key in ("roc_auc", "average_precision", "brier", "calibration_error", "loss_rate"):
        typer.echo(f"{key:<32} {result.metrics[key]:.4f}")
    for key, value in result.oracle.items():
        typer.echo(f"{key:<32} {value:.4f}")
    cutoffs = ", ".join(f"{name} <= {bound:.4g}" for name, bound in result.cutoffs.items())
    typer.echo(f"tier cut-offs (loss probability), stored with the model: {cutoffs}")
    typer.echo(result.tier_table.round(4).to_string(index=False))
    if result.ordering_problem is None:
        typer.echo("realised loss rises strictly from best tier to worst: yes")
    else:
        typer.echo(
            f"realised loss rises strictly from best tier to worst: NO. {result.ordering_problem}"
        )
    typer.echo(f"trained in {result.seconds:.1f} s; MLflow run {run.run_id}")
    if run.gate is not None:
        typer.echo(f"gate: {run.gate.describe()}")
    else:
        typer.echo(f"registered {run.version} as challenger (use --promote to run the gate)")


@models_app.command("list")
@reports_errors
def list_models() -> None:
    """Every registered version, its aliases and headline figures."""
    from refund_risk.model_contract.card import client_for
    from training.registry import list_versions

    rows = list_versions(client_for(load_settings()))
    if not rows:
        typer.echo("no registered models yet: run `refund-risk train abuse --promote`")
        return
    header = f"{'model':<12} {'version':>7}  {'aliases':<20} {'features':<17} "
    header += f"{'ROC-AUC':>8} {'avg prec':>8} {'ECE':>6}"
    typer.echo(header)
    for row in rows:
        m = row["metrics"]

        def fmt(key: str, metrics: dict[str, float] = m) -> str:
            value = metrics.get(f"headline.{key}")
            return "-" if value is None else f"{value:.3f}"

        typer.echo(
            f"{row['model']:<12} {row['version']:>7}  {row['aliases'] or '-':<20} "
            f"{row['feature_version']:<17} {fmt('roc_auc'):>8} "
            f"{fmt('average_precision'):>8} {fmt('calibration_error'):>6}"
        )
