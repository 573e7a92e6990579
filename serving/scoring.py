"""The decision engine: a feature row in, a decision out. Pure: no clock, no database, no HTTP.

The row comes from `features.online` (the only feature path); this module picks the models'
inputs out of it, scores the abuse risk and the customer's tier, builds the policy's request
context, and lets `policy.evaluate.decide` choose the action. Reasons come from the abuse
model's contribution tables (microseconds), never from TreeSHAP at request time.

Without an abuse model the conservative rules-only policy decides, the decision is marked
degraded and carries no score. Without a tier model every customer gets the default tier.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.definitions import FEATURE_NAMES
from policy.context import tier_of
from policy.evaluate import Decision, compile_policy
from policy.model import DEFAULT_POLICY_PATH, Policy, load_policy
from policy.reasons import (
    Contribution,
    ReasonTemplates,
    load_reason_templates,
    sentence_writer,
    without_repeats,
)
from policy.tiers import DEFAULT_TIERS_PATH, Tier, Tiers, assign_tier, load_tiers
from serving.models import LoadedModel, ModelSet, tiers_in_force
from serving.schemas import RefundDecisionRequest

DEGRADED_POLICY_PATH = Path(__file__).resolve().parent / "degraded.yaml"
"""The rules-only policy used when no abuse model is loaded."""

TOP_REASONS = 3
"""Feature reasons per decision, after the rule's own reason."""

_POSITION = {name: i for i, name in enumerate(FEATURE_NAMES)}
_DAYS_SINCE_DELIVERY = _POSITION["order_days_since_delivery"]
_LINKED_ABUSIVE_REFUNDS = _POSITION["linked_accounts_confirmed_abusive_refunds_by_any"]
_LINKED_ACCOUNTS = _POSITION["linked_accounts_by_any"]
_CONFIRMED_ABUSIVE = _POSITION["customer_confirmed_abusive_refunds"]


