"""Deciding refund requests: pure functions from context and scores to one action and its reasons.

`decide` handles one request, as the scoring service does at request time. `decide_frame`
handles a whole table of past requests at once, as the simulator and the tuner do; it applies
the same compiled conditions with numpy instead of one request at a time, and a test holds the
two equal on thousands of random requests. Neither reads a file, a clock or a random number.

`decide` runs at request time, so what depends only on the policy is prepared once per policy
(`compile_policy`): conditions become small functions with their thresholds resolved, templates
are parsed, threshold words are written. Per request, only the values the matched rule's reason
and message name are written out.
"""

from __future__ import annotations

import itertools
import math
import operator
import string
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

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
from policy.conditions import Condition, Ref, Rule
from policy.documents import PartialOfferSpec
from policy.model import Policy
from policy.reasons import (
    EMPTY_TEMPLATES,
    Contribution,
    ReasonTemplates,
    explain,
    without_repeats,
)
from policy.tiers import Tier, Tiers, assign_tier
from policy.vocabulary import CONTEXT_FIELDS, Action, FieldKind, Unit, format_value
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


class Decision(NamedTuple):
    """One decided request: the action, the rule that fired, and why (made only here, from
    valid inputs: a plain tuple, which costs a fraction of a validated model)."""

    action: Action
    rule_id: str
    reasons: tuple[str, ...]
    customer_message: str
    abuse_score: float
    abuse_band: str
    tier: str
    offered_share: float | None
    offered_amount: float | None
    policy_name: str
    policy_version: int
    policy_hash: str
    tiers_version: int
    tiers_hash: str


# --- one request ---------------------------------------------------------------------------------


def resolve_tier(scores: Scores, tiers: Tiers) -> Tier:
    """The customer's tier: as given, else from the loss probability, else the default."""
    return tier_of(scores.tier, scores.tier_loss_probability, tiers)


def tier_of(name: str | None, loss_probability: float | None, tiers: Tiers) -> Tier:
    """The tier named `name`, else that of the loss probability, else the default."""
    if name is not None:
        return tiers.get(name)
    return assign_tier(loss_probability, tiers)


def request_values(
    fields: Mapping[str, Any], abuse_score: float, abuse_band: str, tier: Tier
) -> dict[str, object]:
    """Every field a rule may test, by name (derived fields included), of a request context
    given as its fields, by `RequestContext`'s names.

    The fields must be valid as `RequestContext` checks them: the scoring service, whose
    requests were checked when they were read, decides this way without building the model.
    """
    amount_requested = fields["amount_requested"]
    outstanding = fields["outstanding_unreturned_value"]
    category = fields["category"]
    return {
        "order_stage": fields["order_stage"],
        "order_amount": fields["order_amount"],
        "amount_requested": amount_requested,
        "category": category,
        "non_returnable": category in NON_RETURNABLE_CATEGORIES,
        "reason": fields["reason"],
        "reason_detail": fields["reason_detail"],
        "refund_type": fields["refund_type"],
        "photo_count": float(fields["photo_count"]),
        "days_since_delivery": fields["days_since_delivery"],
        "abuse_score": abuse_score,
        "abuse_band": abuse_band,
        "tier": tier.name,
        "tier.refund_before_return_allowed": tier.refund_before_return_allowed,
        "tier.auto_approve_limit": tier.auto_approve_limit,
        "tier.max_outstanding_unreturned": tier.max_outstanding_unreturned,
        "outstanding_unreturned_value": outstanding,
        "unreturned_after_request": outstanding + amount_requested,
        "watchlisted": fields["watchlisted"],
        "linked_abusive_accounts": float(fields["linked_abusive_accounts"]),
        "customer_confirmed_abusive_refunds": float(
            fields.get("customer_confirmed_abusive_refunds", 0)
        ),
    }


def _resolve(operand: object, values: Mapping[str, object], policy: Policy) -> object:
    if isinstance(operand, Ref):
        if operand.name.startswith("thresholds."):
            return policy.thresholds[operand.name.removeprefix("thresholds.")]
        return values[operand.name]
    return operand


