"""Scored past requests: the table the simulator and the tuner replay, and the scorer that makes it.

A `Scorer` turns a table of past refund requests (with their context) into the same table with
the models' outputs added. The service's scorer is built from the registered models; a table it
made, or any other tool made, can also be saved as Parquet and passed to the command line with
`--scores FILE.parquet`. Either way the table has this layout, one row per past request:

Required columns

    refund_id          string     the request's id
    requested_at       timestamp  when it was made (the simulator counts reviews per day)
    order_stage        string     not_shipped, in_transit, delivered
    order_amount       float      the order's value (> 0)
    amount_requested   float      money asked back (> 0)
    category           string     goods category (data.schema.CATEGORIES)
    reason             string     data.schema.REASONS
    reason_detail      string     data.schema.REASON_DETAILS
    refund_type        string     refund_only, return_and_refund
    abuse_score        float      the abuse model's calibrated probability, in [0, 1]
    is_abusive         bool       the label known at the end of the period; empty = not known
                                  to be abusive

Optional columns (the value used when a column is absent or a cell empty)

    photo_count                   int     photos attached (0)
    days_since_delivery           float   days from delivery to request (empty: not delivered)
    outstanding_unreturned_value  float   value refunded whose goods are not back yet (0)
    watchlisted                   bool    on the analysts' watch list (false)
    linked_abusive_accounts       int     linked accounts with confirmed abuse (0)
    customer_confirmed_abusive_refunds
                                  int     the customer's own earlier refunds confirmed
                                          abusive, as known at the request (0)
    tier                          string  credit tier name (else from tier_loss_probability)
    tier_loss_probability         float   tier model's 90-day loss probability (else the
                                          tiers file's default tier)
    is_abusive_true               bool    synthetic worlds' ground truth; evaluation only
    contributions                 list of struct<feature: string, value: double,
                                  contribution: double>: the abuse score's top contributions
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from data.schema import CATEGORIES, ORDER_STAGES, REASON_DETAILS, REASONS, REFUND_TYPES
from refund_risk.errors import DataValidationError, NotFoundError

REQUIRED_COLUMNS: tuple[str, ...] = (
    "refund_id",
    "requested_at",
    "order_stage",
    "order_amount",
    "amount_requested",
    "category",
    "reason",
    "reason_detail",
    "refund_type",
    "abuse_score",
    "is_abusive",
)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "photo_count",
    "days_since_delivery",
    "outstanding_unreturned_value",
    "watchlisted",
    "linked_abusive_accounts",
    "customer_confirmed_abusive_refunds",
    "tier",
    "tier_loss_probability",
    "is_abusive_true",
    "contributions",
)
_ENUMS: dict[str, tuple[str, ...]] = {
    "order_stage": ORDER_STAGES,
    "category": CATEGORIES,
    "reason": REASONS,
    "reason_detail": tuple(REASON_DETAILS),
    "refund_type": REFUND_TYPES,
}


class Scorer(Protocol):
    """Adds the models' outputs to past requests.

    Takes one row per request with the context columns above (and `refund_id`,
    `requested_at`, `customer_id`), returns the same rows with at least `abuse_score` and
    `tier` or `tier_loss_probability`, and optionally `contributions`.
    """

    def __call__(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Score the requests."""
        ...


def validate_scored(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a scored-requests table against the layout above; return it with labels as bool."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame]
    if missing:
        raise DataValidationError(f"scored requests lack required column(s): {', '.join(missing)}")
    problems = []
    for name, allowed in _ENUMS.items():
        bad = set(frame[name].dropna().astype(str)) - set(allowed)
        if bad or frame[name].isna().any():
            shown = sorted(bad)[:5] if bad else ["<empty>"]
            problems.append(f"{name} has unknown values {shown}")
    score = pd.to_numeric(frame["abuse_score"], errors="coerce").to_numpy(dtype=float)
    if np.isnan(score).any() or (score < 0).any() or (score > 1).any():
        problems.append("abuse_score must be a probability in [0, 1] on every row")
    for name in ("order_amount", "amount_requested"):
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        if np.isnan(values).any() or (values <= 0).any():
            problems.append(f"{name} must be positive on every row")
    if problems:
        raise DataValidationError("scored requests: " + "; ".join(problems))
    out = frame.copy()
    out["requested_at"] = pd.to_datetime(out["requested_at"])
    out["is_abusive"] = out["is_abusive"].astype("boolean").fillna(False).astype(bool)
    if "is_abusive_true" in out:
        out["is_abusive_true"] = out["is_abusive_true"].astype("boolean").fillna(False)
        out["is_abusive_true"] = out["is_abusive_true"].astype(bool)
    return out.reset_index(drop=True)


def read_scored(path: Path | str) -> pd.DataFrame:
    """Read and check a scored-requests Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file (a Parquet table of scored requests)")
    return validate_scored(pd.read_parquet(path))
