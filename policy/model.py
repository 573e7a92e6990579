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
import hashlib
import itertools
import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from data.schema import (
    CATEGORIES,
    ORDER_STAGES,
    REASON_DETAILS,
    REASONS,
    REFUND_TYPES,
)
from refund_risk.errors import ConfigurationError, NotFoundError

POLICY_DIR = Path(__file__).resolve().parent
DEFAULT_POLICY_PATH = POLICY_DIR / "default.yaml"
"""The shipped default policy."""
HANDWRITTEN_POLICY_PATH = POLICY_DIR / "handwritten.yaml"
"""A shop's typical hand-written rules, kept as a baseline to compare policies against."""
DEFAULT_TIERS_PATH = POLICY_DIR / "tiers.yaml"
"""The shipped credit tiers."""


class PolicyError(ConfigurationError):
    """A policy or tiers file is invalid; `problems` lists every problem, one sentence each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = f"{source}: {self.problems[0]}"
        else:
            text = f"{source} has {len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


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
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")


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


# --- file models ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Strict):
    """One rule as written in the file."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Short unique name, snake_case.")
    description: str = ""
    when: dict[str, Any] = Field(default_factory=dict)
    action: Action
    reason: str = Field(min_length=1, description="Why, for the reviewer; may use {field}.")
    customer_message: str | None = None


class DefaultSpec(_Strict):
    """What happens when no rule fires."""

    action: Action
    reason: str = Field(min_length=1)
    customer_message: str | None = None


class PartialOfferSpec(_Strict):
    """How the share of a partial refund offer is computed.

    Sending an item back costs the shop the return shipping and most of the item's value (a
    returned item with a defect resells for `resale_recovery_share` of its price at best), so
    the offer that costs the same as a return is `1 - resale_recovery_share + shipping / value`.
    The offer shrinks as the abuse score rises (`risk_discount` times the score), and stays
    within [`min_share`, `max_share`].
    """

    resale_recovery_share: float = Field(ge=0.0, le=1.0)
    return_shipping_cost: float = Field(ge=0.0)
    return_shipping_cost_by_category: dict[str, float] = Field(default_factory=dict)
    risk_discount: float = Field(ge=0.0, le=1.0)
    min_share: float = Field(ge=0.0, le=1.0)
    max_share: float = Field(gt=0.0, le=1.0)


class PolicyDocument(_Strict):
    """The policy file, as written."""

    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    description: str = ""
    bands: dict[str, tuple[float, float]] = Field(min_length=1)
    thresholds: dict[str, float] = Field(default_factory=dict)
    partial_offer: PartialOfferSpec | None = None
    messages: dict[Action, str] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)
    default: DefaultSpec | None = None
    tuning: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Ranges the tuner may move a threshold (by name) or a band's lower "
        "cut-off (by band name) within; [x, x] holds it fixed.",
    )


class Tier(_Strict):
    """A credit tier and its privileges."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    max_loss_probability: float = Field(
        gt=0.0,
        le=1.0,
        description="Upper bound of the predicted 90-day loss probability, used only with a "
        "tier model that stored no cut-offs of its own (one fitted at the `share`s replaces it).",
    )
    share: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Share of the training population's scored customers the tier holds; "
        "training fits each tier's upper bound at these score percentiles, best tier first.",
    )
    refund_before_return_allowed: bool
    auto_approve_limit: float = Field(ge=0.0)
    max_outstanding_unreturned: float = Field(ge=0.0)

    @property
    def has_privileges(self) -> bool:
        """Whether the tier gets anything beyond the standard process."""
        return (
            self.refund_before_return_allowed
            or self.auto_approve_limit > 0
            or self.max_outstanding_unreturned > 0
        )


class TiersDocument(_Strict):
    """The tiers file, as written."""

    version: int = Field(ge=1)
    description: str = ""
    default_tier: str
    tiers: list[Tier] = Field(min_length=1)


# --- compiled, ready-to-evaluate forms ------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A reference to a named threshold (`thresholds.NAME`) or to another numeric context field."""

    name: str

    def __str__(self) -> str:
        return self.name


Literal = str | float | bool | None
Operand = Literal | Ref | tuple[Literal, ...]


