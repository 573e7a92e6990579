"""Rules that tie a refund request to its order's own facts, for the API and the importer alike.

Pure: no clock (the caller passes `now`), no database, no HTTP. The importer applies them to a
shop's files row by row, the service to each decision request and event, so online and offline
data obey one rule:

- the order's stage at the request comes from the order's own times: delivered if it was
  delivered by then, in transit if it had shipped, else not shipped; a stated stage that
  contradicts them is refused;
- a request may not come from the future, beyond a small allowance for clocks that disagree;
- an order's facts are fixed when it is placed (who ordered, when, what, for how much, with
  which device, address and payment, and which product once one is recorded); only its
  shipping and delivery may progress: filled in once, or moved later, never taken back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from refund_risk.settings import DEFAULT_MAX_CLOCK_SKEW_SECONDS

FIXED_ORDER_FACTS: tuple[str, ...] = (
    "customer_id",
    "ordered_at",
    "category",
    "amount",
    "item_count",
    "payment_method",
    "device_id",
    "address_id",
    "payment_fingerprint",
)
"""An order's columns that are settled when it is placed and never change afterwards."""

RECORDED_ONCE_ORDER_FACTS: tuple[str, ...] = ("product_id",)
"""An order's columns that may be missing at first (a shop that sends products only at
checkout) but, once recorded, never change: sent again empty, the recorded value stays."""

PROGRESSING_ORDER_TIMES: tuple[str, ...] = ("shipped_at", "delivered_at")
"""An order's times that may be filled in later, or move later; never emptied or moved back."""


@dataclass(frozen=True)
class Problem:
    """One rule a row breaks: the column to change, why, and a machine-readable kind."""

    column: str
    message: str
    type: str


def _known(value: Any) -> bool:
    """True for a time that is set (None and pandas' NaT are not; NaT != NaT)."""
    return value is not None and value == value


def _shown(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if _known(value) else "empty"


def order_stage_at(requested_at: Any, shipped_at: Any, delivered_at: Any) -> str:
    """Where the order was at `requested_at`: `delivered`, `in_transit` or `not_shipped`.

    A time equal to the request counts as before it (delivered at the moment of asking is
    delivered). Times are naive UTC datetimes or pandas timestamps; missing is None or NaT.
    """
    if _known(delivered_at) and delivered_at <= requested_at:
        return "delivered"
    if _known(shipped_at) and shipped_at <= requested_at:
        return "in_transit"
    return "not_shipped"


def stage_problem(
    order_stage: str, requested_at: Any, shipped_at: Any, delivered_at: Any
) -> Problem | None:
    """The problem with a stated `order_stage` that the order's own times contradict, if any."""
    derived = order_stage_at(requested_at, shipped_at, delivered_at)
    if order_stage == derived:
        return None
    return Problem(
        "order_stage",
        f"order_stage is {order_stage!r} but the order's own times make it {derived!r} at "
        f"requested_at {_shown(requested_at)} (shipped_at {_shown(shipped_at)}, "
        f"delivered_at {_shown(delivered_at)})",
        "stage_mismatch",
    )


def future_problem(
    requested_at: datetime, now: datetime, max_skew_seconds: float = DEFAULT_MAX_CLOCK_SKEW_SECONDS
) -> Problem | None:
    """The problem with a request time further in the future than the clock-skew allowance
    (`now` and `requested_at` both naive UTC), if any."""
    if requested_at <= now + timedelta(seconds=max_skew_seconds):
        return None
    return Problem(
        "requested_at",
        f"requested_at {_shown(requested_at)} is in the future (now {_shown(now)} UTC; "
        f"clocks may differ by {max_skew_seconds:g} s at most)",
        "in_the_future",
    )


def refund_problems(
    refund: Mapping[str, Any],
    order: Mapping[str, Any],
    now: datetime,
    max_skew_seconds: float = DEFAULT_MAX_CLOCK_SKEW_SECONDS,
) -> list[Problem]:
    """Every rule a refund request row breaks against its order row (raw columns of
    `refund_requests` and `orders`); an order column's problem is named `order.<column>`."""
    problems: list[Problem] = []
    requested = refund["requested_at"]
    if order["ordered_at"] > requested:
        problems.append(
            Problem(
                "order.ordered_at",
                f"the order was placed at {_shown(order['ordered_at'])}, after the refund was "
                f"requested at {_shown(requested)}",
                "after_request",
            )
        )
    amount, paid = refund["amount_requested"], order["amount"]
    if amount > paid + 1e-9:
        problems.append(
            Problem(
                "amount_requested",
                f"amount_requested {amount:.2f} is more than the order's amount {paid:.2f}",
                "above_order_amount",
            )
        )
    stage = stage_problem(
        refund["order_stage"], requested, order["shipped_at"], order["delivered_at"]
    )
    if stage is not None:
        problems.append(stage)
    future = future_problem(requested, now, max_skew_seconds)
    if future is not None:
        problems.append(future)
    return problems


def as_recorded(stored: Mapping[str, Any] | None, sent: Mapping[str, Any]) -> dict[str, Any]:
    """The order row the store holds once `sent` is written over `stored` (if any): a fact
    recorded once (the product) that `sent` leaves empty keeps its recorded value."""
    out = dict(sent)
    if stored is None:
        return out
    for column in RECORDED_ONCE_ORDER_FACTS:
        if out.get(column) is None and stored.get(column) is not None:
            out[column] = stored[column]
            if column == "product_id" and out.get("product_name") is None:
                out["product_name"] = stored.get("product_name")
    return out


def order_changes(stored: Mapping[str, Any], sent: Mapping[str, Any]) -> list[Problem]:
    """How `sent` would rewrite the `stored` row of the same order, where it may not.

    Empty when `sent` only fills in or moves forward the shipping and delivery times (with
    the delivery evidence that comes with a delivery). The customer is named apart, without
    the stored owner: the order belongs to someone else.
    """
    if stored["customer_id"] != sent["customer_id"]:
        return [
            Problem(
                "customer_id",
                f"order {sent['order_id']!r} belongs to another customer",
                "order_of_another_customer",
            )
        ]
    problems = [
        Problem(
            column,
            f"{column} of order {sent['order_id']!r} is fixed when the order is placed and "
            "cannot be changed",
            "fixed_fact",
        )
        for column in FIXED_ORDER_FACTS
        if stored[column] != sent[column]
    ]
    for column in RECORDED_ONCE_ORDER_FACTS:
        before, after = stored.get(column), sent.get(column)
        if before is not None and after is not None and before != after:
            problems.append(
                Problem(
                    column,
                    f"{column} of order {sent['order_id']!r} is recorded as {before!r}; it is "
                    f"fixed once recorded and cannot become {after!r}",
                    "fixed_fact",
                )
            )
    for column in PROGRESSING_ORDER_TIMES:
        before, after = stored[column], sent[column]
        if _known(before) and (not _known(after) or after < before):
            problems.append(
                Problem(
                    column,
                    f"{column} of order {sent['order_id']!r} is already "
                    f"{_shown(before)}; it may move later but not be emptied or moved back "
                    f"(sent: {_shown(after)})",
                    "moved_back",
                )
            )
    evidence_before = stored["delivery_evidence"]
    if (
        evidence_before != sent["delivery_evidence"]
        and evidence_before != "none"
        and stored["delivered_at"] == sent["delivered_at"]
    ):
        problems.append(
            Problem(
                "delivery_evidence",
                f"delivery_evidence of order {sent['order_id']!r} is already "
                f"{evidence_before!r}; it changes only with a new delivered_at",
                "fixed_fact",
            )
        )
    return problems
