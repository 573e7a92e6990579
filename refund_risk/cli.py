"""The `refund-risk` command line; its subcommands follow the project's folders."""

from __future__ import annotations

import typer

from data.cli import app as data_app

app = typer.Typer(
    name="refund-risk",
    help="Refund risk service: generate or import data, build features, train, decide, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data")


if __name__ == "__main__":  # pragma: no cover
    app()
