"""Tuning a policy: search its named thresholds and band cut-offs for the lowest cost.

The search is coordinate descent: one parameter at a time, try each candidate value with the
others held, keep the best, and go round again until a round changes nothing. Candidates come
from the data (quantiles of the field a threshold is compared with, of the abuse score for band
cut-offs), so the search looks where requests actually are. A candidate that makes the policy
invalid (say, a rule that can no longer fire) is skipped.

Constraints come first and cost second: a policy that breaks a constraint (minimum share decided
without a person, reviewer capacity, maximum share of abusive money paid without a check) always
ranks below one that keeps them all, and among those that break them, the smaller breach wins, so
the search walks out of an infeasible start.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from policy.conditions import Ref
from policy.documents import PolicyError
from policy.model import Policy, build_policy
from policy.simulate import CostModel, Replay, SimulationResult, simulate_replay
from policy.tiers import Tiers
from policy.vocabulary import CONTEXT_FIELDS, Unit

Progress = Callable[[str, float], None]

_LEVELS = np.concatenate([np.linspace(0.02, 0.98, 33), [0.99, 0.995]])
"""Quantile levels that candidate values are drawn at."""


class TuneConstraints(BaseModel):
    """What a tuned policy must keep to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_automated_share: float = Field(default=0.85, ge=0, le=1)
    max_reviews_per_day: float | None = Field(
        default=None, gt=0, description="Mean reviews per day; default: the cost model's capacity."
    )
    max_unchecked_abuse_share: float | None = Field(
        default=0.2, ge=0, le=1, description="Share of abusive money paid without a check."
    )


@dataclass(frozen=True)
class TuneResult:
    """The tuned policy, its figures, and the starting policy's figures."""

    policy: Policy
    start: SimulationResult
    tuned: SimulationResult
    changes: dict[str, tuple[float, float]]
    evaluations: int
    feasible: bool


def breach(result: SimulationResult, constraints: TuneConstraints, costs: CostModel) -> float:
    """How far a result is outside the constraints (0 when it keeps them all)."""
    capacity = constraints.max_reviews_per_day or costs.reviewer_capacity_per_day
    total = max(0.0, constraints.min_automated_share - result.automated_share)
    total += max(0.0, result.reviews_per_day - capacity) / capacity
    if constraints.max_unchecked_abuse_share is not None:
        total += max(0.0, result.unchecked_abuse_share - constraints.max_unchecked_abuse_share)
    return total


def _round(value: float, unit: Unit) -> float:
    if unit == Unit.SCORE:
        return round(value, 3)
    if unit == Unit.MONEY:
        return round(value, 0) if value >= 20 else round(value, 2)
    return round(value, 1)


def parameters(policy: Policy) -> list[str]:
    """The names the tuner searches: `thresholds.NAME` for each used threshold, `band:NAME` for
    each band's lower cut-off (all but the first band's)."""
    used = {
        c.operand.name
        for r in policy.rules
        for c in r.conditions
        if isinstance(c.operand, Ref) and c.operand.name.startswith("thresholds.")
    }
    names = [f"thresholds.{t}" for t in policy.thresholds if f"thresholds.{t}" in used]
    return names + [f"band:{b.name}" for b in policy.bands[1:]]


def _current(policy: Policy, name: str) -> float:
    if name.startswith("band:"):
        band = name.removeprefix("band:")
        return next(b.lower for b in policy.bands if b.name == band)
    return policy.thresholds[name.removeprefix("thresholds.")]


def _unit(policy: Policy, name: str) -> tuple[Unit, list[str]]:
    if name.startswith("band:"):
        return Unit.SCORE, ["abuse_score"]
    fields = sorted(
        {
            c.field
            for r in policy.rules
            for c in r.conditions
            if isinstance(c.operand, Ref) and c.operand.name == name
        }
    )
    units = {CONTEXT_FIELDS[f].unit for f in fields}
    return (units.pop() if len(units) == 1 else Unit.TEXT), fields


