"""Shared pieces of the command line: where output goes, error reporting and progress bars.

Every command writes its results (figures, tables, data) to stdout, through `out` and
`print_result`, and its diagnostics (progress, warnings, errors) to stderr, through `console`;
neither wraps or cuts a line at the terminal's width, so a log of either reads whole.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.padding import Padding
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from refund_risk.errors import RefundRiskError

P = ParamSpec("P")
R = TypeVar("R")

console = Console(stderr=True, soft_wrap=True)
"""Progress, warnings and errors go to stderr, so stdout stays clean for figures and data."""

out = Console(soft_wrap=True)
"""Results go to stdout; a line is never wrapped or cut at the terminal's width."""

_WIDEST = 10_000
"""Widest a table may be drawn where stdout is not a terminal."""


def print_result(renderable: RenderableType) -> None:
    """Print a result (a rich table, usually) to stdout whole.

    Where stdout is not a terminal (a log, a pipe, a file), it is drawn at the width it needs,
    not at 80 columns or $COLUMNS, so a log never holds a table cut to "…" or wrapped into
    unreadable rows. On a terminal it fits the terminal, and a cell too long for its column
    is folded onto the next line rather than cut.
    """
    if isinstance(renderable, Table):
        for column in renderable.columns:
            column.overflow = "fold"
    if out.is_terminal:
        out.print(renderable)
        return
    needed = Measurement.get(out, out.options.update_width(_WIDEST), renderable).maximum
    Console(file=out.file, width=max(needed, 1), soft_wrap=True, no_color=out.no_color).print(
        renderable
    )


def print_indented(text: str, indent: int = 4) -> None:
    """Print prose to stdout indented under a heading: wrapped under the indent on a terminal,
    one line where stdout is not a terminal (a log re-wraps it to its own width)."""
    if out.is_terminal:
        out.print(Padding(text, (0, 0, 0, indent)), markup=False, highlight=False)
    else:
        out.print(" " * indent + text, markup=False, highlight=False)


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the project's own errors into one red sentence and exit code 2, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RefundRiskError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None

    return wrapper


ProgressCallback = Callable[[str, float], None]
"""Called with a stage name and the fraction of the whole job done (0 to 1)."""


@contextmanager
def progress_bar(title: str) -> Iterator[ProgressCallback]:
    """A rich progress bar driven by a (stage, fraction done) callback.

    Where stderr is not a terminal (a log), a live bar would be drawn once, at $COLUMNS (80 by
    default), with its figures cut to "…": there each stage is said on a line of its own.
    """
    if not console.is_terminal:
        said: list[str] = []
        started = time.monotonic()

        def say(stage: str, fraction: float) -> None:
            if stage != "done" and (not said or said[-1] != stage):
                said.append(stage)
                console.print(f"{title}: {stage}", markup=False, highlight=False)

        yield say
        console.print(f"{title}: done in {time.monotonic() - started:.1f} s", highlight=False)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(title, total=1.0)

        def update(stage: str, fraction: float) -> None:
            progress.update(
                task, completed=min(max(fraction, 0.0), 1.0), description=f"{title}: {stage}"
            )

        yield update
        progress.update(task, completed=1.0, description=f"{title}: done")
