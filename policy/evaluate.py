"""How a policy decides: one definition, seen one request at a time or a whole frame at once.

A policy is prepared once (`compile_policy`): each condition becomes one function of the
context values (`policy.conditions.as_test`) that holds for a request's plain values and for a
frame's arrays alike, templates are parsed, threshold words are written. From that one
preparation come two views:

- `decide` (and `CompiledPolicy.decide_fields`) decides one request, as the scoring service
  does at request time: the first rule whose tests all hold, its reason and customer message;
- `decide_frame` (and `decide_arrays`) decides every row of a table of past requests, as the
  simulator and the tuner do: each rule's tests over all rows, the first rule taking each row.

The band of a score, the partial offer and its amount are likewise one function each, for a
value or an array. A property test holds the two views equal on generated requests. Neither
reads a file, a clock or a random number.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from policy.conditions import Ref, Rule, Test, Values, as_test
from policy.context import (
    RequestContext,
    Scores,
    context_arrays,
    request_values,
    resolve_tier,
)
from policy.documents import PartialOfferSpec
from policy.model import Policy
from policy.reasons import EMPTY_TEMPLATES, ReasonTemplates, explain, without_repeats
from policy.templates import fill, template_pieces
from policy.tiers import Tier, Tiers
from policy.vocabulary import CONTEXT_FIELDS, Action, Unit, format_value


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


def offered_amount(share: Any, requested: Any) -> Any:
    """The money a partial offer of `share` pays back, to the cent (scalars or arrays)."""
    if isinstance(share, float):
        return round_like_numpy(share * requested, 2)
    return np.round(share * requested, 2)


def _threshold_units(policy: Policy) -> dict[str, Unit]:
    """The unit a named threshold is written in: that of the fields it is compared with."""
    units: dict[str, Unit] = {}
    for rule in policy.rules:
        for cond in rule.conditions:
            if isinstance(cond.operand, Ref) and cond.operand.name.startswith("thresholds."):
                units[cond.operand.name] = CONTEXT_FIELDS[cond.field].unit
    return units


class _CompiledRule:
    """A rule with its tests compiled and its reason and customer message parsed."""

    __slots__ = ("message", "placeholders", "reason", "rule", "tests")

    def __init__(self, rule: Rule, policy: Policy) -> None:
        self.rule = rule
        self.tests: tuple[Test, ...] = tuple(as_test(c, policy.thresholds) for c in rule.conditions)
        self.reason = template_pieces(rule.reason)
        self.message = template_pieces(rule.customer_message or policy.messages[rule.action])
        names = [n for _, n in (*self.reason, *self.message) if n is not None]
        self.placeholders: tuple[str, ...] = tuple(dict.fromkeys(names))


class CompiledPolicy:
    """A policy prepared once for deciding; see `compile_policy`.

    One request: the first rule whose tests all hold (stopping at the first test that fails),
    then only the placeholders of that rule are written; the threshold words, which never
    change, are written once. A frame: the same tests over every row, each rule taking the
    rows no earlier rule took.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.rules = tuple(_CompiledRule(r, policy) for r in policy.rules)
        self.default = _CompiledRule(policy.default, policy)
        units = _threshold_units(policy)
        self.threshold_words: dict[str, str] = {
            f"thresholds.{name}": format_value(units.get(f"thresholds.{name}", Unit.TEXT), value)
            for name, value in policy.thresholds.items()
        }

    # --- one request

    def first_match(self, values: Values) -> _CompiledRule:
        """The first rule whose tests all hold for one request's values, or the default."""
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
        band = policy.band_of(abuse_score)
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
                requested, return_shipping_cost(spec, fields["category"]), abuse_score, spec
            )
            amount = offered_amount(share, requested)
        words = self.words(compiled, values, share, amount)
        return Decision(
            action=rule.action,
            rule_id=rule.id,
            reasons=(fill(compiled.reason, words),),
            customer_message=fill(compiled.message, words),
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

    # --- a frame of requests

    def match_rows(self, arrays: Values) -> tuple[np.ndarray, np.ndarray]:
        """The action and rule id of every row: each rule takes the rows whose tests all hold
        that no earlier rule took; the default takes the rest."""
        n = len(arrays["abuse_score"])
        action = np.full(n, self.default.rule.action.value, dtype=object)
        rule_id = np.full(n, self.default.rule.id, dtype=object)
        open_rows = np.ones(n, dtype=bool)
        with np.errstate(invalid="ignore"):
            for compiled in self.rules:
                taken = open_rows.copy()
                for test in compiled.tests:
                    taken &= np.asarray(test(arrays), dtype=bool)
                action[taken] = compiled.rule.action.value
                rule_id[taken] = compiled.rule.id
                open_rows &= ~taken
        return action, rule_id

    def decide_arrays(self, arrays: Values, index: pd.Index | None = None) -> pd.DataFrame:
        """Decide rows given as context arrays (see `decide_arrays`)."""
        policy = self.policy
        arrays = {**arrays, "abuse_band": policy.band_names(arrays["abuse_score"])}
        action, rule_id = self.match_rows(arrays)
        share = np.full(len(action), np.nan)
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
        return pd.DataFrame(
            {
                "action": action,
                "rule_id": rule_id,
                "abuse_band": arrays["abuse_band"],
                "tier": arrays["tier"],
                "offered_share": share,
                "offered_amount": offered_amount(share, arrays["amount_requested"]),
            },
            index=index,
        )


_COMPILING = threading.Lock()


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


def decide_frame(frame: pd.DataFrame, policy: Policy, tiers: Tiers) -> pd.DataFrame:
    """Decide every row of a table of scored requests; same decisions as `decide`, vectorised.

    Returns a frame on the same index with `action`, `rule_id`, `abuse_band`, `tier`,
    `offered_share` and `offered_amount` (NaN unless the action is a partial offer).
    """
    return decide_arrays(context_arrays(frame, policy, tiers), policy, frame.index)


def decide_arrays(arrays: Values, policy: Policy, index: pd.Index | None = None) -> pd.DataFrame:
    """Decide rows given as context arrays (see `context_arrays`); bands follow `policy`."""
    return compile_policy(policy).decide_arrays(arrays, index)
