"""A refund request's context: what is known when it is made, as the rules see it.

`RequestContext` and `Scores` are one request as a caller gives it; `request_values` writes one
request as the values rules test, by field name, and `context_arrays` a whole frame of past
requests as one array per field. The fields derived from others (whether the goods can come
back, the exposure after the request, the tier's privileges) are worked out by one function for
both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from data.schema import (
    CATEGORIES,
    NON_RETURNABLE_CATEGORIES,
    ORDER_STAGES,
    REASON_DETAILS,
    REASONS,
    REFUND_TYPES,
)
from policy.conditions import member
from policy.model import Policy
from policy.reasons import Contribution
from policy.tiers import Tier, Tiers, assign_tier
from refund_risk.errors import DataValidationError

_KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    "order_stage": ORDER_STAGES,
    "category": CATEGORIES,
    "reason": REASONS,
    "reason_detail": tuple(REASON_DETAILS),
    "refund_type": REFUND_TYPES,
}
"""The values each enum field of a request context may take (built once: every request is
validated against them)."""


class RequestContext(BaseModel):
    """What is known about a refund request when it is made, beyond its scores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_stage: str = Field(description="Where the order was: " + ", ".join(ORDER_STAGES))
    order_amount: float = Field(gt=0, description="Value of the order.")
    amount_requested: float = Field(gt=0, description="Money asked back.")
    category: str = Field(description="Goods category: " + ", ".join(CATEGORIES))
    reason: str = Field(description="Reason chosen: " + ", ".join(REASONS))
    reason_detail: str = Field(description="Detailed reason: " + ", ".join(REASON_DETAILS))
    refund_type: str = Field(description="Refund type: " + ", ".join(REFUND_TYPES))
    photo_count: int = Field(default=0, ge=0)
    days_since_delivery: float | None = Field(
        default=None, ge=0, description="Days from delivery to the request; None if undelivered."
    )
    outstanding_unreturned_value: float = Field(
        default=0.0, ge=0, description="Value refunded to the customer whose goods are not back."
    )
    watchlisted: bool = Field(default=False, description="On the analysts' watch list.")
    linked_abusive_accounts: int = Field(
        default=0, ge=0, description="Linked accounts with refunds confirmed abusive."
    )
    customer_confirmed_abusive_refunds: int = Field(
        default=0, ge=0, description="The customer's own earlier refunds confirmed abusive."
    )

    @field_validator("order_stage", "category", "reason", "reason_detail", "refund_type")
    @classmethod
    def _known_value(cls, value: str, info: Any) -> str:
        allowed = _KNOWN_VALUES[info.field_name]
        if value not in allowed:
            raise ValueError(f"unknown {info.field_name} {value!r}; known: {', '.join(allowed)}")
        return value


class Scores(BaseModel):
    """What the models said about a request: its abuse score, the customer's tier, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    abuse_score: float = Field(ge=0.0, le=1.0, description="Calibrated abuse probability.")
    tier: str | None = Field(default=None, description="Credit tier name, if already assigned.")
    tier_loss_probability: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Tier model's 90-day loss probability."
    )
    contributions: tuple[Contribution, ...] = Field(
        default=(), description="Top (feature, value, contribution) of the abuse score."
    )


def resolve_tier(scores: Scores, tiers: Tiers) -> Tier:
    """The customer's tier: as given, else from the loss probability, else the default."""
    return tier_of(scores.tier, scores.tier_loss_probability, tiers)


def tier_of(name: str | None, loss_probability: float | None, tiers: Tiers) -> Tier:
    """The tier named `name`, else that of the loss probability, else the default."""
    if name is not None:
        return tiers.get(name)
    return assign_tier(loss_probability, tiers)


_NON_RETURNABLE = tuple(sorted(NON_RETURNABLE_CATEGORIES))

TIER_FIELDS: dict[str, str] = {
    "tier.refund_before_return_allowed": "refund_before_return_allowed",
    "tier.auto_approve_limit": "auto_approve_limit",
    "tier.max_outstanding_unreturned": "max_outstanding_unreturned",
}
"""The context fields of the customer's tier, and the privilege of `Tier` each one is."""