@dataclass(frozen=True)
class Condition:
    """One test of one context field."""

    field: str
    op: str
    operand: Operand

    def describe(self) -> str:
        """The test as a person would write it."""
        if isinstance(self.operand, tuple):
            return f"{self.field} {self.op.replace('_', ' ')} [{', '.join(map(str, self.operand))}]"
        value = "null" if self.operand is None else self.operand
        return f"{self.field} {self.op} {value}"


@dataclass(frozen=True)
class Rule:
    """A compiled rule; the default is a rule with id `default` and no conditions."""

    id: str
    action: Action
    reason: str
    conditions: tuple[Condition, ...] = ()
    description: str = ""
    customer_message: str | None = None


@dataclass(frozen=True)
class Band:
    """A named abuse-score range [lower, upper); the last band also holds `upper`."""

    name: str
    lower: float
    upper: float


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

    def band_of(self, score: float) -> str:
        """The name of the band the abuse score falls in."""
        for band in self.bands:
            if score < band.upper:
                return band.name
        return self.bands[-1].name

    @property
    def label(self) -> str:
        """Name, version and hash, as printed beside figures."""
        return f"{self.name} v{self.version} ({self.content_hash})"


@dataclass(frozen=True)
class Tiers:
    """Validated credit tiers, best first."""

    tiers: tuple[Tier, ...]
    default: Tier
    version: int
    content_hash: str
    source: str = "<tiers>"

    @property
    def names(self) -> tuple[str, ...]:
        """Tier names, best first."""
        return tuple(t.name for t in self.tiers)

    @property
    def shares(self) -> tuple[float, ...] | None:
        """Each tier's share of the scored customers, best first; None when the file has none."""
        if self.tiers[0].share is None:
            return None
        return tuple(float(t.share or 0.0) for t in self.tiers)

    def get(self, name: str) -> Tier:
        """The tier called `name`."""
        for t in self.tiers:
            if t.name == name:
                return t
        raise PolicyError(self.source, [f"unknown tier {name!r}; tiers are {list(self.names)}"])


def assign_tier(score: float | None, tiers: Tiers) -> Tier:
    """The tier of a customer whose predicted 90-day loss probability is `score`.

    The best tier whose `max_loss_probability` is at least the score; a customer without a
    score (new, or never scored) gets the default tier.
    """
    if score is None or math.isnan(score):
        return tiers.default
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"a loss probability must be in [0, 1], got {score}")
    for tier in tiers.tiers:
        if score <= tier.max_loss_probability:
            return tier
    return tiers.tiers[-1]


def with_bounds(tiers: Tiers, bounds: Mapping[str, float], source: str | None = None) -> Tiers:
    """The same tiers with other upper bounds (by tier name), validated as a tiers file is.

    How a tier model's fitted cut-offs are put in force: names absent from `bounds` keep the
    file's bound; bounds that do not rise from the best tier to the worst, or a worst tier that
    does not take every customer, are refused with the file's own messages.
    """
    raw = {
        "version": tiers.version,
        "default_tier": tiers.default.name,
        "tiers": [
            {
                **t.model_dump(mode="json"),
                "max_loss_probability": float(bounds.get(t.name, t.max_loss_probability)),
            }
            for t in tiers.tiers
        ],
    }
    return parse_tiers(raw, source=source or f"{tiers.source} (fitted cut-offs)")


# --- reading files -------------------------------------------------------------------------------


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(str(path), [f"not valid YAML{where}: {problem}"]) from None


