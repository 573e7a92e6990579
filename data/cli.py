"""`refund-risk data ...`: generate a synthetic world, import a shop's files, report, benchmark."""

from __future__ import annotations

import resource
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer

from refund_risk.console import console, progress_bar, reports_errors
from refund_risk.settings import load_settings

app = typer.Typer(help="The raw world: generate, import, inspect.", no_args_is_help=True)


def _day(text: str) -> date:
    """`today` (UTC) or a YYYY-MM-DD date."""
    if text == "today":
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date: {text!r}", param_hint="--end-by") from None


@app.command()
@reports_errors
def generate(
    customers: Annotated[int, typer.Option(help="Number of customer accounts.")] = 20_000,
    months: Annotated[int, typer.Option(help="Length of the simulated period.")] = 12,
    start: Annotated[str, typer.Option(help="First day of the period (YYYY-MM-DD).")] = (
        "2025-01-01"
    ),
    seed: Annotated[int | None, typer.Option(help="Random seed (default: settings).")] = None,
    end_by: Annotated[
        str | None,
        typer.Option(
            help="Move the simulated world by whole weeks so that it ends on or just before "
            "this day (YYYY-MM-DD, or `today`, UTC): every figure stays the same, only the "
            "dates move."
        ),
    ] = None,
    products: Annotated[
        bool,
        typer.Option(
            help="Give orders products (--no-products: none, as a shop that sends no product "
            "ids; every other column is the same)."
        ),
    ] = True,
) -> None:
    """Simulate a shop's customers, orders, refunds and late labels; write them as Parquet."""
    from data.generator import generate_world, moved_to_end_by
    from data.world_io import save_world

    settings = load_settings()
    seed = settings.seed if seed is None else seed
    began = time.perf_counter()
    with progress_bar("generating world") as progress:
        world = generate_world(
            customers,
            seed=seed,
            months=months,
            start=start,
            progress=progress,
            products=products,
        )
        if end_by is not None:
            world = moved_to_end_by(world, _day(end_by))
        progress("writing Parquet", 0.9)
        save_world(world, settings.raw_dir, settings.oracle_dir)
    elapsed = time.perf_counter() - began
    for name, frame in world.tables.items():
        typer.echo(f"{name:<16} {len(frame):>12,} rows")
    typer.echo(
        f"wrote {world.row_count:,} rows to {settings.raw_dir} in {elapsed:.1f} s "
        f"({world.row_count / elapsed:,.0f} rows/s); oracle in {settings.oracle_dir}"
    )


@app.command("import")
@reports_errors
def import_(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Folder with customers, orders, refund_requests, outcomes "
            "and identity_links as .csv or .parquet.",
            exists=True,
            file_okay=False,
        ),
    ],
    mapping: Annotated[
        Path | None,
        typer.Option(
            help="YAML file mapping the shop's own category, reason, refund-type (or other "
            "enum) values onto the service's; see the README.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    delimiter: Annotated[
        str, typer.Option(help="Field separator of the CSV files, e.g. ';' or '\\t'.")
    ] = ",",
    encoding: Annotated[
        str, typer.Option(help="Text encoding of the CSV files, e.g. cp1252 or latin-1.")
    ] = "utf-8",
) -> None:
    """Validate a shop's own files and store the accepted rows; rejected rows go to a file.

    The summary goes to stdout; the tables are replaced all together, and only if every
    required table kept at least one row (exit code 2 otherwise, with nothing changed).
    """
    import shutil
    import sys
    from contextlib import nullcontext

    from data.importer import import_directory
    from data.mapping import load_mapping
    from refund_risk.errors import ImportRejectedError

    settings = load_settings()
    values = load_mapping(mapping) if mapping is not None else None
    sep = "\t" if delimiter in ("\\t", "tab") else delimiter
    # A bar only on a terminal: in a log or a file it would be noise between the figures.
    bar = (
        progress_bar("importing")
        if console.is_terminal and sys.stdout.isatty()
        else nullcontext(None)
    )
    try:
        with bar as progress:
            report = import_directory(
                directory,
                settings.raw_dir,
                settings.data_dir / "rejects",
                mapping=values,
                delimiter=sep,
                encoding=encoding,
                progress=progress or _silent,
            )
    except ImportRejectedError as exc:
        typer.echo(exc.summary)
        raise
    typer.echo(report.summary())
    if settings.oracle_dir.exists():
        # The oracle describes the generated world the import just replaced.
        shutil.rmtree(settings.oracle_dir)
        typer.echo(f"removed the generated world's oracle from {settings.oracle_dir}")


def _silent(stage: str, fraction: float) -> None:
    """Progress that shows nothing (output is not a terminal)."""


@app.command()
@reports_errors
def report(
    plot: Annotated[Path | None, typer.Option(help="Where to save the PNG chart.")] = None,
) -> None:
    """Print the world's vital signs against the field figures, and save them as a PNG."""
    from data.report import format_report, plot_report, vital_signs
    from data.storage import read_world
    from data.world_io import load_oracle

    settings = load_settings()
    tables = read_world(settings.raw_dir)
    oracle = load_oracle(settings.oracle_dir)
    signs = vital_signs(tables, oracle[0] if oracle else None)
    typer.echo(format_report(signs))
    target = plot or settings.reports_dir / "world.png"
    plot_report(signs, target)
    typer.echo(f"chart saved to {target}")


@app.command()
@reports_errors
def check() -> None:
    """Say what the stored data can support: its span and size, fingerprint coverage, and
    which models can be trained now (and for each that cannot, exactly what is missing)."""
    from data.check import check_data
    from data.storage import read_world

    settings = load_settings()
    typer.echo(f"data in {settings.raw_dir}")
    typer.echo(check_data(read_world(settings.raw_dir)).format())


@app.command()
def schema() -> None:
    """Print the raw tables' schema as Markdown (the README's schema section)."""
    from data.schema_docs import schema_markdown

    typer.echo(schema_markdown(), nl=False)


@app.command()
@reports_errors
def benchmark(
    customers: Annotated[
        list[int] | None, typer.Option(help="World sizes to time; repeat the option.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Time the generator: rows generated per second and peak memory, per world size."""
    from data.generator import generate_world

    sizes = customers or [20_000]
    typer.echo(f"{'customers':>10} {'rows':>12} {'seconds':>8} {'rows/s':>12} {'peak RSS':>10}")
    for size in sizes:
        began = time.perf_counter()
        world = generate_world(size, seed=seed)
        elapsed = time.perf_counter() - began
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        typer.echo(
            f"{size:>10,} {world.row_count:>12,} {elapsed:>8.1f} "
            f"{world.row_count / elapsed:>12,.0f} {peak_gb:>8.2f} GB"
        )
        del world