@dataclass(frozen=True)
class CachedReasonTemplates(ReasonTemplates):
    """Reason templates that remember how each feature's sentence is written.

    Finding a feature's template tries every template's pattern in turn; for a loaded file the
    answer never changes, so each feature's sentence writer is made once.
    """

    writers: dict[str, Callable[[float], str]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def sentence(self, contribution: Contribution) -> str:
        """The reviewer sentence for one feature's contribution (see `describe_contribution`)."""
        try:
            write = self.writers[contribution.feature]
        except KeyError:
            write = self.writers[contribution.feature] = sentence_writer(contribution.feature, self)
        return write(contribution.value)


@dataclass(frozen=True)
class PolicySet:
    """The policy in force, the rules-only fallback, the credit tiers and the reason templates."""

    policy: Policy
    degraded_policy: Policy
    tiers: Tiers
    templates: CachedReasonTemplates

    @property
    def label(self) -> str:
        """Policy name, version and hash."""
        return self.policy.label


def load_policy_set(policy_path: Path | None = None, tiers_path: Path | None = None) -> PolicySet:
    """Read and validate the policy, tiers, fallback policy and reason templates."""
    tiers = load_tiers(tiers_path or DEFAULT_TIERS_PATH)
    policy = load_policy(policy_path or DEFAULT_POLICY_PATH, tiers)
    degraded = load_policy(DEGRADED_POLICY_PATH, tiers)
    base = load_reason_templates()
    return PolicySet(policy, degraded, tiers, CachedReasonTemplates(base.templates))


@dataclass(frozen=True)
class Snapshot:
    """Everything that decides, at one moment; swapped whole when an admin reloads."""

    models: ModelSet
    policies: PolicySet

    @functools.cached_property
    def tiers(self) -> Tiers:
        """The tiers decisions use: the file's, ending where the tier model's cut-offs say."""
        return tiers_in_force(self.policies.tiers, self.models.tier)


@dataclass(frozen=True)
class Scored:
    """What the models said about one request."""

    abuse_score: float | None
    tier_score: float | None
    contributions: tuple[Contribution, ...]


def _top(
    model: LoadedModel, values: Sequence[float], top: int = TOP_REASONS
) -> tuple[Contribution, ...]:
    """The features that pushed the abuse score up most (largest first), from the tables;
    `values` are the model's inputs (`LoadedModel.inputs`)."""
    if model.lookup is None:
        return ()
    names = model.feature_names
    return tuple(Contribution(names[i], values[i], c) for i, c in model.lookup.top(values, top))


def tier_score(models: ModelSet, row: list[float]) -> float | None:
    """The tier model's loss probability of a row; None without a model or without history.

    Decisions and the tier endpoint score the customer's monthly snapshot row this way (see
    `serving.tiers`), never the request's own row.
    """
    model = models.tier
    if model is None or not model.has_history(row):
        return None
    return model.probability(row)


def score(models: ModelSet, row: list[float], tier: float | None = None) -> Scored:
    """Abuse probability with its top contributions; `tier` is the customer's loss
    probability, from their latest monthly snapshot (`serving.tiers.TierScores`)."""
    abuse = models.abuse
    if abuse is None:
        return Scored(None, tier, ())
    values = abuse.inputs(row)
    return Scored(abuse.probability_of(values), tier, _top(abuse, values))


def request_context(
    request: RefundDecisionRequest, row: list[float], outstanding: float, watchlisted: bool = False
) -> dict[str, Any]:
    """The policy's view of a request: its own fields, plus values read off the feature row,
    as the fields of a `policy.context.RequestContext` (valid: the request was checked when
    it was read, and the rest is made valid here).

    `linked_abusive_accounts` counts accounts, the row counts their confirmed abusive refunds
    and the linked accounts: the number of linked abusers is at most the smaller of the two,
    and is at least one exactly when the refund count is. The policy's default threshold (one)
    therefore sees the exact answer.
    """
    days = row[_DAYS_SINCE_DELIVERY]
    refunds, accounts = row[_LINKED_ABUSIVE_REFUNDS], row[_LINKED_ACCOUNTS]
    linked = 0
    if refunds == refunds and accounts == accounts:  # both known (not NaN)
        linked = int(min(refunds, accounts))
    confirmed = row[_CONFIRMED_ABUSIVE]
    order = request.order
    return {
        "order_stage": request.order_stage,
        "order_amount": order.amount,
        "amount_requested": request.amount_requested,
        "category": order.category,
        "reason": request.reason,
        "reason_detail": request.reason_detail,
        "refund_type": request.refund_type,
        "photo_count": request.photo_count,
        "days_since_delivery": None if days != days else max(float(days), 0.0),
        "outstanding_unreturned_value": max(outstanding, 0.0),
        "watchlisted": watchlisted,
        "linked_abusive_accounts": max(linked, 0),
        "customer_confirmed_abusive_refunds": int(confirmed) if confirmed == confirmed else 0,
    }


def decide_scored(
    snapshot: Snapshot,
    context: Mapping[str, Any],
    scored: Scored,
    pinned_tier: str | None = None,
    notes: Sequence[str] = (),
) -> tuple[Decision, list[str], bool]:
    """The decision, its reasons, and whether it was made without an abuse model (degraded).

    The policy gives the rule's reason; `notes` (an analyst's tier pin or watch-list entry)
    follow it, then the features that pushed the score up most (already chosen from the
    contribution tables, largest first, as `policy.reasons.explain` would), each written once
    per feature and value, and left out when an earlier reason already says it (a rule quoting
    the amount asked). A `pinned_tier` replaces the tier model's (unless the tiers file in
    force no longer has it).
    """
    policies = snapshot.policies
    tiers = snapshot.tiers
    degraded = scored.abuse_score is None
    abuse_score = 0.0 if scored.abuse_score is None else scored.abuse_score
    # A pin the tiers file in force no longer has is ignored (checked only when pinned: `names`
    # builds a tuple, and most requests have no pin).
    pinned = pinned_tier if pinned_tier is not None and pinned_tier in tiers.names else None
    tier = tier_of(pinned, scored.tier_score, tiers)
    compiled = compile_policy(policies.degraded_policy if degraded else policies.policy)
    decision = compiled.decide_fields(context, abuse_score, tier, tiers)
    reasons = without_repeats(
        [*decision.reasons, *notes], (policies.templates.sentence(c) for c in scored.contributions)
    )
    return decision, reasons, degraded


def customer_tier(tiers: Tiers, score: float | None) -> Tier:
    """The tier of a loss probability (None: the default tier)."""
    return assign_tier(score, tiers)