def candidates(policy: Policy, name: str, replay: Replay) -> list[float]:
    """Values to try for one parameter, from the data, always including the current value."""
    unit, fields = _unit(policy, name)
    values: list[float] = [_current(policy, name)]
    for f in fields:
        column = np.asarray(replay.arrays[f], dtype=float)
        column = column[~np.isnan(column)]
        if len(column):
            values += [float(v) for v in np.quantile(column, _LEVELS)]
    if name.startswith("band:"):
        values += [float(v) for v in np.linspace(0.02, 0.98, 49)]
        band = name.removeprefix("band:")
        k = next(i for i, b in enumerate(policy.bands) if b.name == band)
        low, high = policy.bands[k - 1].lower, policy.bands[k].upper
        values = [v for v in values if low < v < high]
    if unit == Unit.COUNT:
        values += [1.0, 2.0, 3.0, 5.0]
    rounded = {_round(v, unit) for v in values if math.isfinite(v)}
    key = name.removeprefix("band:").removeprefix("thresholds.")
    if key in policy.document.tuning:
        low, high = policy.document.tuning[key]
        rounded = {v for v in rounded if low <= v <= high} | {_current(policy, name)}
    return sorted(rounded)


def with_parameters(policy: Policy, values: dict[str, float], tiers: Tiers | None) -> Policy:
    """The policy with some thresholds or band cut-offs changed, validated again."""
    document = policy.document
    thresholds = dict(document.thresholds)
    bands = dict(document.bands)
    names = list(bands)
    for name, value in values.items():
        if name.startswith("band:"):
            band = name.removeprefix("band:")
            k = names.index(band)
            bands[band] = (value, bands[band][1])
            before = names[k - 1]
            bands[before] = (bands[before][0], value)
        else:
            thresholds[name.removeprefix("thresholds.")] = value
    updated = document.model_copy(update={"thresholds": thresholds, "bands": bands})
    return build_policy(updated, source=policy.source, tiers=tiers)


def tune(
    frame: pd.DataFrame,
    policy: Policy,
    tiers: Tiers,
    costs: CostModel | None = None,
    constraints: TuneConstraints | None = None,
    label: str = "auto",
    max_rounds: int = 4,
    progress: Progress | None = None,
) -> TuneResult:
    """Search the policy's thresholds and band cut-offs for the lowest cost within constraints.

    Returns the tuned policy with its version one above the starting policy's.
    """
    costs = costs or CostModel()
    constraints = constraints or TuneConstraints()
    replay = Replay.prepare(frame, policy, tiers, label)
    evaluations = 0

    def score(p: Policy) -> tuple[float, float, SimulationResult]:
        nonlocal evaluations
        evaluations += 1
        result = simulate_replay(replay, p, costs)
        return round(breach(result, constraints, costs), 9), result.total_cost, result

    start_breach, start_cost, start = score(policy)
    best_key = (start_breach, start_cost)
    best_policy = policy
    values = {name: _current(policy, name) for name in parameters(policy)}
    names = list(values)
    for round_no in range(max_rounds):
        improved = False
        for i, name in enumerate(names):
            if progress is not None:
                progress(f"round {round_no + 1}, {name}", (round_no + i / len(names)) / max_rounds)
            for value in candidates(best_policy, name, replay):
                if value == values[name]:
                    continue
                try:
                    trial = with_parameters(best_policy, {name: value}, tiers)
                except PolicyError:
                    continue  # e.g. a cut-off that empties a band, or a rule made unreachable
                trial_breach, trial_cost, _ = score(trial)
                if (trial_breach, trial_cost) < best_key:
                    best_key, best_policy = (trial_breach, trial_cost), trial
                    values[name] = value
                    improved = True
        if not improved:
            break
    document = best_policy.document.model_copy(update={"version": policy.version + 1})
    tuned_policy = build_policy(document, source=policy.source, tiers=tiers)
    tuned = simulate_replay(replay, tuned_policy, costs)
    start_values = {name: _current(policy, name) for name in names}
    changes = {n: (start_values[n], values[n]) for n in names if start_values[n] != values[n]}
    if progress is not None:
        progress("done", 1.0)
    return TuneResult(
        policy=tuned_policy,
        start=start,
        tuned=tuned,
        changes=changes,
        evaluations=evaluations,
        feasible=best_key[0] == 0.0,
    )


def policy_yaml(policy: Policy, header: str = "") -> str:
    """The policy as a YAML file's text (comments of the original are not kept)."""
    data = policy.document.model_dump(mode="json", exclude_none=True)
    data["bands"] = {name: list(edges) for name, edges in data["bands"].items()}
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=96)
    return ("\n".join(lines) + "\n" if lines else "") + body


def write_policy(policy: Policy, path: Path, header: str = "") -> Path:
    """Write the policy to `path` atomically; the written file loads back to the same policy."""
    from data.storage import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(policy_yaml(policy, header), encoding="utf-8")
    return path
