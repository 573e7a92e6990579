"""Rules that can never fire, found before a policy is used.

A rule can never fire if every request it matches is matched by some earlier rule. Each rule's
conditions are summarised per field as a set (enums, booleans) or an interval (numbers, with
thresholds resolved); a comparison against another field is kept as an opaque fact that only the
same fact implies. Earlier rule j shadows rule k if, field by field, k's set lies inside j's.
Only single earlier rules are checked: a rule covered by the union of several earlier rules is
not found, which keeps the check simple and never wrong when it does speak.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policy.conditions import Band, Condition, Ref, Rule
from policy.vocabulary import CONTEXT_FIELDS, ORDERING_OPERATORS, FieldKind


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