def holds(condition: Condition, values: Mapping[str, object], policy: Policy) -> bool:
    """Whether one condition holds for one request's context values."""
    left = values[condition.field]
    op = condition.op
    if op == "in":
        assert isinstance(condition.operand, tuple)
        return left in condition.operand
    if op == "not_in":
        assert isinstance(condition.operand, tuple)
        return left not in condition.operand
    # An empty value (say, days since a delivery that has not happened) satisfies no ordering.
    return _compare(op, left, _resolve(condition.operand, values, policy))


def first_match(policy: Policy, values: Mapping[str, object]) -> Rule:
    """The first rule whose conditions all hold, or the default."""
    for rule in policy.rules:
        if all(holds(c, values, policy) for c in rule.conditions):
            return rule
    return policy.default


def return_shipping_cost(spec: PartialOfferSpec, category: str) -> float:
    """What a return of goods of this category costs the shop, per the policy."""
    return spec.return_shipping_cost_by_category.get(category, spec.return_shipping_cost)


def partial_offer_share(
    value: Any, shipping_cost: Any, abuse_score: Any, spec: PartialOfferSpec
) -> Any:
    """The share of the item's value to offer so the customer keeps it (scalars or arrays).

    A return costs the shop the shipping plus what the item loses by coming back, so an offer
    up to `1 - resale_recovery_share + shipping / value` of the price costs no more than a return.
    The offer shrinks as the abuse score rises: an abuser keeping a good item should get less.
    """
    # One request (the service's path) is worked in plain floats, a tenth of numpy's cost on
    # scalars; `round_like_numpy` rounds as `np.round` does.
    one = isinstance(value, float) and isinstance(shipping_cost, float | int)
    if one:
        abuse_score = float(abuse_score)
    else:
        value, shipping_cost = np.asarray(value), np.asarray(shipping_cost)
        abuse_score = np.asarray(abuse_score)
    break_even = 1.0 - spec.resale_recovery_share + shipping_cost / value
    share = break_even * (1.0 - spec.risk_discount * abuse_score)
    if one:
        return round_like_numpy(min(max(share, spec.min_share), spec.max_share), 4)
    result = np.round(np.clip(share, spec.min_share, spec.max_share), 4)
    return float(result) if np.ndim(result) == 0 else result


def round_like_numpy(value: float, decimals: int) -> float:
    """`float(np.round(value, decimals))` for a finite float: numpy scales by ten to the
    `decimals`, rounds half to even and scales back, as this does."""
    scale = 10.0**decimals
    return round(value * scale) / scale


def _threshold_units(policy: Policy) -> dict[str, Unit]:
    """The unit a named threshold is written in: that of the fields it is compared with."""
    units: dict[str, Unit] = {}
    for rule in policy.rules:
        for cond in rule.conditions:
            if isinstance(cond.operand, Ref) and cond.operand.name.startswith("thresholds."):
                units[cond.operand.name] = CONTEXT_FIELDS[cond.field].unit
    return units


Values = Mapping[str, object]
Test = Callable[[Values], bool]


def _compile_condition(condition: Condition, policy: Policy) -> Test:
    """One condition as a function of the context values, with the same meaning as `holds`.

    A threshold is looked up once here rather than on every request; a reference to another
    context field is still read per request.
    """
    name, op, operand = condition.field, condition.op, condition.operand
    if op in ("in", "not_in"):
        assert isinstance(operand, tuple)
        members = operand
        if op == "in":
            return lambda values: values[name] in members
        return lambda values: values[name] not in members
    if isinstance(operand, Ref) and not operand.name.startswith("thresholds."):
        other = operand.name

        def against_field(values: Values) -> bool:
            return _compare(op, values[name], values[other])

        return against_field
    right = _resolve(operand, {}, policy)
    if op == "==":
        return lambda values: values[name] == right
    if op == "!=":
        return lambda values: values[name] != right
    if right is None:  # an empty operand satisfies no comparison
        return lambda values: False
    assert isinstance(right, float | int)
    bound, ordering = right, _ORDERINGS[op]

    def ordered(values: Values) -> bool:
        left = values[name]
        return left is not None and bool(ordering(left, bound))

    return ordered


_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare(op: str, left: object, right: object) -> bool:
    """`left op right` as `holds` reads it (an empty side satisfies no ordering)."""
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if left is None or right is None:
        return False
    return bool(_ORDERINGS[op](left, right))


