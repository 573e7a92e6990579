"""The `refund-risk` command line; its subcommands follow the project's folders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from data.cli import app as data_app
from features.cli import app as features_app
from policy.cli import app as policy_app
from serving.cli import events_app, keys_app, serve
from training.cli import models_app, train_app

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    name="refund-risk",
    help="Refund risk service: generate or import data, build features, train, decide, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _history_scorer() -> pd.DataFrame:
    """Past requests scored by the registered champion models (for policy simulate and tune)."""
    from refund_risk.settings import load_settings
    from training.scorer import score_history

    return score_history(load_settings())


@app.callback()
def main(ctx: typer.Context) -> None:
    """Refund risk service: generate or import data, build features, train, decide, serve."""
    ctx.obj = {"history_scorer": _history_scorer}


app.add_typer(data_app, name="data")
app.add_typer(policy_app, name="policy")
app.add_typer(features_app, name="features")
app.add_typer(train_app, name="train")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(events_app, name="events")
app.command("serve")(serve)


if __name__ == "__main__":  # pragma: no cover
    app()
