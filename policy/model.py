"""The policy file and the credit-tiers file: their models, loading and complete validation.

A policy maps a refund request's context, its abuse score and the customer's credit tier to one
action. It is a YAML file of ordered rules (first match wins) and a default; score bands and
business thresholds are named once at the top and referred to by name in the rules. Loading
checks everything a shop could get wrong and refuses the file with every problem found, each
naming the rule and field it is about; a policy that loads is a policy that can be evaluated.

The condition language is deliberately small, so it can be validated completely and analysed
(for unreachable rules) without ever calling `eval`. A rule's `when` is a mapping of context
field to test, and every test must hold:

    field: value                 equality (a string, number, boolean, or null)
    field: [a, b]                membership
    field: {in: [a, b]}          membership; also `not_in`
    field: {"<=": operand}       comparisons `==`, `!=`, `<`, `<=`, `>`, `>=`; several may share
                                 one mapping, e.g. {">=": 0.2, "<": 0.5}

A numeric operand is a number, `thresholds.NAME` (a named threshold of the file), or the name of
another numeric context field such as `tier.auto_approve_limit`. A comparison with an empty
value (say `days_since_delivery` of an order that was not delivered) is false.

Example, in full:

    name: default
    version: 1
    bands:                 # abuse score ranges [from, to); together they cover [0, 1]
      low: [0.0, 0.1]
      high: [0.1, 1.0]
    thresholds:
      review_amount: 1000
    messages:
      manual_review: "We are looking at your request and will answer within a day."
      standard_return: "Please send the item back; we refund it once it arrives."
    rules:
      - id: high_amount
        when: {amount_requested: {">=": thresholds.review_amount}}
        action: manual_review
        reason: "Asks back {amount_requested}, at or over the review limit."
    default:
      action: standard_return
      reason: "No rule fired: the standard return process applies."
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.schema import CATEGORIES
from policy.conditions import Band, Compiler, Rule, band_index
from policy.documents import (
    PartialOfferSpec,
    PolicyDocument,
    PolicyError,
    content_hash,
    read_yaml,
    validate_document,
)
from policy.reachability import find_unreachable
from policy.templates import MESSAGE_FIELDS, check_template, reason_fields
from policy.tiers import Tiers
from policy.vocabulary import ACTIONS, IDENTIFIER, Action

POLICY_DIR = Path(__file__).resolve().parent
DEFAULT_POLICY_PATH = POLICY_DIR / "default.yaml"
"""The shipped default policy."""
HANDWRITTEN_POLICY_PATH = POLICY_DIR / "handwritten.yaml"
"""A shop's typical hand-written rules, kept as a baseline to compare policies against."""


@dataclass(frozen=True)
class Policy:
    """A validated policy, ready to evaluate."""

    name: str
    version: int
    description: str
    bands: tuple[Band, ...]
    thresholds: Mapping[str, float]
    rules: tuple[Rule, ...]
    default: Rule
    messages: Mapping[Action, str]
    partial_offer: PartialOfferSpec | None
    content_hash: str
    document: PolicyDocument = field(repr=False)
    source: str = "<policy>"

    @property
    def all_rules(self) -> tuple[Rule, ...]:
        """The rules in order, then the default."""
        return (*self.rules, self.default)

    def rule(self, rule_id: str) -> Rule:
        """The rule called `rule_id` (the default is `default`)."""
        for r in self.all_rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    @functools.cached_property
    def band_uppers(self) -> tuple[float, ...]:
        """Each band's upper end, in order (see `band_index`)."""
        return tuple(b.upper for b in self.bands)

    def band_of(self, score: float) -> str:
        """The name of the band the abuse score falls in."""
        return self.bands[band_index(self.band_uppers, score)].name

    def band_names(self, scores: np.ndarray) -> np.ndarray:
        """The name of the band each abuse score falls in."""
        names = np.asarray([b.name for b in self.bands], dtype=object)
        return names[band_index(self.band_uppers, scores)]

    @property
    def label(self) -> str:
        """Name, version and hash, as printed beside figures."""
        return f"{self.name} v{self.version} ({self.content_hash})"


def load_policy(path: Path | str, tiers: Tiers | None = None) -> Policy:
    """Read and validate a policy file; with `tiers`, also check the tier names it uses."""
    path = Path(path)
    return parse_policy(read_yaml(path), source=str(path), tiers=tiers)


def parse_policy(raw: Any, source: str = "<policy>", tiers: Tiers | None = None) -> Policy:
    """Validate a policy already read from YAML (a mapping) and compile it."""
    document: PolicyDocument = validate_document(PolicyDocument, raw, source)
    return build_policy(document, source=source, tiers=tiers)


# --- compiling and validating a policy -----------------------------------------------------------


def build_policy(
    document: PolicyDocument, source: str = "<policy>", tiers: Tiers | None = None
) -> Policy:
    """Validate a parsed policy document completely and compile it; raise PolicyError if bad."""
    problems: list[str] = []
    bands = _check_bands(document, problems)
    for name, value in document.thresholds.items():
        if not IDENTIFIER.match(name):
            problems.append(f"threshold '{name}': names are snake_case")
        if not math.isfinite(value):
            problems.append(f"threshold '{name}': {value} is not a finite number")
    rules = _compile_rules(document, tiers, problems)
    default = _compile_default(document, problems)
    problems.extend(_message_problems(document, (*rules, default)))
    if Action.PARTIAL_REFUND_OFFER in {r.action for r in (*rules, default)}:
        problems.extend(_partial_offer_problems(document.partial_offer))
    problems.extend(_tuning_problems(document, bands))
    if not problems:
        problems.extend(find_unreachable(rules, bands, document.thresholds))
    if problems:
        raise PolicyError(source, problems)
    return Policy(
        name=document.name,
        version=document.version,
        description=document.description,
        bands=bands,
        thresholds=dict(document.thresholds),
        rules=tuple(rules),
        default=default,
        messages=dict(document.messages),
        partial_offer=document.partial_offer,
        content_hash=content_hash(document),
        document=document,
        source=source,
    )


