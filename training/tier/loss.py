"""What counts as a refund loss for the tier model, and choosing one for a run (`auto`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from refund_risk.errors import DataValidationError

TARGET = "target_has_loss_90d"
"""The `kept` loss of a snapshot: confirmed abuse, or goods kept, in the next 90 days."""

REFUND_REQUESTS = "target_refund_requests_90d"
"""Refund requests of any kind in the 90 days after a snapshot (the `refunds` loss)."""

LOSS_DEFINITIONS: dict[str, str] = {
    "kept": "a refund an outcome found abusive (goods never returned or swapped included), or a "
    "refund-only claim on delivered goods (the customer kept goods and money)",
    "refunds": "any refund request, returns and cancellations included (each costs the shop "
    "handling, shipping and the sale)",
}
"""What counts as a refund loss, by name; `auto` picks `kept` when the data has such losses."""

LOSS_CHOICES: tuple[str, ...] = ("auto", *LOSS_DEFINITIONS)


def loss_labels(frame: pd.DataFrame, loss: str) -> np.ndarray:
    """Per snapshot row: whether the customer caused a loss of kind `loss` in the next 90 days."""
    if loss == "kept":
        return frame[TARGET].to_numpy(dtype=bool)
    if loss == "refunds":
        return frame[REFUND_REQUESTS].to_numpy(dtype=np.float64) > 0
    raise DataValidationError(
        f"unknown loss definition {loss!r}; choose one of {', '.join(LOSS_DEFINITIONS)}"
    )


def choose_loss(fit_rows: pd.DataFrame, loss: str, fit_dates: Sequence[pd.Timestamp]) -> str:
    """The loss definition to train on: `loss` itself, or for `auto` the first of `kept`,
    `refunds` that the fit months hold; a DataValidationError saying what is missing if none."""
    if loss != "auto" and loss not in LOSS_DEFINITIONS:
        loss_labels(fit_rows.head(0), loss)  # raises, naming the choices
    candidates = list(LOSS_DEFINITIONS) if loss == "auto" else [loss]
    for name in candidates:
        if len(fit_rows) and loss_labels(fit_rows, name).any():
            return name
    months = f"{fit_dates[0].date()} to {fit_dates[-1].date()}" if fit_dates else "(none)"
    if fit_rows.empty:
        raise DataValidationError(
            f"the fit months' snapshots ({months}) hold no customer who had ordered before "
            "them: the tier model learns from customers with a history; import the orders of "
            "earlier months, or use a longer history"
        )
    counted = " or ".join(LOSS_DEFINITIONS[n] for n in candidates)
    raise DataValidationError(
        f"the fit months ({months}, {len(fit_rows):,} customer-months) hold no customer with a "
        f"refund loss, counted as {counted}. The tier model learns who causes such losses: "
        "import the shop's refund requests (cancellations and returns included, with their "
        "refund_type and order_stage) and outcomes if any"
        + ("; or train with --loss auto or --loss refunds" if loss == "kept" else "")
    )