def with_derived_fields(values: dict[str, Any], tier: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with the fields rules may test that are worked out from others added: whether
    the goods can come back, the exposure if this request were refunded before the return, and
    the tier's privileges (`tier` by `TIER_FIELDS` name). Plain values or arrays alike."""
    values["non_returnable"] = member(values["category"], _NON_RETURNABLE)
    values["unreturned_after_request"] = (
        values["outstanding_unreturned_value"] + values["amount_requested"]
    )
    for name, privilege in TIER_FIELDS.items():
        values[name] = tier[privilege]
    return values


def request_values(
    fields: Mapping[str, Any], abuse_score: float, abuse_band: str, tier: Tier
) -> dict[str, object]:
    """Every field a rule may test, by name (derived fields included), of a request context
    given as its fields, by `RequestContext`'s names.

    The fields must be valid as `RequestContext` checks them: the scoring service, whose
    requests were checked when they were read, decides this way without building the model.
    An empty number (days since a delivery that has not happened) is NaN, as in a frame.
    """
    days = fields["days_since_delivery"]
    values = {
        "order_stage": fields["order_stage"],
        "order_amount": fields["order_amount"],
        "amount_requested": fields["amount_requested"],
        "category": fields["category"],
        "reason": fields["reason"],
        "reason_detail": fields["reason_detail"],
        "refund_type": fields["refund_type"],
        "photo_count": float(fields["photo_count"]),
        "days_since_delivery": math.nan if days is None else days,
        "abuse_score": abuse_score,
        "abuse_band": abuse_band,
        "tier": tier.name,
        "outstanding_unreturned_value": fields["outstanding_unreturned_value"],
        "watchlisted": fields["watchlisted"],
        "linked_abusive_accounts": float(fields["linked_abusive_accounts"]),
        "customer_confirmed_abusive_refunds": float(
            fields.get("customer_confirmed_abusive_refunds", 0)
        ),
    }
    return with_derived_fields(
        values, {privilege: getattr(tier, privilege) for privilege in TIER_FIELDS.values()}
    )


# --- a whole frame of requests -------------------------------------------------------------------

FRAME_CONTEXT_COLUMNS: tuple[str, ...] = (
    "order_stage",
    "order_amount",
    "amount_requested",
    "category",
    "reason",
    "reason_detail",
    "refund_type",
    "abuse_score",
)
"""Columns `decide_frame` needs; the others of `RequestContext` have defaults when absent."""

FRAME_OPTIONAL_COLUMNS: dict[str, object] = {
    "photo_count": 0,
    "days_since_delivery": float("nan"),
    "outstanding_unreturned_value": 0.0,
    "watchlisted": False,
    "linked_abusive_accounts": 0,
    "customer_confirmed_abusive_refunds": 0,
}
"""Optional context columns and the value a missing column (or empty cell) stands for."""


def frame_tiers(frame: pd.DataFrame, tiers: Tiers) -> np.ndarray:
    """Tier names per row: the `tier` column, else from `tier_loss_probability`, else default."""
    names = np.full(len(frame), tiers.default.name, dtype=object)
    if "tier_loss_probability" in frame:
        prob = frame["tier_loss_probability"].to_numpy(dtype=float, na_value=np.nan)
        bounds = np.array([t.max_loss_probability for t in tiers.tiers])
        idx = np.minimum(np.searchsorted(bounds, prob, side="left"), len(bounds) - 1)
        scored = ~np.isnan(prob)
        names[scored] = np.asarray(tiers.names, dtype=object)[idx[scored]]
    if "tier" in frame:
        given = frame["tier"].astype(object).to_numpy()
        present = pd.notna(given)
        unknown = set(given[present]) - set(tiers.names)
        if unknown:
            raise DataValidationError(
                f"unknown tier name(s) {sorted(map(str, unknown))}; tiers are {list(tiers.names)}"
            )
        names[present] = given[present]
    return names


def context_arrays(frame: pd.DataFrame, policy: Policy, tiers: Tiers) -> dict[str, np.ndarray]:
    """Every context field as one array over the frame's rows (empty numbers are NaN)."""
    missing = [c for c in FRAME_CONTEXT_COLUMNS if c not in frame]
    if missing:
        raise DataValidationError(f"scored requests lack column(s): {', '.join(missing)}")
    n = len(frame)

    def column(name: str) -> pd.Series:
        if name in frame:
            default = FRAME_OPTIONAL_COLUMNS.get(name)
            series = frame[name]
            if default is not None and not (isinstance(default, float) and math.isnan(default)):
                series = series.fillna(default)  # type: ignore[arg-type]
            return series
        return pd.Series([FRAME_OPTIONAL_COLUMNS[name]] * n, index=frame.index)

    def numbers(name: str) -> np.ndarray:
        return column(name).to_numpy(dtype=float, na_value=np.nan)

    def texts(name: str) -> np.ndarray:
        return column(name).astype(object).to_numpy()

    score = numbers("abuse_score")
    tier_names = frame_tiers(frame, tiers)
    by_name = {t.name: t for t in tiers.tiers}
    tier_of = [by_name[str(name)] for name in tier_names]
    category = texts("category")
    outstanding = numbers("outstanding_unreturned_value")
    amount = numbers("amount_requested")
    values: dict[str, Any] = {
        "order_stage": texts("order_stage"),
        "order_amount": numbers("order_amount"),
        "amount_requested": amount,
        "category": category,
        "reason": texts("reason"),
        "reason_detail": texts("reason_detail"),
        "refund_type": texts("refund_type"),
        "photo_count": numbers("photo_count"),
        "days_since_delivery": numbers("days_since_delivery"),
        "abuse_score": score,
        "abuse_band": policy.band_names(score),
        "tier": tier_names,
        "outstanding_unreturned_value": outstanding,
        "watchlisted": column("watchlisted").to_numpy(dtype=bool),
        "linked_abusive_accounts": numbers("linked_abusive_accounts"),
        "customer_confirmed_abusive_refunds": numbers("customer_confirmed_abusive_refunds"),
    }
    privileges: dict[str, np.ndarray] = {
        privilege: np.array([getattr(t, privilege) for t in tier_of], dtype=_DTYPES[privilege])
        for privilege in TIER_FIELDS.values()
    }
    return with_derived_fields(values, privileges)


_DTYPES: dict[str, type] = {
    "refund_before_return_allowed": bool,
    "auto_approve_limit": float,
    "max_outstanding_unreturned": float,
}