Parts = tuple[tuple[str, str | None], ...]


def _parse(template: str) -> Parts:
    """A template as (literal, placeholder) pairs, as `render_template` reads it."""
    return tuple((literal, name) for literal, name, _, _ in string.Formatter().parse(template))


def _render(parts: Parts, words: Mapping[str, str]) -> str:
    """Fill a parsed template and collapse its whitespace (templates are folded YAML)."""
    text = "".join(literal if name is None else literal + words[name] for literal, name in parts)
    return " ".join(text.split())


class _CompiledRule:
    """A rule with its tests compiled and its reason and customer message parsed."""

    __slots__ = ("message", "placeholders", "reason", "rule", "tests")

    def __init__(self, rule: Rule, policy: Policy) -> None:
        self.rule = rule
        self.tests: tuple[Test, ...] = tuple(_compile_condition(c, policy) for c in rule.conditions)
        self.reason = _parse(rule.reason)
        self.message = _parse(rule.customer_message or policy.messages[rule.action])
        names = [n for _, n in (*self.reason, *self.message) if n is not None]
        self.placeholders: tuple[str, ...] = tuple(dict.fromkeys(names))


class CompiledPolicy:
    """A policy prepared for deciding one request at a time; see `compile_policy`.

    Gives exactly the decisions, reasons and messages `decide` always gave: the same first
    matching rule, and each placeholder written the same way. Only the placeholders of the
    rule that fired are written, and the threshold words, which never change, once.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.bands: tuple[tuple[float, str], ...] = tuple((b.upper, b.name) for b in policy.bands)
        self.last_band = policy.bands[-1].name
        self.rules = tuple(_CompiledRule(r, policy) for r in policy.rules)
        self.default = _CompiledRule(policy.default, policy)
        units = _threshold_units(policy)
        self.threshold_words: dict[str, str] = {
            f"thresholds.{name}": format_value(units.get(f"thresholds.{name}", Unit.TEXT), value)
            for name, value in policy.thresholds.items()
        }

    def band_of(self, score: float) -> str:
        """The name of the band the abuse score falls in (as `Policy.band_of`)."""
        for upper, name in self.bands:
            if score < upper:
                return name
        return self.last_band

    def first_match(self, values: Values) -> _CompiledRule:
        """The first rule whose conditions all hold, or the default (as `first_match`)."""
        for compiled in self.rules:
            for test in compiled.tests:
                if not test(values):
                    break
            else:
                return compiled
        return self.default

    def words(
        self,
        rule: _CompiledRule,
        values: Values,
        offered_share: float | None,
        offered_amount: float | None,
    ) -> dict[str, str]:
        """The placeholders `rule` uses, written for people."""
        words: dict[str, str] = {}
        for name in rule.placeholders:
            if name in self.threshold_words:
                words[name] = self.threshold_words[name]
            elif name == "offered_share":
                words[name] = format_value(Unit.SCORE, offered_share)
            elif name == "offered_amount":
                words[name] = format_value(Unit.MONEY, offered_amount)
            else:
                words[name] = format_value(CONTEXT_FIELDS[name].unit, values[name])
        return words

    def decide(
        self,
        context: RequestContext,
        scores: Scores,
        tiers: Tiers,
        templates: ReasonTemplates = EMPTY_TEMPLATES,
        top_reasons: int = 3,
    ) -> Decision:
        """Decide one request (see `decide`)."""
        tier = resolve_tier(scores, tiers)
        decision = self.decide_fields(dict(context), scores.abuse_score, tier, tiers)
        if not scores.contributions:
            return decision
        explained = explain(scores.contributions, templates, top=top_reasons)
        return decision._replace(reasons=tuple(without_repeats(decision.reasons, explained)))

    def decide_fields(
        self, fields: Mapping[str, Any], abuse_score: float, tier: Tier, tiers: Tiers
    ) -> Decision:
        """Decide from a request context's fields (valid, see `request_values`), its abuse
        score and its tier: the decision with the rule's reason alone."""
        policy = self.policy
        band = self.band_of(abuse_score)
        values = request_values(fields, abuse_score, band, tier)
        compiled = self.first_match(values)
        rule = compiled.rule
        share: float | None = None
        amount: float | None = None
        if rule.action == Action.PARTIAL_REFUND_OFFER:
            assert policy.partial_offer is not None  # validation requires it
            spec = policy.partial_offer
            requested = fields["amount_requested"]
            share = partial_offer_share(
                requested,
                return_shipping_cost(spec, fields["category"]),
                abuse_score,
                spec,
            )
            amount = round_like_numpy(share * requested, 2)
        words = self.words(compiled, values, share, amount)
        return Decision(
            action=rule.action,
            rule_id=rule.id,
            reasons=(_render(compiled.reason, words),),
            customer_message=_render(compiled.message, words),
            abuse_score=abuse_score,
            abuse_band=band,
            tier=tier.name,
            offered_share=share,
            offered_amount=amount,
            policy_name=policy.name,
            policy_version=policy.version,
            policy_hash=policy.content_hash,
            tiers_version=tiers.version,
            tiers_hash=tiers.content_hash,
        )


