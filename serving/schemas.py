"""What the API takes and gives: request and response models, by direction, with examples.

Requests refuse unknown fields and name every bad field; responses say exactly what a decision
carries. Times are UTC: a time with an offset is converted, one without is taken as UTC, and the
service stores them without an offset, as the raw tables do. The examples are what /docs shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from data.schema import (
    CATEGORIES,
    DELIVERY_EVIDENCE,
    LINK_KINDS,
    ORDER_STAGES,
    OUTCOME_SOURCES,
    PAYMENT_METHODS,
    REASON_DETAILS,
    REASONS,
    REFUND_TYPES,
)
from policy.model import Action

MAX_EVENT_ROWS = 5_000
"""Most rows of one table in one events call; more should be sent in several calls."""


def _utc_naive(value: datetime) -> datetime:
    """Convert to UTC and drop the offset; a time without an offset is UTC already."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _one_of(name: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; known: {', '.join(allowed)}")
        return value

    return check


def _listed(allowed: tuple[str, ...]) -> WithJsonSchema:
    """The JSON schema of a string that must be one of `allowed`."""
    return WithJsonSchema({"type": "string", "enum": list(allowed)})


UtcTime = Annotated[datetime, AfterValidator(_utc_naive)]
Identifier = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]
Money = Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)]
Category = Annotated[str, AfterValidator(_one_of("category", CATEGORIES)), _listed(CATEGORIES)]
PaymentMethod = Annotated[
    str, AfterValidator(_one_of("payment method", PAYMENT_METHODS)), _listed(PAYMENT_METHODS)
]
DeliveryEvidence = Annotated[
    str, AfterValidator(_one_of("delivery evidence", DELIVERY_EVIDENCE)), _listed(DELIVERY_EVIDENCE)
]
RefundType = Annotated[
    str, AfterValidator(_one_of("refund type", REFUND_TYPES)), _listed(REFUND_TYPES)
]
Reason = Annotated[str, AfterValidator(_one_of("reason", REASONS)), _listed(REASONS)]
_REASON_DETAILS = tuple(REASON_DETAILS)
ReasonDetail = Annotated[
    str, AfterValidator(_one_of("reason detail", _REASON_DETAILS)), _listed(_REASON_DETAILS)
]
OrderStage = Annotated[
    str, AfterValidator(_one_of("order stage", ORDER_STAGES)), _listed(ORDER_STAGES)
]
LinkKind = Annotated[str, AfterValidator(_one_of("link kind", LINK_KINDS)), _listed(LINK_KINDS)]
OutcomeSource = Annotated[
    str, AfterValidator(_one_of("outcome source", OUTCOME_SOURCES)), _listed(OUTCOME_SOURCES)
]


class _In(BaseModel):
    """Request bodies: unknown fields are refused, so a typo is an error, not a default."""

    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the raw rows, as the event store keeps them -------------------------------------------------

ORDER_EXAMPLE: dict[str, Any] = {
    "order_id": "o000000017",
    "ordered_at": "2025-02-11T09:30:00Z",
    "category": "apparel",
    "amount": 59.9,
    "item_count": 2,
    "payment_method": "card",
    "device_id": "d0001",
    "address_id": "a0001",
    "payment_fingerprint": "p0001",
    "shipped_at": "2025-02-12T16:00:00Z",
    "delivered_at": "2025-02-14T11:10:00Z",
    "delivery_evidence": "photo",
}


