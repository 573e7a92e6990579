"""`refund-risk policy ...`: validate, show, simulate and tune refund policies."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from refund_risk.console import console, out, print_result, progress_bar, reports_errors

if TYPE_CHECKING:
    import pandas as pd

    from policy.simulate import Periods
    from policy.tiers import Tiers

app = typer.Typer(
    help="The decision policy: validate, show, simulate on past requests, tune.",
    no_args_is_help=True,
)

PolicyFile = Annotated[Path, typer.Option("--policy", help="Policy YAML file.")]
TiersOption = Annotated[
    Path | None, typer.Option("--tiers", help="Credit tiers YAML file (default: the shipped one).")
]
ScoresOption = Annotated[
    Path | None,
    typer.Option(
        "--scores",
        help="Parquet table of already-scored past requests (layout: policy.scored).",
    ),
]
CostsOption = Annotated[
    Path | None, typer.Option("--costs", help="YAML file overriding cost model figures.")
]
ReportFromOption = Annotated[
    str | None,
    typer.Option(
        "--report-from",
        help=(
            "Date (YYYY-MM-DD) from which past requests form the later, reported period "
            "(default: the day by which half of them were made)."
        ),
    ),
]
LabelOption = Annotated[
    str,
    typer.Option(
        "--label", help="Count abuse by: auto (ground truth if present), known, or oracle."
    ),
]


def _tiers(path: Path | None) -> Tiers:
    from policy.tiers import DEFAULT_TIERS_PATH, load_tiers

    return load_tiers(path or DEFAULT_TIERS_PATH)


def _periods(frame: pd.DataFrame, report_from: str | None) -> Periods:
    import pandas as pd

    from policy.simulate import split_periods
    from refund_risk.errors import DataValidationError

    cut = None
    if report_from is not None:
        try:
            cut = pd.Timestamp(report_from)
        except ValueError:
            raise DataValidationError(
                f"--report-from: {report_from!r} is not a date (YYYY-MM-DD)"
            ) from None
    return split_periods(frame, cut)


def _scored_requests(ctx: typer.Context, scores: Path | None) -> pd.DataFrame:
    """Past requests with their scores: from `--scores`, or from the registered models.

    The command line's root puts a history scorer in the context (the registered champion
    models replaying the months they were not trained on); without one, `--scores` is needed.
    """
    from policy.scored import read_scored, validate_scored
    from refund_risk.errors import NotFoundError

    if scores is not None:
        return read_scored(scores)
    root = ctx.find_root().obj or {}
    scorer = root.get("history_scorer") if isinstance(root, dict) else None
    if scorer is None:
        raise NotFoundError(
            "no scored requests: pass --scores FILE.parquet (a table of scored past requests; "
            "its layout is described in policy/scored.py)"
        )
    return validate_scored(scorer())


@app.command()
@reports_errors
def validate(
    file: Annotated[Path, typer.Argument(help="Policy YAML file to check.")],
    tiers: TiersOption = None,
) -> None:
    """Check a policy file completely; print what is wrong, naming the rule and field.

    Also warns (without refusing the file) where the rules send a riskier abuse band to a more
    lenient action than a safer band gets for the same request.
    """
    from policy.lenience import lenience_inversions
    from policy.model import load_policy

    loaded_tiers = _tiers(tiers)
    policy = load_policy(file, tiers=loaded_tiers)
    typer.echo(
        f"ok: {policy.label}, {len(policy.rules)} rules and a default, "
        f"{len(policy.bands)} bands, {len(policy.thresholds)} thresholds"
    )
    for warning in lenience_inversions(policy, loaded_tiers):
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


@app.command()
@reports_errors
def show(
    file: Annotated[
        Path | None, typer.Argument(help="Policy YAML file (default: the shipped one).")
    ] = None,
    tiers: TiersOption = None,
) -> None:
    """Print a policy as a reader sees it: bands, thresholds, rules in order, and the tiers."""
    from rich.table import Table

    from policy.model import DEFAULT_POLICY_PATH, load_policy

    loaded_tiers = _tiers(tiers)
    policy = load_policy(file or DEFAULT_POLICY_PATH, tiers=loaded_tiers)
    out.print(f"[bold]{policy.label}[/]  {policy.description}")
    bands = ", ".join(f"{b.name} [{b.lower:g}, {b.upper:g})" for b in policy.bands)
    out.print(f"bands: {bands}")
    out.print("thresholds: " + ", ".join(f"{k} = {v:g}" for k, v in policy.thresholds.items()))
    table = Table("#", "rule", "when (all of)", "action")
    for k, rule in enumerate(policy.all_rules, start=1):
        when = "\n".join(c.describe() for c in rule.conditions) or "(anything left)"
        table.add_row(str(k), rule.id, when, rule.action.value)
    print_result(table)
    tier_table = Table(
        "tier",
        "share of customers",
        "loss prob. up to (no fitted cut-offs)",
        "refund before return",
        "auto-approve up to",
        "max unreturned",
        title=f"credit tiers v{loaded_tiers.version}",
    )
    for t in loaded_tiers.tiers:
        name = f"{t.name} (new customers)" if t is loaded_tiers.default else t.name
        tier_table.add_row(
            name,
            "-" if t.share is None else f"{t.share:.0%}",
            f"{t.max_loss_probability:g}",
            "yes" if t.refund_before_return_allowed else "no",
            f"{t.auto_approve_limit:,.2f}",
            f"{t.max_outstanding_unreturned:,.2f}",
        )
    print_result(tier_table)


@app.command()
@reports_errors
def simulate(
    ctx: typer.Context,
    policy: PolicyFile,
    compare: Annotated[
        list[Path] | None,
        typer.Option("--compare", help="Another policy to show side by side; repeatable."),
    ] = None,
    scores: ScoresOption = None,
    tiers: TiersOption = None,
    costs: CostsOption = None,
    label: LabelOption = "auto",
    report_from: ReportFromOption = None,
    plot: Annotated[Path | None, typer.Option(help="Where to save the PNG chart.")] = None,
) -> None:
    """Replay past requests through one or more policies and print their figures side by side,
    for an earlier and a later period (the later one is where a tuned policy is judged)."""
    from policy.model import load_policy
    from policy.simulate import format_comparison, load_cost_model, plot_comparison
    from policy.simulate import simulate as run
    from refund_risk.settings import load_settings

    loaded_tiers = _tiers(tiers)
    policies = [load_policy(p, tiers=loaded_tiers) for p in [policy, *(compare or [])]]
    cost_model = load_cost_model(costs)
    frame = _scored_requests(ctx, scores)
    periods = _periods(frame, report_from)
    typer.echo(f"earlier period (a tuned policy is fit here): {periods.describe()}")
    earlier = [run(periods.fit, p, loaded_tiers, cost_model, label=label) for p in policies]
    typer.echo(format_comparison(earlier))
    typer.echo("\nlater period (out of sample for a policy tuned on the earlier one)")
    results = [run(periods.report, p, loaded_tiers, cost_model, label=label) for p in policies]
    typer.echo(format_comparison(results))
    target = plot or load_settings().reports_dir / "policy_simulation.png"
    plot_comparison(results, target)
    typer.echo(f"\nchart saved to {target}")


@app.command()
@reports_errors
def tune(
    ctx: typer.Context,
    policy: PolicyFile,
    scores: ScoresOption = None,
    tiers: TiersOption = None,
    costs: CostsOption = None,
    label: LabelOption = "auto",
    report_from: ReportFromOption = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Where to write the tuned policy (default: reports folder)."),
    ] = None,
    min_automation: Annotated[
        float, typer.Option(help="Minimum share decided without a person.")
    ] = 0.85,
    max_unchecked_abuse: Annotated[
        float, typer.Option(help="Maximum share of abusive money paid without a check.")
    ] = 0.2,
    capacity: Annotated[
        float | None, typer.Option(help="Reviews per day (default: the cost model's).")
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="Policy to report beside (default: the hand-written rules)."),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Where to save the PNG chart.")] = None,
) -> None:
    """Search the policy's thresholds for the lowest cost within the constraints on an earlier
    period; report it on a later one, out of sample; write it."""
    from policy.model import HANDWRITTEN_POLICY_PATH, load_policy
    from policy.simulate import format_comparison, load_cost_model, plot_comparison
    from policy.simulate import simulate as run
    from policy.tune import TuneConstraints, write_policy
    from policy.tune import tune as search
    from refund_risk.settings import load_settings

    loaded_tiers = _tiers(tiers)
    start = load_policy(policy, tiers=loaded_tiers)
    reference = load_policy(baseline or HANDWRITTEN_POLICY_PATH, tiers=loaded_tiers)
    cost_model = load_cost_model(costs)
    constraints = TuneConstraints(
        min_automated_share=min_automation,
        max_reviews_per_day=capacity,
        max_unchecked_abuse_share=max_unchecked_abuse,
    )
    frame = _scored_requests(ctx, scores)
    periods = _periods(frame, report_from)
    with progress_bar("tuning policy") as progress:
        result = search(
            periods.fit,
            start,
            loaded_tiers,
            cost_model,
            constraints,
            label=label,
            progress=progress,
        )
    fitted = [
        result.start,
        result.tuned,
        run(periods.fit, reference, loaded_tiers, cost_model, label=label),
    ]
    results = [
        run(periods.report, p, loaded_tiers, cost_model, label=label)
        for p in (start, result.policy, reference)
    ]
    later = results[1]
    settings = load_settings()
    target = output or settings.reports_dir / f"{start.name}.v{result.policy.version}.yaml"
    header = (
        f"Tuned from {start.label}: {periods.describe()}.\n"
        f"Later period: total cost {results[0].total_cost:,.0f} -> {later.total_cost:,.0f}; "
        f"decided without a person {later.automated_share:.1%}; "
        f"abusive money paid without a check {later.unchecked_abuse_share:.1%}; "
        f"honest customers kept waiting {later.friction_share:.1%}."
    )
    write_policy(result.policy, target, header=header)
    typer.echo(f"earlier period, where the thresholds were fit: {periods.describe()}")
    typer.echo(format_comparison(fitted))
    typer.echo("\nlater period, out of sample: the figures to judge the tuned policy by")
    typer.echo(format_comparison(results))
    typer.echo("")
    for name, (before, after) in result.changes.items():
        typer.echo(f"{name}: {before:g} -> {after:g}")
    if not result.changes:
        typer.echo("no threshold changed: the starting policy was already the best found")
    if not result.feasible:
        console.print(
            "[bold yellow]warning:[/] no setting found keeps every constraint; the tuned policy "
            "is the closest found"
        )
    chart = plot or settings.reports_dir / "policy_tuning.png"
    plot_comparison(results, chart)
    typer.echo(f"tuned policy {result.policy.label} written to {target}")
    typer.echo(f"chart saved to {chart}")