_COMPILED: dict[int, tuple[Policy, CompiledPolicy]] = {}
_COMPILED_LIMIT = 64
_COMPILING = threading.Lock()


def compile_policy(policy: Policy) -> CompiledPolicy:
    """The policy prepared for `decide`, made once per policy object and then remembered.

    A `Policy` is frozen, so what is prepared from it stays right. The memory holds the policy
    itself, so its id cannot be taken by another object while remembered; a tuner making many
    policies starts it afresh now and then.
    """
    found = _COMPILED.get(id(policy))
    if found is not None and found[0] is policy:
        return found[1]
    compiled = CompiledPolicy(policy)
    with _COMPILING:
        if len(_COMPILED) >= _COMPILED_LIMIT:
            _COMPILED.clear()
        _COMPILED[id(policy)] = (policy, compiled)
    return compiled


def decide(
    context: RequestContext,
    scores: Scores,
    policy: Policy,
    tiers: Tiers,
    templates: ReasonTemplates = EMPTY_TEMPLATES,
    top_reasons: int = 3,
) -> Decision:
    """Decide one request: the action, the rule that fired, reasons and the customer's message.

    Pure: the same inputs always give the same decision, and nothing is read or written.
    `templates` (see `policy.reasons.load_reason_templates`) turn the score's top contributions
    into reviewer sentences; without them each feature is written from its description.
    """
    return compile_policy(policy).decide(context, scores, tiers, templates, top_reasons)


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
    return {
        "order_stage": texts("order_stage"),
        "order_amount": numbers("order_amount"),
        "amount_requested": amount,
        "category": category,
        "non_returnable": np.isin(category, list(NON_RETURNABLE_CATEGORIES)),
        "reason": texts("reason"),
        "reason_detail": texts("reason_detail"),
        "refund_type": texts("refund_type"),
        "photo_count": numbers("photo_count"),
        "days_since_delivery": numbers("days_since_delivery"),
        "abuse_score": score,
        "abuse_band": band_names(score, policy),
        "tier": tier_names,
        "tier.refund_before_return_allowed": np.array(
            [t.refund_before_return_allowed for t in tier_of], dtype=bool
        ),
        "tier.auto_approve_limit": np.array([t.auto_approve_limit for t in tier_of], dtype=float),
        "tier.max_outstanding_unreturned": np.array(
            [t.max_outstanding_unreturned for t in tier_of], dtype=float
        ),
        "outstanding_unreturned_value": outstanding,
        "unreturned_after_request": outstanding + amount,
        "watchlisted": column("watchlisted").to_numpy(dtype=bool),
        "linked_abusive_accounts": numbers("linked_abusive_accounts"),
        "customer_confirmed_abusive_refunds": numbers("customer_confirmed_abusive_refunds"),
    }