class OrderDetails(_In):
    """An order as the shop knows it now (send it again when it ships or is delivered)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [ORDER_EXAMPLE]})

    order_id: Identifier
    ordered_at: UtcTime
    category: Category
    amount: Money = Field(description="Order value paid.")
    item_count: int = Field(ge=1, le=100_000)
    payment_method: PaymentMethod
    device_id: Identifier = Field(description="Fingerprint of the device used to order.")
    address_id: Identifier = Field(description="Fingerprint of the shipping address.")
    payment_fingerprint: Identifier = Field(description="Fingerprint of the payment instrument.")
    shipped_at: UtcTime | None = Field(default=None, description="Empty if not shipped.")
    delivered_at: UtcTime | None = Field(default=None, description="Empty if not delivered.")
    delivery_evidence: DeliveryEvidence = Field(
        default="none", description="Carrier's proof of delivery."
    )

    @field_validator("shipped_at")
    @classmethod
    def _shipped_after_ordered(cls, value: datetime | None, info: ValidationInfo) -> Any:
        ordered = info.data.get("ordered_at")
        if value is not None and ordered is not None and value < ordered:
            raise ValueError("shipped_at is before ordered_at")
        return value

    @field_validator("delivered_at")
    @classmethod
    def _delivered_after_shipped(cls, value: datetime | None, info: ValidationInfo) -> Any:
        if value is None:
            return value
        shipped = info.data.get("shipped_at")
        if shipped is None and "shipped_at" in info.data:
            raise ValueError("delivered_at needs shipped_at")
        if shipped is not None and value < shipped:
            raise ValueError("delivered_at is before shipped_at")
        return value


class OrderEvent(OrderDetails):
    """An order placed, shipped or delivered: the whole row each time."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{**ORDER_EXAMPLE, "customer_id": "c42"}]}
    )

    customer_id: Identifier


class CustomerDetails(_In):
    """The account, when the refund system knows it (improves a new customer's features)."""

    signup_at: UtcTime
    region: str = Field(min_length=1, max_length=64)


class CustomerEvent(CustomerDetails):
    """An account opened."""

    customer_id: Identifier


class OutcomeEvent(_In):
    """What was learnt about a refund request, and when (a warehouse check, a chargeback...)."""

    outcome_id: Identifier
    refund_id: Identifier
    is_abusive: bool
    known_at: UtcTime
    source: OutcomeSource


class IdentityLinkEvent(_In):
    """A fingerprint seen on an account."""

    customer_id: Identifier
    kind: LinkKind
    fingerprint: Identifier
    seen_at: UtcTime


# --- decisions -----------------------------------------------------------------------------------

DECISION_REQUEST_EXAMPLE: dict[str, Any] = {
    "refund_id": "r00000003",
    "customer_id": "c0000042",
    "requested_at": "2025-02-16T20:05:00Z",
    "refund_type": "return_and_refund",
    "reason": "not_as_described",
    "reason_detail": "wrong_size",
    "amount_requested": 59.9,
    "photo_count": 0,
    "order_stage": "delivered",
    "order": ORDER_EXAMPLE,
}