def _content_hash(document: BaseModel) -> str:
    """Hash of the meaning of a file, not its layout: comments and key order do not count."""
    text = json.dumps(document.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _where(loc: tuple[int | str, ...], raw: Any) -> str:
    """Turn a pydantic error location into 'rule 'x', field 'y'' words."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rule_id: object = f"#{loc[1] + 1}"
        rules = raw.get("rules") if isinstance(raw, dict) else None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rule_id = rules[loc[1]].get("id", rule_id)
        rest = ".".join(str(p) for p in loc[2:]) or "rule"
        return f"rule '{rule_id}', field '{rest}'"
    if len(loc) >= 2 and loc[0] == "tiers" and isinstance(loc[1], int):
        tiers = raw.get("tiers") if isinstance(raw, dict) else None
        name: object = f"#{loc[1] + 1}"
        if isinstance(tiers, list) and loc[1] < len(tiers) and isinstance(tiers[loc[1]], dict):
            name = tiers[loc[1]].get("name", name)
        rest = ".".join(str(p) for p in loc[2:]) or "tier"
        return f"tier '{name}', field '{rest}'"
    if loc and loc[0] == "default":
        rest = ".".join(str(p) for p in loc[1:]) or "default"
        return f"default, field '{rest}'"
    return f"field '{'.'.join(str(p) for p in loc)}'"


def _parse(model: type[BaseModel], raw: Any, source: str) -> Any:
    if not isinstance(raw, dict):
        raise PolicyError(source, ["the file must be a YAML mapping of keys to values"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "missing"
            problems.append(f"{_where(tuple(err['loc']), raw)}: {msg}")
        raise PolicyError(source, problems) from None


def load_policy(path: Path | str, tiers: Tiers | None = None) -> Policy:
    """Read and validate a policy file; with `tiers`, also check the tier names it uses."""
    path = Path(path)
    return parse_policy(_read_yaml(path), source=str(path), tiers=tiers)


def parse_policy(raw: Any, source: str = "<policy>", tiers: Tiers | None = None) -> Policy:
    """Validate a policy already read from YAML (a mapping) and compile it."""
    document: PolicyDocument = _parse(PolicyDocument, raw, source)
    return build_policy(document, source=source, tiers=tiers)


def load_tiers(path: Path | str = DEFAULT_TIERS_PATH) -> Tiers:
    """Read and validate a credit tiers file."""
    path = Path(path)
    return parse_tiers(_read_yaml(path), source=str(path))


def parse_tiers(raw: Any, source: str = "<tiers>") -> Tiers:
    """Validate tiers already read from YAML (a mapping)."""
    document: TiersDocument = _parse(TiersDocument, raw, source)
    problems: list[str] = []
    tiers = document.tiers
    names = [t.name for t in tiers]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"tier '{name}' is defined more than once")
    for better, worse in itertools.pairwise(tiers):
        if worse.max_loss_probability <= better.max_loss_probability:
            problems.append(
                f"tier '{worse.name}', field 'max_loss_probability': "
                f"{worse.max_loss_probability} must be above the better tier "
                f"'{better.name}' ({better.max_loss_probability}); tiers go best to worst"
            )
        for privilege in ("auto_approve_limit", "max_outstanding_unreturned"):
            if getattr(worse, privilege) > getattr(better, privilege):
                problems.append(
                    f"tier '{worse.name}', field '{privilege}': {getattr(worse, privilege)} is "
                    f"more than the better tier '{better.name}' gets "
                    f"({getattr(better, privilege)})"
                )
        if worse.refund_before_return_allowed and not better.refund_before_return_allowed:
            problems.append(
                f"tier '{worse.name}', field 'refund_before_return_allowed': allowed, but not "
                f"for the better tier '{better.name}'"
            )
    given = [t.share for t in tiers if t.share is not None]
    if given and len(given) != len(tiers):
        missing = [t.name for t in tiers if t.share is None]
        problems.append(
            f"field 'share': every tier needs a share when one has it; missing for {missing}"
        )
    elif given and not math.isclose(sum(given), 1.0, abs_tol=1e-6):
        problems.append(
            f"field 'share': the tiers' shares must add up to 1 (every scored customer is in "
            f"one tier), they add up to {sum(given):g}"
        )
    if tiers[-1].max_loss_probability != 1.0:
        problems.append(
            f"tier '{tiers[-1].name}', field 'max_loss_probability': the worst tier must take "
            f"every customer (1.0), not {tiers[-1].max_loss_probability}"
        )
    default = next((t for t in tiers if t.name == document.default_tier), None)
    if default is None:
        problems.append(
            f"field 'default_tier': {document.default_tier!r} is not one of the tiers {names}"
        )
    else:
        if default.refund_before_return_allowed:
            problems.append(
                f"field 'default_tier': new customers' tier '{default.name}' must not allow "
                "refund before return"
            )
        if default is tiers[0] and len(tiers) > 1:
            problems.append(
                f"field 'default_tier': new customers cannot start in the best tier "
                f"'{default.name}'"
            )
    for tier in tiers:
        if tier.refund_before_return_allowed and tier.max_outstanding_unreturned <= 0:
            problems.append(
                f"tier '{tier.name}', field 'max_outstanding_unreturned': refund before return "
                "is allowed but the exposure limit is 0, so it can never be used"
            )
    if problems:
        raise PolicyError(source, problems)
    assert default is not None
    return Tiers(
        tiers=tuple(tiers),
        default=default,
        version=document.version,
        content_hash=_content_hash(document),
        source=source,
    )


# --- compiling and validating a policy -----------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _enum_values(name: str, bands: Sequence[str], tiers: Tiers | None) -> tuple[str, ...] | None:
    """Allowed values of an enum field; None when they cannot be known (tiers not given)."""
    if name == "abuse_band":
        return tuple(bands)
    if name == "tier":
        return tiers.names if tiers is not None else None
    return CONTEXT_FIELDS[name].values


class _Compiler:
    """Turns one rule's `when` mapping into conditions, collecting problems as it goes."""

    def __init__(self, document: PolicyDocument, tiers: Tiers | None) -> None:
        self.document = document
        self.tiers = tiers
        self.problems: list[str] = []

    def compile(self, rule_id: str, when: Mapping[str, Any]) -> tuple[Condition, ...]:
        conditions: list[Condition] = []
        for name, test in when.items():
            where = f"rule '{rule_id}', field '{name}'"
            spec = CONTEXT_FIELDS.get(str(name))
            if spec is None:
                self.problems.append(
                    f"{where}: unknown field; rules may test {', '.join(CONTEXT_FIELDS)}"
                )
                continue
            if isinstance(test, dict):
                if not test:
                    self.problems.append(f"{where}: an empty test")
                for op, operand in test.items():
                    cond = self._condition(where, spec, str(op), operand)
                    if cond is not None:
                        conditions.append(cond)
            elif isinstance(test, list):
                cond = self._condition(where, spec, "in", test)
                if cond is not None:
                    conditions.append(cond)
            else:
                cond = self._condition(where, spec, "==", test)
                if cond is not None:
                    conditions.append(cond)
        return tuple(conditions)

    def _condition(self, where: str, spec: ContextField, op: str, operand: Any) -> Condition | None:
        if op not in OPERATORS:
            self.problems.append(f"{where}: unknown test {op!r}; tests are {', '.join(OPERATORS)}")
            return None
        if op in ("in", "not_in"):
            if not isinstance(operand, list) or not operand:
                self.problems.append(f"{where}: '{op}' needs a non-empty list of values")
                return None
            values = [self._literal(where, spec, v) for v in operand]
            if any(v is _BAD for v in values):
                return None
            return Condition(spec.name, op, tuple(values))  # type: ignore[arg-type]
        if op in ORDERING_OPERATORS and spec.kind != FieldKind.NUMBER:
            self.problems.append(f"{where}: '{op}' compares numbers, but this is a {spec.kind}")
            return None
        if spec.kind == FieldKind.NUMBER and isinstance(operand, str):
            ref = self._reference(where, operand)
            return None if ref is None else Condition(spec.name, op, ref)
        if operand is None:
            if op in ORDERING_OPERATORS:
                self.problems.append(f"{where}: cannot compare with null")
                return None
            if not spec.nullable:
                self.problems.append(f"{where}: is never empty, so a test for null is pointless")
                return None
            return Condition(spec.name, op, None)
        value = self._literal(where, spec, operand)
        return None if value is _BAD else Condition(spec.name, op, value)  # type: ignore[arg-type]

    def _literal(self, where: str, spec: ContextField, value: Any) -> object:
        if spec.kind == FieldKind.NUMBER:
            if not _is_number(value) or not math.isfinite(float(value)):
                self.problems.append(f"{where}: {value!r} is not a number")
                return _BAD
            return float(value)
        if spec.kind == FieldKind.BOOL:
            if not isinstance(value, bool):
                self.problems.append(f"{where}: {value!r} is not true or false")
                return _BAD
            return value
        allowed = _enum_values(spec.name, list(self.document.bands), self.tiers)
        if not isinstance(value, str) or (allowed is not None and value not in allowed):
            known = f"; known values are {', '.join(allowed)}" if allowed is not None else ""
            self.problems.append(f"{where}: unknown value {value!r}{known}")
            return _BAD
        return value

    def _reference(self, where: str, name: str) -> Ref | None:
        if name.startswith("thresholds."):
            key = name.removeprefix("thresholds.")
            if key not in self.document.thresholds:
                known = ", ".join(self.document.thresholds) or "none"
                self.problems.append(
                    f"{where}: unknown threshold {key!r}; named thresholds are {known}"
                )
                return None
            return Ref(name)
        other = CONTEXT_FIELDS.get(name)
        if other is None or other.kind != FieldKind.NUMBER:
            self.problems.append(
                f"{where}: {name!r} is neither a number, `thresholds.NAME`, nor a numeric field"
            )
            return None
        return Ref(name)


_BAD = object()
"""Marks a literal that failed validation (its problem is already recorded)."""

_MESSAGE_FIELDS = frozenset({"amount_requested", "offered_amount", "offered_share"})
"""What a customer may be told: never a score, band or tier."""


def reason_fields(document: PolicyDocument) -> frozenset[str]:
    """Placeholders a rule's reason may use: context fields, offers and named thresholds."""
    return frozenset(
        {*CONTEXT_FIELDS, "offered_amount", "offered_share"}
        | {f"thresholds.{t}" for t in document.thresholds}
    )


def template_fields(template: str) -> list[str]:
    """The `{placeholder}` names of a template; raises ValueError on a malformed one."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} must not carry a format or conversion")
        if not name:
            raise ValueError("empty placeholder {}")
        names.append(name)
    return names


@functools.lru_cache(maxsize=4096)
def template_pieces(template: str) -> tuple[tuple[str, str | None], ...]:
    """A template split into (literal, placeholder) pairs; parsed once per template text,
    because reasons are rendered on every decision."""
    return tuple((literal, name) for literal, name, _, _ in string.Formatter().parse(template))


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Fill `{placeholder}`s from already formatted values (no attribute access, no eval)."""
    parts = []
    for literal, name in template_pieces(template):
        parts.append(literal)
        if name is not None:
            parts.append(values[name])
    return "".join(parts)


def _check_template(
    problems: list[str], where: str, template: str, allowed: frozenset[str]
) -> None:
    try:
        names = template_fields(template)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return
    for name in names:
        if name not in allowed:
            problems.append(f"{where}: unknown placeholder {{{name}}}")


def _check_bands(document: PolicyDocument, problems: list[str]) -> tuple[Band, ...]:
    bands = []
    for name, (lower, upper) in document.bands.items():
        if not _IDENT.match(name):
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


def build_policy(
    document: PolicyDocument, source: str = "<policy>", tiers: Tiers | None = None
) -> Policy:
    """Validate a parsed policy document completely and compile it; raise PolicyError if bad."""
    problems: list[str] = []
    bands = _check_bands(document, problems)
    for name, value in document.thresholds.items():
        if not _IDENT.match(name):
            problems.append(f"threshold '{name}': names are snake_case")
        if not math.isfinite(value):
            problems.append(f"threshold '{name}': {value} is not a finite number")

    compiler = _Compiler(document, tiers)
    rules: list[Rule] = []
    seen: set[str] = set()
    allowed_reason = reason_fields(document)
    for spec in document.rules:
        if spec.id in seen or spec.id == "default":
            problems.append(f"rule '{spec.id}', field 'id': used more than once (or reserved)")
        seen.add(spec.id)
        conditions = compiler.compile(spec.id, spec.when)
        _check_template(problems, f"rule '{spec.id}', field 'reason'", spec.reason, allowed_reason)
        if spec.customer_message is not None:
            _check_template(
                problems,
                f"rule '{spec.id}', field 'customer_message'",
                spec.customer_message,
                _MESSAGE_FIELDS,
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

    if document.default is None:
        problems.append(
            "field 'default': missing; a policy ends with a default action for requests no rule "
            "matches"
        )
        default = Rule(id="default", action=Action.MANUAL_REVIEW, reason="-")
    else:
        _check_template(
            problems, "default, field 'reason'", document.default.reason, allowed_reason
        )
        default = Rule(
            id="default",
            action=document.default.action,
            reason=document.default.reason,
            customer_message=document.default.customer_message,
        )
        if document.default.customer_message is not None:
            _check_template(
                problems,
                "default, field 'customer_message'",
                document.default.customer_message,
                _MESSAGE_FIELDS,
            )

    used_actions = {r.action for r in (*rules, default)}
    for action in ACTIONS:
        if action in document.messages:
            _check_template(
                problems, f"field 'messages.{action}'", document.messages[action], _MESSAGE_FIELDS
            )
    for r in (*rules, default):
        if r.customer_message is None and r.action not in document.messages:
            where = "default" if r.id == "default" else f"rule '{r.id}'"
            problems.append(
                f"{where}, field 'action': no customer message for {r.action.value}; add it "
                "under 'messages' or give the rule a 'customer_message'"
            )
            break
    if Action.PARTIAL_REFUND_OFFER in used_actions:
        if document.partial_offer is None:
            problems.append(
                "field 'partial_offer': missing, but a rule offers a partial refund; say how the "
                "offered share is computed"
            )
        else:
            offer = document.partial_offer
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
        content_hash=_content_hash(document),
        document=document,
        source=source,
    )


# --- reachability --------------------------------------------------------------------------------
#
# A rule can never fire if every request it matches is matched by some earlier rule. Each rule's
# conditions are summarised per field as a set (enums, booleans) or an interval (numbers, with
# thresholds resolved); a comparison against another field is kept as an opaque fact that only the
# same fact implies. Earlier rule j shadows rule k if, field by field, k's set lies inside j's.
# Only single earlier rules are checked: a rule covered by the union of several earlier rules is
# not found, which keeps the check simple and never wrong when it does speak.


@dataclass
class _Interval:
    lo: float = -math.inf
    lo_closed: bool = True
    hi: float = math.inf
    hi_closed: bool = True
    null: bool = True
    opaque: set[tuple[str, str]] = field(default_factory=set)

    def cap_hi(self, value: float, closed: bool) -> None:
        if value < self.hi or (value == self.hi and not closed):
            self.hi, self.hi_closed = value, closed

    def cap_lo(self, value: float, closed: bool) -> None:
        if value > self.lo or (value == self.lo and not closed):
            self.lo, self.lo_closed = value, closed

    @property
    def interval_empty(self) -> bool:
        return self.lo > self.hi or (self.lo == self.hi and not (self.lo_closed and self.hi_closed))

    @property
    def empty(self) -> bool:
        return self.interval_empty and not self.null

    def within(self, other: _Interval) -> bool:
        if self.null and not other.null:
            return False
        if not other.opaque <= self.opaque:
            return False
        if self.interval_empty:
            return True
        lo_ok = other.lo < self.lo or (
            other.lo == self.lo and (other.lo_closed or not self.lo_closed)
        )
        hi_ok = other.hi > self.hi or (
            other.hi == self.hi and (other.hi_closed or not self.hi_closed)
        )
        return lo_ok and hi_ok


@dataclass
class _Set:
    universe: frozenset[object] | None
    included: set[object] | None = None
    excluded: set[object] = field(default_factory=set)

    def members(self) -> set[object] | None:
        base = self.included if self.included is not None else self.universe
        return None if base is None else set(base) - self.excluded

    @property
    def empty(self) -> bool:
        members = self.members()
        return members is not None and not members

    def within(self, other: _Set) -> bool:
        mine, theirs = self.members(), other.members()
        if mine is None:  # co-finite: only a co-finite set with fewer exclusions holds it
            return theirs is None and other.excluded <= self.excluded
        if theirs is None:
            return not (mine & other.excluded)
        return mine <= theirs


def _region(
    rule: Rule, bands: tuple[Band, ...], thresholds: Mapping[str, float]
) -> dict[str, _Interval | _Set]:
    region: dict[str, _Interval | _Set] = {}
    for cond in rule.conditions:
        spec = CONTEXT_FIELDS[cond.field]
        if spec.kind == FieldKind.NUMBER:
            current = region.setdefault(cond.field, _Interval(null=spec.nullable))
            assert isinstance(current, _Interval)
            _narrow_interval(current, cond, thresholds)
        else:
            universe: frozenset[object] | None
            if spec.kind == FieldKind.BOOL:
                universe = frozenset({True, False})
            elif cond.field == "abuse_band":
                universe = frozenset(b.name for b in bands)
            elif cond.field == "tier":
                universe = None
            else:
                universe = frozenset(spec.values)
            s = region.setdefault(cond.field, _Set(universe))
            assert isinstance(s, _Set)
            values: set[object] = (
                set(cond.operand) if isinstance(cond.operand, tuple) else {cond.operand}
            )
            if cond.op in ("==", "in"):
                s.included = values if s.included is None else s.included & values
            else:
                s.excluded |= values
    _couple_score_and_band(region, bands)
    return region


def _narrow_interval(iv: _Interval, cond: Condition, thresholds: Mapping[str, float]) -> None:
    operand = cond.operand
    if operand is None:
        if cond.op == "==":
            iv.lo, iv.hi = math.inf, -math.inf
        else:
            iv.null = False
        return
    if isinstance(operand, Ref) and not operand.name.startswith("thresholds."):
        iv.opaque.add((cond.op, operand.name))
        if cond.op in ORDERING_OPERATORS:
            iv.null = False
        return
    if isinstance(operand, Ref):
        value = thresholds[operand.name.removeprefix("thresholds.")]
    else:
        assert isinstance(operand, float)
        value = operand
    if cond.op == "!=":
        iv.opaque.add(("!=", str(value)))
        return
    iv.null = False
    if cond.op in ("<", "<="):
        iv.cap_hi(value, cond.op == "<=")
    elif cond.op in (">", ">="):
        iv.cap_lo(value, cond.op == ">=")
    else:
        iv.cap_hi(value, True)
        iv.cap_lo(value, True)


def _couple_score_and_band(region: dict[str, _Interval | _Set], bands: tuple[Band, ...]) -> None:
    """Make a rule's score range and band set agree: 'band high' bounds the score, and back."""
    score = region.get("abuse_score")
    band_set = region.get("abuse_band")
    iv = score if isinstance(score, _Interval) else _Interval(null=False)
    bs = band_set if isinstance(band_set, _Set) else _Set(frozenset(b.name for b in bands))
    members = bs.members() or set()
    live = []
    for b in bands:
        if b.name not in members:
            continue
        last = b is bands[-1]
        overlaps = (b.lower < iv.hi or (b.lower == iv.hi and iv.hi_closed)) and (
            iv.lo < b.upper or (last and iv.lo == b.upper and iv.lo_closed)
        )
        if overlaps and not iv.interval_empty:
            live.append(b)
    region["abuse_band"] = _Set(bs.universe, {b.name for b in live})
    refined = _Interval(null=False, opaque=set(iv.opaque))
    refined.lo, refined.lo_closed, refined.hi, refined.hi_closed = (
        iv.lo,
        iv.lo_closed,
        iv.hi,
        iv.hi_closed,
    )
    if live:
        refined.cap_lo(live[0].lower, True)
        refined.cap_hi(live[-1].upper, live[-1] is bands[-1])
    else:
        refined.lo, refined.hi = math.inf, -math.inf
    region["abuse_score"] = refined


def _within(k: dict[str, _Interval | _Set], j: dict[str, _Interval | _Set]) -> bool:
    for name, constraint in j.items():
        mine = k.get(name)
        if mine is None:
            spec = CONTEXT_FIELDS[name]
            if spec.kind == FieldKind.NUMBER:
                mine = _Interval(null=spec.nullable)
            else:
                assert isinstance(constraint, _Set)
                mine = _Set(constraint.universe)
        if isinstance(constraint, _Interval):
            if not (isinstance(mine, _Interval) and mine.within(constraint)):
                return False
        elif not (isinstance(mine, _Set) and mine.within(constraint)):
            return False
    return True


def find_unreachable(
    rules: Sequence[Rule], bands: tuple[Band, ...], thresholds: Mapping[str, float]
) -> list[str]:
    """Problems for rules that can never fire, and for a default no request can reach."""
    problems: list[str] = []
    regions = [_region(r, bands, thresholds) for r in rules]
    for k, (rule, region) in enumerate(zip(rules, regions, strict=True)):
        if any(c.empty for c in region.values()):
            problems.append(
                f"rule '{rule.id}', field 'when': its conditions contradict each other, so it "
                "can never fire"
            )
            continue
        for j in range(k):
            if any(c.empty for c in regions[j].values()):
                continue
            if _within(region, regions[j]):
                problems.append(
                    f"rule '{rule.id}', field 'when': unreachable, every request it matches is "
                    f"already matched by the earlier rule '{rules[j].id}'"
                )
                break
    for rule in rules:
        if not rule.conditions:
            problems.append(
                f"rule '{rule.id}', field 'when': matches every request, so the default (and any "
                "later rule) is never used; make it the default"
            )
            break
    return problems