def condition_mask(
    condition: Condition, arrays: Mapping[str, np.ndarray], policy: Policy
) -> np.ndarray:
    """Where one condition holds, over all rows at once (same semantics as `holds`)."""
    left = arrays[condition.field]
    op, operand = condition.op, condition.operand
    if op in ("in", "not_in"):
        assert isinstance(operand, tuple)
        inside = np.isin(left, np.asarray(operand, dtype=object))
        return inside if op == "in" else ~inside
    numeric = CONTEXT_FIELDS[condition.field].kind == FieldKind.NUMBER
    if operand is None:
        empty = np.isnan(left)
        return empty if op == "==" else ~empty
    right: Any
    if isinstance(operand, Ref):
        if operand.name.startswith("thresholds."):
            right = policy.thresholds[operand.name.removeprefix("thresholds.")]
        else:
            right = arrays[operand.name]
    else:
        right = operand
    with np.errstate(invalid="ignore"):
        if op == "==":
            return np.asarray(left == right, dtype=bool)
        if op == "!=":
            return np.asarray(left != right, dtype=bool)
        assert numeric
        # NaN compares false, which is the scalar path's "empty satisfies no comparison".
        if op == "<":
            return np.asarray(left < right)
        if op == "<=":
            return np.asarray(left <= right)
        if op == ">":
            return np.asarray(left > right)
        return np.asarray(left >= right)


def band_names(score: np.ndarray, policy: Policy) -> np.ndarray:
    """The policy's band name for each abuse score."""
    uppers = np.array([b.upper for b in policy.bands])
    idx = np.minimum(np.searchsorted(uppers, score, side="right"), len(uppers) - 1)
    return np.asarray([b.name for b in policy.bands], dtype=object)[idx]


def decide_frame(frame: pd.DataFrame, policy: Policy, tiers: Tiers) -> pd.DataFrame:
    """Decide every row of a table of scored requests; same decisions as `decide`, vectorised.

    Returns a frame on the same index with `action`, `rule_id`, `abuse_band`, `tier`,
    `offered_share` and `offered_amount` (NaN unless the action is a partial offer).
    """
    return decide_arrays(context_arrays(frame, policy, tiers), policy, frame.index)


def decide_arrays(
    arrays: Mapping[str, np.ndarray], policy: Policy, index: pd.Index | None = None
) -> pd.DataFrame:
    """Decide rows given as context arrays (see `context_arrays`); bands follow `policy`."""
    arrays = {**arrays, "abuse_band": band_names(arrays["abuse_score"], policy)}
    n = len(arrays["abuse_score"])
    action = np.full(n, policy.default.action.value, dtype=object)
    rule_id = np.full(n, policy.default.id, dtype=object)
    open_rows = np.ones(n, dtype=bool)
    for rule in policy.rules:
        mask = open_rows.copy()
        for cond in rule.conditions:
            mask &= condition_mask(cond, arrays, policy)
        action[mask] = rule.action.value
        rule_id[mask] = rule.id
        open_rows &= ~mask
    share = np.full(n, np.nan)
    partial = action == Action.PARTIAL_REFUND_OFFER.value
    if partial.any():
        assert policy.partial_offer is not None
        spec = policy.partial_offer
        shipping = np.array(
            [return_shipping_cost(spec, str(c)) for c in arrays["category"][partial]]
        )
        share[partial] = partial_offer_share(
            arrays["amount_requested"][partial], shipping, arrays["abuse_score"][partial], spec
        )
    amount = np.round(share * arrays["amount_requested"], 2)
    return pd.DataFrame(
        {
            "action": action,
            "rule_id": rule_id,
            "abuse_band": arrays["abuse_band"],
            "tier": arrays["tier"],
            "offered_share": share,
            "offered_amount": amount,
        },
        index=index,
    )


# --- checking a policy's direction ---------------------------------------------------------------

LENIENCE: dict[Action, int] = {
    Action.AUTO_APPROVE: 0,
    Action.REFUND_BEFORE_RETURN: 1,
    Action.PARTIAL_REFUND_OFFER: 2,
    Action.STANDARD_RETURN: 3,
    Action.MANUAL_REVIEW: 4,
}
"""Actions from most lenient (0) to least: a riskier request should never move up this list."""


