"""What the API takes and gives: request and response models, by direction, with examples.

Requests refuse unknown fields and name every bad field; responses say exactly what a decision
carries. Times are UTC: a time with an offset is converted, one without is taken as UTC, and the
service stores them without an offset, as the raw tables do; every time it answers carries its
zone (`Z`). A time must be ISO 8601 text (a bare number is refused, not taken for an epoch);
numbers, counts and yes/no fields take JSON numbers and booleans only, never text or each other.
The examples are what /docs shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

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
from policy.vocabulary import Action

MAX_EVENT_ROWS = 5_000
"""Most rows of one table in one events call; more should be sent in several calls."""


EARLIEST_YEAR = 1970
LATEST_YEAR = 2199
"""Times outside these years are refused: none is a refund's, and date arithmetic near the
ends of the calendar would overflow."""
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_text(value: Any) -> Any:
    """A time arrives as ISO 8601 text; a bare number (an epoch? milliseconds?) is refused
    rather than guessed."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE.match(value)):
        return value
    raise PydanticCustomError(
        "datetime_format", "must be an ISO 8601 date and time, e.g. 2025-02-11T09:30:00Z"
    )


def _utc_naive(value: datetime) -> datetime:
    """Convert to UTC and drop the offset; a time without an offset is UTC already."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise PydanticCustomError(
            "datetime_range", f"must be in the years {EARLIEST_YEAR} to {LATEST_YEAR}"
        )
    return value


def _aware_utc(value: datetime) -> datetime:
    """A time the service stored (naive UTC) as UTC with its zone, for an answer."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def quoted(value: object, limit: int = 40) -> str:
    """A caller's value for an error message: its repr, cut to a short prefix."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _one_of(name: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {name} {quoted(value)}; known: {', '.join(allowed)}")
        return value

    return check


def _listed(allowed: tuple[str, ...]) -> WithJsonSchema:
    """The JSON schema of a string that must be one of `allowed`."""
    return WithJsonSchema({"type": "string", "enum": list(allowed)})


UtcTime = Annotated[
    datetime,
    BeforeValidator(_iso_text),
    AfterValidator(_utc_naive),
]
"""A time in a request."""
UtcOut = Annotated[datetime, AfterValidator(_aware_utc)]
"""A time in an answer: UTC, written with its zone (`Z`)."""
Identifier = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]
Money = Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False, strict=True)]
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
    "product_id": "sku00006",
    "product_name": "Slim jeans",
}


class OrderDetails(_In):
    """An order as the shop knows it now (send it again when it ships or is delivered).

    Once recorded, an order's customer, time, category, amount, item count, payment method and
    fingerprints are fixed; its shipped_at and delivered_at may be filled in or move later,
    never be emptied or move back (409 `order_conflict`). Its product (optional) feeds the
    owner's figures per product; an order sent again without it keeps the one recorded."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [ORDER_EXAMPLE]})

    order_id: Identifier
    ordered_at: UtcTime
    category: Category
    amount: Money = Field(description="Order value paid.")
    item_count: StrictInt = Field(ge=1, le=100_000)
    payment_method: PaymentMethod
    device_id: Identifier | None = Field(
        default=None,
        description="Fingerprint of the device used to order; leave out if not recorded "
        "(linked-account features are then missing, not zero).",
    )
    address_id: Identifier | None = Field(
        default=None, description="Fingerprint of the shipping address; leave out if not recorded."
    )
    payment_fingerprint: Identifier | None = Field(
        default=None,
        description="Fingerprint of the payment instrument; leave out if not recorded.",
    )
    shipped_at: UtcTime | None = Field(default=None, description="Empty if not shipped.")
    delivered_at: UtcTime | None = Field(default=None, description="Empty if not delivered.")
    delivery_evidence: DeliveryEvidence = Field(
        default="none", description="Carrier's proof of delivery."
    )
    product_id: Identifier | None = Field(
        default=None,
        description="The shop's product (SKU) id; leave out if not known. Feeds the owner's "
        "refund rate and reasons per product; decisions are the same with or without it. "
        "Fixed once recorded: the order sent again without it keeps it, with another one is "
        "refused (409).",
    )
    product_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The product's name as the shop shows it; needs product_id.",
    )

    @field_validator("product_name")
    @classmethod
    def _name_needs_id(cls, value: str | None, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("product_id") is None and "product_id" in info.data:
            raise ValueError("product_name needs product_id")
        return value

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
    is_abusive: StrictBool
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
    """One refund request and the order it is about. `refund_id` is the idempotency key.

    Rules across fields (the amount within the order's, the order placed before the request,
    the stage the order's own times give, no request from the future) are the service's
    (`data.facts.refund_problems`), checked when the request is decided.
    """

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [DECISION_REQUEST_EXAMPLE]}
    )

    refund_id: Identifier = Field(
        description="The refund request's id, bound to this request: asking again with the "
        "same id and the same request returns the stored decision; with a different request, "
        "409 `idempotency_conflict`."
    )
    customer_id: Identifier
    requested_at: UtcTime = Field(
        description="When the customer asked; not later than the service's clock plus its "
        "clock-skew allowance (5 minutes by default)."
    )
    refund_type: RefundType
    reason: Reason
    reason_detail: ReasonDetail
    amount_requested: Money = Field(description="Money asked back.")
    photo_count: StrictInt = Field(default=0, ge=0, le=1_000, description="Photos attached.")
    order_stage: OrderStage = Field(
        description="Where the order was when the request came; must be what the order's own "
        "times give at requested_at (delivered_at at or before it: delivered; else shipped_at "
        "at or before it: in_transit; else not_shipped)."
    )
    order: OrderDetails
    customer: CustomerDetails | None = Field(
        default=None, description="The account, if the service may not have seen it yet."
    )

    @field_validator("reason_detail")
    @classmethod
    def _detail_of_reason(cls, value: str, info: ValidationInfo) -> str:
        reason = info.data.get("reason")
        if reason is not None and REASON_DETAILS.get(value) != reason:
            raise ValueError(
                f"{value!r} is a detail of {REASON_DETAILS[value]!r}, not {quoted(reason)}"
            )
        return value

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
    decided_at: UtcOut
    timing: Timing


