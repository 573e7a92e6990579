"""What the review queue and overrides API take and give: models by direction, with examples."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from serving.reviews import Resolution
from serving.schemas import DecisionOut, Identifier, Money, Privileges, UtcOut, UtcTime

MAX_VERSION = 2**31 - 1
"""Largest case version a caller may send (a case changes a handful of times)."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)


CASE_EXAMPLE: dict[str, Any] = {
    "case_id": "0193a1b2c3d4e5f60718293a4b5c6d7e",
    "refund_id": "r00000003",
    "customer_id": "c0000042",
    "opened_at": "2026-11-22T10:15:00Z",
    "age_hours": 5.2,
    "status": "open",
    "claimed_by": None,
    "claimed_until": None,
    "claimed": False,
    "over_sla": False,
    "resolved_at": None,
    "abuse_score": 0.41,
    "tier": "standard",
    "amount_requested": 129.0,
    "rule_id": "high_risk",
    "reason": "logistics",
    "reason_detail": "not_received",
    "category": "electronics",
    "resolution": None,
    "version": 0,
}


class CaseOut(_Out):
    """A review case as the queue lists it. Times are UTC."""

    model_config = ConfigDict(
        extra="forbid", from_attributes=True, json_schema_extra={"examples": [CASE_EXAMPLE]}
    )

    case_id: str = Field(description="The id of the decision that opened the case.")
    refund_id: str
    customer_id: str
    opened_at: UtcOut
    age_hours: float = Field(description="Hours since the case was opened.")
    status: str = Field(description="`open` or `resolved`.")
    claimed_by: str | None = Field(description="Key id of the reviewer holding the claim.")
    claimed_until: UtcOut | None = Field(description="When the claim lapses.")
    claimed: bool = Field(description="Whether a claim is in force now.")
    over_sla: bool = Field(description="Open for longer than the review SLA.")
    resolved_at: UtcOut | None
    abuse_score: float | None
    tier: str
    amount_requested: float
    rule_id: str = Field(description="The policy rule that sent it to review.")
    reason: str | None
    reason_detail: str | None
    category: str | None
    resolution: str | None
    version: int = Field(description="Changes so far; send it back to resolve only if unchanged.")


class NextCaseOut(_Out):
    """What the next-case hand-out gave, and the limits it kept to."""

    case: CaseOut | None = Field(
        description="The case now claimed for the caller; null when no free case is within "
        "the caller's limits."
    )
    held: int = Field(description="Open cases the caller holds now, this one included.")
    max_open_claims: int = Field(description="Most open cases the caller may hold at once.")
    max_amount: float | None = Field(
        description="Largest amount asked back the caller may decide; null: any amount."
    )


class CasePageOut(_Out):
    """One page of cases."""

    items: list[CaseOut]
    total: int = Field(description="Cases matching the filters, on every page.")
    limit: int
    offset: int


class ResolveIn(_In):
    """A reviewer's decision about a case."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"decision": "reject_abuse", "note": "Carrier photo shows the parcel at the door."},
                {"decision": "approve_partial", "amount": 20.0, "note": "Minor scratch."},
            ]
        },
    )

    decision: Resolution = Field(
        description="approve (refund in full), approve_partial (with `amount`), require_return, "
        "or reject_abuse."
    )
    amount: Money | None = Field(
        default=None, description="Refunded amount; required for approve_partial."
    )
    note: str = Field(default="", max_length=2000, description="Why; kept with the resolution.")
    expected_version: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_VERSION,
        description="Resolve only if the case is still at this version (as last read).",
    )


class ResolutionOut(_Out):
    """A stored resolution and the outcome it became."""

    case_id: str
    refund_id: str
    decision: str
    amount: float | None
    note: str
    reviewer: str = Field(description="Key id of the reviewer.")
    resolved_at: UtcOut
    outcome_id: str = Field(description="The outcome appended to the event store (reviewer).")


class TimelineEventOut(_Out):
    """One thing in the customer's history."""

    at: UtcOut
    kind: str
    text: str
    ref: str | None
    flag: bool


class LinkedAccountOut(_Out):
    """An account sharing a fingerprint with the customer."""

    customer_id: str
    shared: list[str]
    refunds: int
    abusive_refunds: int


class SimilarCaseOut(_Out):
    """A past request like this one and how it ended."""

    refund_id: str
    at: UtcOut
    amount_requested: float
    abuse_score: float | None
    ended: str
    abusive: bool | None
    source: str


class TierOut(_Out):
    """The customer's tier on the decision, where it came from, and what it allows."""

    name: str
    source: str
    description: str
    privileges: Privileges


class CaseDetailOut(_Out):
    """Everything a reviewer needs to decide a case."""

    case: CaseOut
    decision: DecisionOut
    request: dict[str, Any]
    resolution: ResolutionOut | None
    tier: TierOut
    pinned: TierPinOut | None
    watchlisted: WatchOut | None
    history: list[TimelineEventOut]
    linked_accounts: list[LinkedAccountOut]
    similar: list[SimilarCaseOut]


class TierPinIn(_In):
    """Pin a customer's tier until a moment."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "c0000042",
                    "tier": "gold",
                    "expires_at": "2026-12-31T00:00:00Z",
                    "reason": "Key account; chargebacks were the bank's error.",
                }
            ]
        },
    )

    customer_id: Identifier
    tier: str = Field(min_length=1, max_length=64)
    expires_at: UtcTime
    reason: str = Field(min_length=3, max_length=500)


class TierPinOut(_Out):
    """A tier pin in force."""

    pin_id: str
    customer_id: str
    tier: str
    reason: str
    created_by: str
    created_at: UtcOut
    expires_at: UtcOut


class WatchIn(_In):
    """Put an account on the watch list."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"customer_id": "c0000042", "reason": "Shares a device with a ring."}]
        },
    )

    customer_id: Identifier
    reason: str = Field(min_length=3, max_length=500)
    until: UtcTime | None = Field(default=None, description="Empty: until removed.")


class WatchOut(_Out):
    """A watch-list entry in force."""

    entry_id: str
    customer_id: str
    reason: str
    created_by: str
    created_at: UtcOut
    until: UtcOut | None


class OverridesOut(_Out):
    """The tier pins and watch-list entries in force."""

    pins: list[TierPinOut]
    watchlist: list[WatchOut]


CaseDetailOut.model_rebuild()
