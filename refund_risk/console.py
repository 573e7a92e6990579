"""Shared pieces of the command line: error reporting and progress bars."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from refund_risk.errors import RefundRiskError

P = ParamSpec("P")
R = TypeVar("R")

console = Console(stderr=True)
"""Progress and errors go to stderr, so stdout stays clean for figures and data."""


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
    """A rich progress bar driven by a (stage, fraction done) callback."""
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