class BatchDecisionRequest(_In):
    """Several refund requests; each is validated, decided and answered on its own."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"requests": [DECISION_REQUEST_EXAMPLE]}]}
    )

    requests: list[Any] = Field(
        min_length=1,
        max_length=1000,
        description="Refund decision requests (each as in POST /v1/refund-decisions); at most "
        "the service's batch limit (50 by default, `REFUND_RISK_BATCH_LIMIT`, at most 1000).",
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


IDEMPOTENCY_CONFLICT_EXAMPLE: dict[str, Any] = {
    "error": {
        "code": "idempotency_conflict",
        "message": "refund_id 'r00000003' was already used for a different request; a retry "
        "must send the same request, a new request needs a new refund_id (differs: "
        "amount_requested)",
        "fields": [
            {
                "field": "amount_requested",
                "message": "differs from the request first sent with this refund_id",
                "type": "idempotency",
            }
        ],
    }
}

ORDER_CONFLICT_EXAMPLE: dict[str, Any] = {
    "error": {
        "code": "order_conflict",
        "message": "the request names an order of another customer (order 'o000000017'); "
        "nothing was written",
        "fields": [
            {
                "field": "customer_id",
                "message": "order 'o000000017' belongs to another customer",
                "type": "order_of_another_customer",
            }
        ],
    }
}

FACT_CONFLICT_EXAMPLE: dict[str, Any] = {
    "error": {
        "code": "order_conflict",
        "message": "the request contradicts facts already recorded of the order, which cannot "
        "change (order 'o000000017'); nothing was written",
        "fields": [
            {
                "field": "order.amount",
                "message": "amount of order 'o000000017' is fixed when the order is placed and "
                "cannot be changed",
                "type": "fixed_fact",
            }
        ],
    }
}

STAGE_ERROR_EXAMPLE: dict[str, Any] = {
    "error": {
        "code": "validation_error",
        "message": "1 field is invalid",
        "fields": [
            {
                "field": "order_stage",
                "message": "order_stage is 'not_shipped' but the order's own times make it "
                "'delivered' at requested_at 2025-02-16 20:05:00 (shipped_at 2025-02-12 "
                "16:00:00, delivered_at 2025-02-14 11:10:00)",
                "type": "stage_mismatch",
            }
        ],
    }
}


class BatchItemOut(_Out):
    """One request of a batch: its decision, or why it was not decided."""

    index: int = Field(description="Position of the request in the batch.")
    refund_id: str | None
    status: int = Field(
        description="200 decided, 422 invalid, 409 refund id used for a different request or "
        "order facts contradicted, 503 not recorded."
    )
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
    as_of: UtcOut
    tier_model: str | None
    tiers_version: int


class EventsIn(_In):
    """New events for the event store. Rows already stored are written again unchanged
    (duplicates are ignored); an order sent again replaces the stored one when it only
    progresses (shipped, delivered): one naming another customer's order or changing an
    order's fixed facts refuses the whole call (409 `order_conflict`)."""

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


class ModelInUseOut(_Out):
    """A registered model the service decides with."""

    name: str = Field(description="Registered model name, e.g. `refund-abuse`.")
    version: str = Field(description="Its version in the registry.")
    alias: str = Field(description="The alias it was loaded by, e.g. `champion`.")


class ReadinessOut(_Out):
    """Whether the service can decide and record decisions, with what, and what is missing."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "status": "degraded",
                    "ready": True,
                    "degraded": True,
                    "models": [],
                    "policy": "default v1 (c4b998ead23b)",
                    "checks": {
                        "database": {"ok": True, "detail": "sqlite"},
                        "abuse_model": {
                            "ok": False,
                            "detail": "no refund-abuse@champion; deciding with the "
                            "rules-only policy (degraded)",
                        },
                        "decision_log": {
                            "ok": True,
                            "detail": "decisions are recorded in the recorder process",
                        },
                    },
                }
            ]
        },
    )

    status: Literal["ready", "degraded", "starting", "unavailable"] = Field(
        description="`ready`: deciding with the models; `degraded`: deciding with the "
        "rules-only policy (no abuse model), still ready; `starting`: the event history and "
        "models are still loading, not ready; `unavailable`: cannot record decisions "
        "(database or recorder), the event store holds no history, or the start failed, "
        "not ready."
    )
    ready: bool = Field(description="Whether the instance can decide and record decisions.")
    degraded: bool = Field(description="Deciding without the abuse model (rules-only policy).")
    models: list[ModelInUseOut] = Field(description="The models in use (none when degraded).")
    policy: str = Field(description="The policy in use: name, version and content hash.")
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
    policy: StrictBool = Field(default=True, description="Also re-read the policy and tiers files.")


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