class RefundDecisionRequest(_In):
    """One refund request and the order it is about. `refund_id` is the idempotency key."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [DECISION_REQUEST_EXAMPLE]}
    )

    refund_id: Identifier = Field(
        description="The refund request's id; asking again with the "
        "same id returns the stored decision."
    )
    customer_id: Identifier
    requested_at: UtcTime = Field(description="When the customer asked.")
    refund_type: RefundType
    reason: Reason
    reason_detail: ReasonDetail
    amount_requested: Money = Field(description="Money asked back.")
    photo_count: int = Field(default=0, ge=0, le=1_000, description="Photos attached.")
    order_stage: OrderStage = Field(description="Where the order was when the request came.")
    order: OrderDetails
    customer: CustomerDetails | None = Field(
        default=None, description="The account, if the service may not have seen it yet."
    )

    @field_validator("reason_detail")
    @classmethod
    def _detail_of_reason(cls, value: str, info: ValidationInfo) -> str:
        reason = info.data.get("reason")
        if reason is not None and REASON_DETAILS.get(value) != reason:
            raise ValueError(f"{value!r} is a detail of {REASON_DETAILS[value]!r}, not {reason!r}")
        return value

    @field_validator("order")
    @classmethod
    def _order_fits_request(cls, order: OrderDetails, info: ValidationInfo) -> OrderDetails:
        requested = info.data.get("requested_at")
        amount = info.data.get("amount_requested")
        if requested is not None and order.ordered_at > requested:
            raise ValueError("the order was placed after the refund was requested")
        if amount is not None and amount > order.amount + 1e-9:
            raise ValueError(
                f"amount_requested {amount:.2f} is more than the order's amount {order.amount:.2f}"
            )
        return order

    def refund_row(self) -> dict[str, Any]:
        """The refund_requests row of the event store."""
        return {
            "refund_id": self.refund_id,
            "order_id": self.order.order_id,
            "customer_id": self.customer_id,
            "requested_at": self.requested_at,
            "refund_type": self.refund_type,
            "reason": self.reason,
            "reason_detail": self.reason_detail,
            "amount_requested": self.amount_requested,
            "photo_count": self.photo_count,
            "order_stage": self.order_stage,
        }

    def order_row(self) -> dict[str, Any]:
        """The orders row of the event store."""
        return {**self.order.model_dump(), "customer_id": self.customer_id}


class ModelVersions(_Out):
    """Which models, policy, tiers and features produced a decision."""

    abuse_model: str | None = Field(description="`refund-abuse/<version>`; null when degraded.")
    tier_model: str | None = Field(description="`credit-tier/<version>`; null: default tier.")
    policy: str = Field(description="Policy name and version.")
    policy_hash: str
    tiers_version: int
    tiers_hash: str
    feature_version: str


class Timing(_Out):
    """Where the time of a decision went, in milliseconds (before it was stored)."""

    features_ms: float
    scoring_ms: float
    policy_ms: float
    total_ms: float


DECISION_EXAMPLE: dict[str, Any] = {
    "decision_id": "d5b1c9e0a7f342c0b1d6a3e4f5a6b7c8",
    "refund_id": "r00000003",
    "customer_id": "c0000042",
    "action": "standard_return",
    "abuse_score": 0.064,
    "abuse_band": "low",
    "tier": "standard",
    "tier_score": None,
    "tier_source": "default",
    "offered_share": None,
    "offered_amount": None,
    "rule_id": "default",
    "reasons": [
        "No rule applies: the standard return and check process decides.",
        "Claim made 2.4 days after delivery",
    ],
    "customer_message": "Thanks, we have your request. We refund 59.90 once our usual check "
    "is done; if the item is to come back, the return instructions follow by e-mail.",
    "degraded": False,
    "versions": {
        "abuse_model": "refund-abuse/3",
        "tier_model": None,
        "policy": "default v1",
        "policy_hash": "c4b998ead23b",
        "tiers_version": 1,
        "tiers_hash": "22848d6b6a6a",
        "feature_version": "1f0c2d3e4a5b6c7d",
    },
    "decided_at": "2026-11-22T10:15:00.123456Z",
    "timing": {"features_ms": 0.09, "scoring_ms": 0.04, "policy_ms": 0.12, "total_ms": 0.3},
}


class DecisionOut(_Out):
    """A decision: what to do with the refund request, and why."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [DECISION_EXAMPLE]})

    decision_id: str = Field(description="Id under which the decision is stored.")
    refund_id: str
    customer_id: str
    action: Action
    abuse_score: float | None = Field(
        description="Calibrated probability that the request is abusive; null when degraded."
    )
    abuse_band: str | None = Field(description="The policy's band of the score.")
    tier: str = Field(description="The customer's credit tier.")
    tier_score: float | None = Field(
        description="The tier model's 90-day loss probability; null for new customers or "
        "when no tier model is loaded (the default tier applies)."
    )
    tier_source: Literal["model", "default", "pinned"] = Field(
        default="model",
        description="Where the tier came from: the tier model's score, the default tier (no "
        "score), or an analyst's pin (its reason is among the reasons).",
    )
    offered_share: float | None = Field(description="Share of the amount offered (partial).")
    offered_amount: float | None = Field(description="Amount offered (partial offers only).")
    rule_id: str = Field(description="The policy rule that fired (`default` if none).")
    reasons: list[str] = Field(
        description="For ops: the rule's reason, then the features "
        "that pushed the abuse score up most."
    )
    customer_message: str = Field(description="Safe to show the shopper.")
    degraded: bool = Field(
        description="True when no abuse model was available and the "
        "conservative rules-only policy decided."
    )
    versions: ModelVersions
    decided_at: datetime
    timing: Timing


class BatchDecisionRequest(_In):
    """Several refund requests; each is validated, decided and answered on its own."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"requests": [DECISION_REQUEST_EXAMPLE]}]}
    )

    requests: list[Any] = Field(
        min_length=1,
        description="Refund decision requests (each as in POST /v1/refund-decisions); at most "
        "the service's batch limit (50 by default).",
    )


class ErrorDetail(_Out):
    """One bad field."""

    field: str = Field(description="Dotted path of the field, e.g. `order.amount`.")
    message: str
    type: str = Field(description="Machine-readable kind of problem.")


class ErrorBody(_Out):
    """What went wrong, in one consistent shape."""

    code: str = Field(description="Machine-readable error code.")
    message: str
    fields: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(_Out):
    """Every error answer has this body."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "validation_error",
                        "message": "1 field is invalid",
                        "fields": [
                            {
                                "field": "amount_requested",
                                "message": "Input should be greater than 0",
                                "type": "greater_than",
                            }
                        ],
                    }
                }
            ]
        },
    )

    error: ErrorBody


