"""A rule's `when`, compiled: the forms a validated policy is made of, and the compiler that makes
them from the file, collecting every problem it finds (see `policy.model` for the language).
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policy.documents import PolicyDocument
from policy.tiers import Tiers
from policy.vocabulary import (
    CONTEXT_FIELDS,
    OPERATORS,
    ORDERING_OPERATORS,
    Action,
    ContextField,
    FieldKind,
)


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


# --- what each test means ------------------------------------------------------------------------
#
# One definition, for one request (plain values) and for a whole frame (numpy arrays) alike: an
# empty number is NaN in both, so it satisfies no ordering and equals nothing, and membership is
# the only test that needs to know which of the two it was given.


def member(left: Any, members: tuple[Any, ...]) -> Any:
    """Whether `left` is one of `members`: for one value, or element by element for an array."""
    if isinstance(left, np.ndarray):
        return np.isin(left, np.asarray(members, dtype=object))
    return left in members


def not_member(left: Any, members: tuple[Any, ...]) -> Any:
    """Whether `left` is none of `members` (see `member`)."""
    if isinstance(left, np.ndarray):
        return ~member(left, members)
    return left not in members


HOLDS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": member,
    "not_in": not_member,
}
"""Each test of a field's value against its operand (a number, a value, a list or another
field's value): true where it holds."""

HOLDS_FOR_NULL: dict[str, Callable[[Any], Any]] = {
    "==": lambda value: value != value,  # NaN, the empty number, is the one value unequal to itself
    "!=": lambda value: value == value,
}
"""The tests against null: whether a value is empty, or not."""


Values = Mapping[str, Any]
"""A request context's values by field name: one request's plain values, or a frame's arrays."""

Test = Callable[[Values], Any]
"""A condition ready to run: true where it holds, for one request or for every row at once."""


def as_test(condition: Condition, thresholds: Mapping[str, float]) -> Test:
    """The condition as a function of the context values, its named threshold looked up once.

    The same function decides one request and a whole frame: see `HOLDS`.
    """
    name, op, operand = condition.field, condition.op, condition.operand
    if operand is None:
        is_null = HOLDS_FOR_NULL[op]
        return lambda values: is_null(values[name])
    holds = HOLDS[op]
    if isinstance(operand, Ref) and not operand.name.startswith("thresholds."):
        other = operand.name
        return lambda values: holds(values[name], values[other])
    right: Any = operand
    if isinstance(operand, Ref):
        right = thresholds[operand.name.removeprefix("thresholds.")]
    return lambda values: holds(values[name], right)


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


def band_index(uppers: Sequence[float], score: Any) -> Any:
    """The position of the band each abuse score falls in, for one score or an array of them.

    `uppers` are the bands' upper ends in order: a score is in the first band whose upper end
    is above it, and the last band also holds its upper end (a score of 1).
    """
    last = len(uppers) - 1
    if isinstance(score, np.ndarray):
        return np.minimum(np.searchsorted(uppers, score, side="right"), last)
    return min(bisect.bisect_right(uppers, score), last)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _enum_values(name: str, bands: Sequence[str], tiers: Tiers | None) -> tuple[str, ...] | None:
    """Allowed values of an enum field; None when they cannot be known (tiers not given)."""
    if name == "abuse_band":
        return tuple(bands)
    if name == "tier":
        return tiers.names if tiers is not None else None
    return CONTEXT_FIELDS[name].values


class Compiler:
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