def _check_bands(document: PolicyDocument, problems: list[str]) -> tuple[Band, ...]:
    bands = []
    for name, (lower, upper) in document.bands.items():
        if not IDENTIFIER.match(name):
            problems.append(f"band '{name}': names are snake_case")
        if not 0.0 <= lower < upper <= 1.0:
            problems.append(f"band '{name}': [{lower}, {upper}) must have 0 <= from < to <= 1")
        bands.append(Band(name, float(lower), float(upper)))
    bands.sort(key=lambda b: (b.lower, b.upper))
    if bands and bands[0].lower != 0.0:
        problems.append(f"band '{bands[0].name}': the bands must start at 0, not {bands[0].lower}")
    if bands and bands[-1].upper != 1.0:
        problems.append(f"band '{bands[-1].name}': the bands must end at 1, not {bands[-1].upper}")
    for before, after in itertools.pairwise(bands):
        if after.lower < before.upper:
            problems.append(
                f"band '{after.name}' [{after.lower}, {after.upper}) overlaps band "
                f"'{before.name}' [{before.lower}, {before.upper})"
            )
        elif after.lower > before.upper:
            problems.append(
                f"bands leave a gap: '{before.name}' ends at {before.upper} but "
                f"'{after.name}' starts at {after.lower}"
            )
    return tuple(bands)


def _compile_rules(
    document: PolicyDocument, tiers: Tiers | None, problems: list[str]
) -> list[Rule]:
    """The file's rules compiled, in order; the compiler's problems after the rules' own."""
    compiler = Compiler(document, tiers)
    rules: list[Rule] = []
    seen: set[str] = set()
    allowed_reason = reason_fields(document)
    for spec in document.rules:
        if spec.id in seen or spec.id == "default":
            problems.append(f"rule '{spec.id}', field 'id': used more than once (or reserved)")
        seen.add(spec.id)
        conditions = compiler.compile(spec.id, spec.when)
        check_template(problems, f"rule '{spec.id}', field 'reason'", spec.reason, allowed_reason)
        if spec.customer_message is not None:
            check_template(
                problems,
                f"rule '{spec.id}', field 'customer_message'",
                spec.customer_message,
                MESSAGE_FIELDS,
            )
        rules.append(
            Rule(
                id=spec.id,
                action=spec.action,
                reason=spec.reason,
                conditions=conditions,
                description=spec.description,
                customer_message=spec.customer_message,
            )
        )
    problems.extend(compiler.problems)
    return rules


def _compile_default(document: PolicyDocument, problems: list[str]) -> Rule:
    """The default as a rule with id `default` and no conditions."""
    if document.default is None:
        problems.append(
            "field 'default': missing; a policy ends with a default action for requests no rule "
            "matches"
        )
        return Rule(id="default", action=Action.MANUAL_REVIEW, reason="-")
    check_template(
        problems, "default, field 'reason'", document.default.reason, reason_fields(document)
    )
    if document.default.customer_message is not None:
        check_template(
            problems,
            "default, field 'customer_message'",
            document.default.customer_message,
            MESSAGE_FIELDS,
        )
    return Rule(
        id="default",
        action=document.default.action,
        reason=document.default.reason,
        customer_message=document.default.customer_message,
    )


def _message_problems(document: PolicyDocument, rules: tuple[Rule, ...]) -> list[str]:
    """The messages are valid templates, and every rule has a message for its customer."""
    problems: list[str] = []
    for action in ACTIONS:
        if action in document.messages:
            check_template(
                problems, f"field 'messages.{action}'", document.messages[action], MESSAGE_FIELDS
            )
    for r in rules:
        if r.customer_message is None and r.action not in document.messages:
            where = "default" if r.id == "default" else f"rule '{r.id}'"
            problems.append(
                f"{where}, field 'action': no customer message for {r.action.value}; add it "
                "under 'messages' or give the rule a 'customer_message'"
            )
            break
    return problems


def _partial_offer_problems(offer: PartialOfferSpec | None) -> list[str]:
    """A policy that offers partial refunds says how the share is computed, consistently."""
    if offer is None:
        return [
            "field 'partial_offer': missing, but a rule offers a partial refund; say how the "
            "offered share is computed"
        ]
    problems: list[str] = []
    if offer.min_share > offer.max_share:
        problems.append(
            f"field 'partial_offer.min_share': {offer.min_share} is above max_share "
            f"{offer.max_share}"
        )
    for category in offer.return_shipping_cost_by_category:
        if category not in CATEGORIES:
            problems.append(
                f"field 'partial_offer.return_shipping_cost_by_category': unknown "
                f"category {category!r}"
            )
    return problems


def _tuning_problems(document: PolicyDocument, bands: tuple[Band, ...]) -> list[str]:
    """Each tuning range names a threshold or a band's movable lower cut-off, and holds it."""
    problems: list[str] = []
    for name, (low, high) in document.tuning.items():
        where = f"field 'tuning.{name}'"
        if name in document.thresholds:
            current = document.thresholds[name]
        elif name in document.bands and any(b.name == name for b in bands[1:]):
            current = document.bands[name][0]
        else:
            problems.append(f"{where}: not a threshold, nor a band with a lower cut-off to move")
            continue
        if not low <= current <= high:
            problems.append(f"{where}: the range [{low}, {high}] must hold the value {current}")
    return problems
