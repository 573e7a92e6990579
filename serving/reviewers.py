"""What each reviewer may take from the queue: the most they may decide, the most they may hold.

An ops lead sets them in a YAML file named by REFUND_RISK_REVIEWER_LIMITS, per key name (as
given to `refund-risk keys create --name`) or key id, with a default for everyone else:

    default: {max_open_claims: 3}
    reviewers:
      senior team: {max_amount: 5000, max_open_claims: 5}
      new joiner: {max_amount: 200, max_open_claims: 2}

Without a file every reviewer may decide any amount and hold REFUND_RISK_REVIEW_MAX_OPEN_CLAIMS
cases at once. The file is read and checked when the service starts.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from refund_risk.config_files import load_yaml_model


class ReviewerLimit(BaseModel):
    """One reviewer's limits; an absent field falls back to the default's, then the setting."""

    model_config = ConfigDict(extra="forbid")

    max_amount: float | None = Field(default=None, gt=0, le=1e9)
    """Largest amount asked back that this reviewer may decide; none: any amount."""
    max_open_claims: int | None = Field(default=None, ge=1, le=1000)
    """Most open cases this reviewer may hold at once through the next-case hand-out."""


class ReviewerLimits(BaseModel):
    """Every reviewer's limits: named ones, and the default for the rest."""

    model_config = ConfigDict(extra="forbid")

    default: ReviewerLimit = ReviewerLimit()
    reviewers: dict[str, ReviewerLimit] = {}

    def for_key(
        self, key_id: str, name: str | None, max_open_claims: int
    ) -> tuple[float | None, int]:
        """(max amount, max open claims) for the key with this id and name; the setting's cap
        where neither the reviewer's entry nor the default names one."""
        own = self.reviewers.get(key_id) or (self.reviewers.get(name) if name else None)
        own = own or ReviewerLimit()
        amount = own.max_amount if own.max_amount is not None else self.default.max_amount
        cap = own.max_open_claims or self.default.max_open_claims or max_open_claims
        return amount, cap


def load_reviewer_limits(path: Path | None) -> ReviewerLimits:
    """The limits in the YAML file at `path` (none: no file, the defaults); a missing or bad
    file stops the service with a sentence naming the file and the field."""
    if path is None:
        return ReviewerLimits()
    return load_yaml_model(path, ReviewerLimits, "reviewer limits")
