"""`refund-risk features ...`: fill the event store, build training tables, describe, benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table as RichTable

from refund_risk.console import (
    console,
    out,
    print_indented,
    print_result,
    progress_bar,
    reports_errors,
)

app = typer.Typer(
    name="features",
    help="Feature definitions, the training tables built from them, and the event store.",
    no_args_is_help=True,
)


def _features_dir(data_dir: Path) -> Path:
    return data_dir / "features"


@app.command()
@reports_errors
def ingest(
    directory: Path = typer.Argument(
        ..., help="Folder of raw tables (Parquet), e.g. data/generated/raw."
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="Event store URL; default: the settings' database_url. The schema is always the "
        "settings' database_schema, as for the service.",
    ),
    replace: bool = typer.Option(False, "--replace", help="Empty the event store first."),
) -> None:
    """Load bulk history into the event store (upserts: running it twice changes nothing)."""
    from data.storage import read_world
    from features.store import EventStore, settings_engine
    from refund_risk.settings import load_settings

    settings = load_settings()
    url = database_url or settings.database_url
    assert url is not None
    tables = read_world(directory)
    store = EventStore.from_engine(settings_engine(settings, url))
    try:
        if replace:
            store.clear()
        with progress_bar("ingest") as update:
            store.write_frames(tables, progress=update)
        counts = store.counts()
    finally:
        store.dispose()
    table = RichTable(title=f"event store at {_redacted(url)}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in counts.items():
        table.add_row(name, f"{count:,}")
    print_result(table)


def _redacted(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


@app.command()
@reports_errors
def build(
    raw_dir: Path | None = typer.Option(None, "--raw-dir", help="Raw tables; default: settings."),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Where to write; default: <data_dir>/features."
    ),
) -> None:
    """Write the training tables (Parquet) and their manifest."""
    from data.storage import read_world
    from features.manifest import build_training_tables
    from refund_risk.settings import load_settings

    settings = load_settings()
    source = raw_dir or settings.raw_dir
    target = out_dir or _features_dir(settings.data_dir)
    tables = read_world(source)
    with progress_bar("features") as update:
        manifest = build_training_tables(tables, target, source=str(source), progress=update)
    refunds = manifest["tables"]["refund_features"]
    credit = manifest["tables"]["credit_snapshots"]
    out.print(
        f"feature version {manifest['feature_version']}: {len(manifest['features'])} features"
    )
    out.print(
        f"{refunds['rows']:,} refund rows, {refunds['time_range'][0]} to "
        f"{refunds['time_range'][1]} -> {target / refunds['file']}"
    )
    out.print(
        f"{credit['rows']:,} credit snapshot rows over {len(credit['snapshot_dates'])} "
        f"months -> {target / credit['file']}"
    )


@app.command()
@reports_errors
def describe(
    as_json: bool = typer.Option(False, "--json", help="Print the definitions as JSON."),
) -> None:
    """Print every feature with its description."""
    from features.definitions import FEATURE_VERSION
    from features.manifest import feature_list

    features = feature_list()
    if as_json:
        typer.echo(json.dumps({"feature_version": FEATURE_VERSION, "features": features}, indent=2))
        return
    # Name on its own line, description indented under it: readable at any terminal width.
    out.print(f"[bold]{len(features)} features[/], definitions version {FEATURE_VERSION}\n")
    for f in features:
        window = "" if f["window_days"] is None else f", {f['window_days']}-day window"
        kind = f["aggregation"] + (", categorical" if f["categorical"] else "") + window
        out.print(f"[bold]{f['name']}[/] [dim]({f['entity']}; {kind})[/]")
        print_indented(f["description"])


@app.command()
@reports_errors
def benchmark(
    customers: list[int] = typer.Option(
        [20_000], "--customers", help="World sizes for the batch build (repeat the option)."
    ),
    seed: int = typer.Option(7, "--seed"),
    online_customers: int = typer.Option(
        20_000, "--online-customers", help="World size for the online timing; 0 to skip."
    ),
    requests: int = typer.Option(2000, "--requests", help="Online requests to time."),
    snapshots: bool = typer.Option(
        True, "--snapshots/--no-snapshots", help="Also build the credit snapshots."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Print batch throughput, peak memory, and the online row's cost in LightGBM predicts."""
    from features.benchmark import as_dict, measure_batch_isolated, measure_online

    results: dict[str, list[dict[str, object]]] = {"batch": [], "online": []}
    for n in customers:
        console.print(f"batch build, {n:,} customers ...")
        figures = measure_batch_isolated(n, seed, snapshots)
        results["batch"].append(as_dict(figures))
        if not as_json:
            out.print(
                f"batch {n:>9,} customers: {figures.refund_requests:,} refund rows in "
                f"{figures.refund_build_seconds:.2f} s = {figures.requests_per_second:,.0f} "
                f"requests/s; {figures.snapshot_rows:,} snapshot rows in "
                f"{figures.snapshot_build_seconds:.2f} s; world generated in "
                f"{figures.generate_seconds:.2f} s; peak RSS {figures.peak_rss_mb:,.0f} MB"
            )
    if online_customers > 0:
        console.print(f"online rows, {online_customers:,} customers ...")
        online = measure_online(online_customers, seed, requests)
        results["online"].append(as_dict(online))
        if not as_json:
            out.print(
                f"online {online.requests_timed:,} requests: row median "
                f"{online.row_median_us:.0f} us (p99 {online.row_p99_us:.0f} us); "
                f"LightGBM 300-tree single-row predict {online.predict_median_us:.0f} us; "
                f"row = {online.row_in_predicts:.2f} predicts (target < 10); "
                f"score and record in the store {online.score_and_record_median_us:.0f} us"
            )
    if as_json:
        typer.echo(json.dumps(results, indent=2))
