"""The words a policy is written in: the actions it may take, the request fields its rules may
test (with their kinds and units), the tests a rule may apply, and how a value is written for
people. Everything else in the package reads these; this module reads nothing of the package.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

from data.schema import (
    CATEGORIES,
    ORDER_STAGES,
    REASON_DETAILS,
    REASONS,
    REFUND_TYPES,
)


class Action(StrEnum):
    """What the service does with a refund request."""

    AUTO_APPROVE = "auto_approve"
    REFUND_BEFORE_RETURN = "refund_before_return"
    PARTIAL_REFUND_OFFER = "partial_refund_offer"
    STANDARD_RETURN = "standard_return"
    MANUAL_REVIEW = "manual_review"


ACTIONS: tuple[Action, ...] = tuple(Action)

PAID_WITHOUT_CHECK: frozenset[Action] = frozenset(
    {Action.AUTO_APPROVE, Action.REFUND_BEFORE_RETURN, Action.PARTIAL_REFUND_OFFER}
)
"""Actions that pay money before anyone or anything has checked the claim."""

# --- the request context a rule may refer to -----------------------------------------------------


class FieldKind(StrEnum):
    """The type of a context field, which decides the tests a rule may apply to it."""

    NUMBER = "number"
    ENUM = "enum"
    BOOL = "bool"


class Unit(StrEnum):
    """How a numeric value is written for people."""

    MONEY = "money"
    SCORE = "score"
    COUNT = "count"
    DAYS = "days"
    TEXT = "text"


@dataclass(frozen=True)
class ContextField:
    """One field of a request's context that rules may test."""

    name: str
    kind: FieldKind
    description: str
    unit: Unit = Unit.TEXT
    values: tuple[str, ...] = ()
    nullable: bool = False


def _fields(*fields: ContextField) -> dict[str, ContextField]:
    return {f.name: f for f in fields}


CONTEXT_FIELDS: dict[str, ContextField] = _fields(
    ContextField("order_stage", FieldKind.ENUM, "Where the order was.", values=ORDER_STAGES),
    ContextField("order_amount", FieldKind.NUMBER, "Value of the order.", Unit.MONEY),
    ContextField("amount_requested", FieldKind.NUMBER, "Money asked back.", Unit.MONEY),
    ContextField("category", FieldKind.ENUM, "Goods category.", values=CATEGORIES),
    ContextField(
        "non_returnable",
        FieldKind.BOOL,
        "True if the goods cannot come back (perishable, digital, made to order).",
    ),
    ContextField("reason", FieldKind.ENUM, "Reason the customer chose.", values=REASONS),
    ContextField("reason_detail", FieldKind.ENUM, "Detailed reason.", values=tuple(REASON_DETAILS)),
    ContextField("refund_type", FieldKind.ENUM, "Refund only or return.", values=REFUND_TYPES),
    ContextField("photo_count", FieldKind.NUMBER, "Photos attached as evidence.", Unit.COUNT),
    ContextField(
        "days_since_delivery",
        FieldKind.NUMBER,
        "Days from delivery to the request; empty if the order was not delivered.",
        Unit.DAYS,
        nullable=True,
    ),
    ContextField("abuse_score", FieldKind.NUMBER, "Calibrated abuse probability.", Unit.SCORE),
    ContextField("abuse_band", FieldKind.ENUM, "The named band the abuse score falls in."),
    ContextField("tier", FieldKind.ENUM, "The customer's credit tier."),
    ContextField(
        "tier.refund_before_return_allowed",
        FieldKind.BOOL,
        "Whether the customer's tier may be refunded before the item is back.",
    ),
    ContextField(
        "tier.auto_approve_limit",
        FieldKind.NUMBER,
        "Amount up to which the tier's refunds may be approved at once.",
        Unit.MONEY,
    ),
    ContextField(
        "tier.max_outstanding_unreturned",
        FieldKind.NUMBER,
        "Refunded value the tier may have outstanding before the goods are back.",
        Unit.MONEY,
    ),
    ContextField(
        "outstanding_unreturned_value",
        FieldKind.NUMBER,
        "Value already refunded to the customer whose goods are not back yet.",
        Unit.MONEY,
    ),
    ContextField(
        "unreturned_after_request",
        FieldKind.NUMBER,
        "Outstanding unreturned value if this request were refunded before the return.",
        Unit.MONEY,
    ),
    ContextField("watchlisted", FieldKind.BOOL, "The customer is on the analysts' watch list."),
    ContextField(
        "customer_confirmed_abusive_refunds",
        FieldKind.NUMBER,
        "The customer's own earlier refunds confirmed abusive, by what was known at the request.",
        Unit.COUNT,
    ),
    ContextField(
        "linked_abusive_accounts",
        FieldKind.NUMBER,
        "Other accounts linked to this customer with refunds confirmed abusive.",
        Unit.COUNT,
    ),
)
"""Every field a rule may test; a rule naming any other field is refused."""

OPERATORS: tuple[str, ...] = ("==", "!=", "in", "not_in", "<", "<=", ">", ">=")
ORDERING_OPERATORS = frozenset({"<", "<=", ">", ">="})
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
"""What names of rules, bands, thresholds and tiers look like: snake_case."""


def format_value(unit: Unit, value: object) -> str:
    """Write a context or threshold value the way a reviewer or customer reads it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        number = float(value)
        if unit == Unit.MONEY:
            return f"{number:,.2f}"
        if unit == Unit.SCORE:
            return f"{number:.0%}"
        if unit in (Unit.COUNT, Unit.DAYS):
            return f"{number:,.0f}" if number == round(number) else f"{number:,.1f}"
        return f"{number:g}"
    return str(value).replace("_", " ")