class BatchItemOut(_Out):
    """One request of a batch: its decision, or why it was not decided."""

    index: int = Field(description="Position of the request in the batch.")
    refund_id: str | None
    status: int = Field(description="200 decided, 422 invalid, 404/503 not decided.")
    replayed: bool = Field(default=False, description="True: the stored decision, returned again.")
    decision: DecisionOut | None = None
    error: ErrorBody | None = None


class BatchDecisionOut(_Out):
    """The answers, in the order of the requests."""

    results: list[BatchItemOut]


class StoredDecisionOut(_Out):
    """A stored decision with the inputs it was made from and the feature values it used."""

    decision: DecisionOut
    request: dict[str, Any] = Field(description="The request as received (times in UTC).")
    features: dict[str, float | None] = Field(description="Feature values used, by name.")


class Privileges(_Out):
    """What the tier allows."""

    refund_before_return_allowed: bool
    auto_approve_limit: float
    max_outstanding_unreturned: float


class CustomerTierOut(_Out):
    """A customer's credit tier as of a moment, with its privileges and current exposure."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "c0000042",
                    "tier": "standard",
                    "score": None,
                    "privileges": {
                        "refund_before_return_allowed": False,
                        "auto_approve_limit": 0.0,
                        "max_outstanding_unreturned": 0.0,
                    },
                    "outstanding_unreturned_value": 0.0,
                    "as_of": "2026-11-22T10:15:00Z",
                    "tier_model": None,
                    "tiers_version": 1,
                }
            ]
        },
    )

    customer_id: str
    tier: str
    score: float | None = Field(
        description="90-day loss probability; null: no score (new "
        "customer, or no tier model), so the default tier applies."
    )
    privileges: Privileges
    outstanding_unreturned_value: float = Field(
        description="Paid before the goods are back and checked (refunds before return, "
        "approvals of shipped orders), with no outcome yet."
    )
    as_of: datetime
    tier_model: str | None
    tiers_version: int


class EventsIn(_In):
    """New events for the event store. Rows already stored are written again unchanged
    (duplicates are ignored); an order sent again replaces the stored one (shipped, delivered)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "orders": [{**ORDER_EXAMPLE, "customer_id": "c0000042"}],
                    "outcomes": [
                        {
                            "outcome_id": "x00000003",
                            "refund_id": "r00000003",
                            "is_abusive": False,
                            "known_at": "2025-02-24T10:00:00Z",
                            "source": "warehouse_check",
                        }
                    ],
                }
            ]
        },
    )

    customers: list[CustomerEvent] = Field(default_factory=list, max_length=MAX_EVENT_ROWS)
    orders: list[OrderEvent] = Field(
        default_factory=list,
        max_length=MAX_EVENT_ROWS,
        description="Orders placed, shipped or delivered (deliveries are the order sent again).",
    )
    outcomes: list[OutcomeEvent] = Field(default_factory=list, max_length=MAX_EVENT_ROWS)
    identity_links: list[IdentityLinkEvent] = Field(default_factory=list, max_length=MAX_EVENT_ROWS)


class EventsOut(_Out):
    """Rows written per table (identity links include those read off the orders)."""

    written: dict[str, int]


class CheckOut(_Out):
    """One readiness check."""

    ok: bool
    detail: str


class ReadinessOut(_Out):
    """Whether the service can decide with its models, and what is missing if not."""

    status: Literal["ready", "degraded", "unavailable"]
    checks: dict[str, CheckOut]


class ReloadIn(_In):
    """What to reload; models are fetched by alias from the registry."""

    alias: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="Registry alias to load (default: the service's configured alias).",
    )
    policy: bool = Field(default=True, description="Also re-read the policy and tiers files.")


class ReloadOut(_Out):
    """What is in use after the reload."""

    abuse_model: str | None
    tier_model: str | None
    policy: str
    degraded: bool
    problems: dict[str, str]


def finite_or_none(value: float) -> float | None:
    """A feature value for JSON: NaN (empty) becomes null."""
    return None if math.isnan(value) else value