def _probe_contexts(policy: Policy, tiers: Tiers, n: int, seed: int) -> pd.DataFrame:
    """Requests spread over every enum value, tier, and the money boundaries the rules and the
    tiers draw (each boundary, and a cent either side), drawn at random with a fixed seed."""
    rng = np.random.default_rng(seed)
    edges: set[float] = {5.0, 50.0, 150.0, 500.0, 2000.0}
    for rule in policy.rules:
        for cond in rule.conditions:
            if CONTEXT_FIELDS[cond.field].unit != Unit.MONEY:
                continue
            operand = cond.operand
            if isinstance(operand, Ref) and operand.name.startswith("thresholds."):
                operand = policy.thresholds[operand.name.removeprefix("thresholds.")]
            if isinstance(operand, float):
                edges.add(operand)
    for tier in tiers.tiers:
        edges.update({tier.auto_approve_limit, tier.max_outstanding_unreturned})
    money = np.array(sorted({round(max(e + d, 0.01), 2) for e in edges for d in (-0.01, 0, 0.01)}))
    outstanding = np.concatenate([[0.0], money])
    details = list(REASON_DETAILS)
    frame = pd.DataFrame(
        {
            "order_stage": rng.choice(ORDER_STAGES, n),
            "category": rng.choice(CATEGORIES, n),
            "reason_detail": rng.choice(details, n),
            "refund_type": rng.choice(REFUND_TYPES, n),
            "photo_count": rng.integers(0, 3, n),
            "days_since_delivery": rng.choice([np.nan, 0.5, 3.0, 30.0], n),
            "outstanding_unreturned_value": rng.choice(outstanding, n),
            "watchlisted": rng.random(n) < 0.2,
            "linked_abusive_accounts": rng.choice([0, 0, 1, 3], n),
            "customer_confirmed_abusive_refunds": rng.choice([0, 0, 1, 3], n),
            "tier": rng.choice(np.asarray(tiers.names, dtype=object), n),
            "amount_requested": rng.choice(money, n),
        }
    )
    frame["reason"] = frame["reason_detail"].map(REASON_DETAILS)
    frame["order_amount"] = frame["amount_requested"]
    frame["abuse_score"] = 0.0
    return frame


def lenience_inversions(
    policy: Policy, tiers: Tiers, samples: int = 4000, seed: int = 0, limit: int = 5
) -> list[str]:
    """Warnings for rules that send a riskier band to a more lenient action than a safer band
    gets for the same request, each naming the two rules (at most `limit`, most common first).

    The same requests are decided at scores spread through every band (each band's floor,
    middle and top); a riskier score that gets a more lenient action is an inversion. It is a
    search over requests at the rules' and tiers' boundaries, not a proof: silence means none
    was found.
    """
    frame = _probe_contexts(policy, tiers, samples, seed)
    arrays = context_arrays(frame, policy, tiers)
    points = sorted(
        {
            s
            for b in policy.bands
            for s in (b.lower, (b.lower + b.upper) / 2, np.nextafter(b.upper, b.lower))
        }
    )
    rank = {a.value: r for a, r in LENIENCE.items()}
    decided = []
    for score in points:
        out = decide_arrays({**arrays, "abuse_score": np.full(len(frame), score)}, policy)
        decided.append(
            (
                out["abuse_band"].to_numpy(),
                out["action"].map(rank).to_numpy(),
                out["action"].to_numpy(),
                out["rule_id"].to_numpy(),
            )
        )
    found: dict[tuple[str, str, str, str], int] = {}
    for i, (band_lo, rank_lo, action_lo, rule_lo) in enumerate(decided):
        for band_hi, rank_hi, action_hi, rule_hi in decided[i + 1 :]:
            worse = (rank_hi < rank_lo) & (band_hi != band_lo)
            for k in np.flatnonzero(worse):
                key = (
                    f"rule '{rule_hi[k]}' sends band '{band_hi[k]}' to {action_hi[k]}",
                    f"rule '{rule_lo[k]}' sends the safer band '{band_lo[k]}' to {action_lo[k]}",
                    str(frame["tier"].iloc[k]),
                    str(frame["order_stage"].iloc[k]),
                )
                found[key] = found.get(key, 0) + 1
    ranked = sorted(found.items(), key=lambda item: -item[1])
    pairs: dict[tuple[str, str], tuple[str, str]] = {}
    for (riskier, safer, tier, stage), _ in ranked:
        pairs.setdefault((riskier, safer), (tier, stage))
    return [
        f"{riskier}, more lenient than {safer} for the same request (e.g. order stage "
        f"{stage}, tier {tier})"
        for (riskier, safer), (tier, stage) in itertools.islice(pairs.items(), limit)
    ]
