"""The ops dashboard's figures, per day, from the decision log, the review cases and outcomes.

Per day: refund requests decided, the mix of actions, the share decided without a person,
the queue's size and oldest case at the end of the day, resolutions per reviewer, abuse caught
by review and whether later evidence (a warehouse check, a chargeback...) confirmed it. Over the
whole window: the population stability index of each feature and of the score against the
champion model's training distribution (`refund_risk.model_contract.drift`), with its warning level.

All reads are aggregate queries or bounded samples: the dashboard is for people, opened now
and then, and never touches the decision path.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from features.store import EVENT_TABLES
from refund_risk.model_contract.drift import Reference, level, psi
from serving.db import DECISIONS, FEATURE_SETS, REVIEW_ACTION, REVIEW_CASES, REVIEW_RESOLUTIONS

DRIFT_SAMPLE = 20_000
"""Most recent decisions whose features are compared with the training data."""

ACTIONS: tuple[str, ...] = (
    "auto_approve",
    "refund_before_return",
    "partial_refund_offer",
    "standard_return",
    "manual_review",
)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Day:
    """One day's figures."""

    day: str
    requests: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    automated_share: float | None = None
    queue_open: int = 0
    queue_oldest_hours: float | None = None
    resolved: int = 0
    by_reviewer: dict[str, int] = field(default_factory=dict)
    caught: int = 0
    confirmed: int = 0
    contradicted: int = 0
    score_psi: float | None = None
    scored: int = 0


@dataclass(frozen=True)
class Drift:
    """One variable's population stability against the training data."""

    name: str
    psi: float
    level: str


@dataclass
class Dashboard:
    """Everything the dashboard page shows."""

    days: list[Day]
    drift: list[Drift]
    score_drift: Drift | None
    drift_rows: int
    drift_note: str | None
    totals: dict[str, Any]


def _day_keys(start: date, count: int) -> list[str]:
    return [(start + timedelta(days=i)).isoformat() for i in range(count)]


def _day(value: Any) -> str:
    """A `date()` result as YYYY-MM-DD (SQLite gives text, PostgreSQL a date)."""
    return value.isoformat() if isinstance(value, date) else str(value)[:10]


def build(
    engine: Engine,
    days: int,
    drift_reference: Mapping[str, Any] | None,
    reviewer_names: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Dashboard:
    """The dashboard for the last `days` days up to `now` (UTC), today included."""
    now = now or _now()
    first = now.date() - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time())
    keys = _day_keys(first, days)
    by_day = {k: Day(k) for k in keys}
    names = dict(reviewer_names or {})
    d, c, res = DECISIONS, REVIEW_CASES, REVIEW_RESOLUTIONS
    outcomes = EVENT_TABLES["outcomes"]
    with engine.connect() as connection:
        day = sa.func.date(d.c.decided_at)
        for when, action, count in connection.execute(
            sa.select(day, d.c.action, sa.func.count())
            .where(d.c.decided_at >= start)
            .group_by(day, d.c.action)
        ):
            entry = by_day.get(_day(when))
            if entry is not None:
                entry.actions[action] = entry.actions.get(action, 0) + int(count)
                entry.requests += int(count)
        # Cases open at some moment of the window: their ages give each day's queue.
        spans = connection.execute(
            sa.select(c.c.opened_at, c.c.resolved_at).where(
                c.c.opened_at < now, sa.or_(c.c.resolved_at.is_(None), c.c.resolved_at >= start)
            )
        ).all()
        resolved = connection.execute(
            sa.select(res.c.resolved_at, res.c.reviewer, res.c.decision, res.c.refund_id).where(
                res.c.resolved_at >= start
            )
        ).all()
        rejected = [r.refund_id for r in resolved if r.decision == "reject_abuse"]
        later: dict[str, tuple[datetime, str, bool]] = {}
        for part in _chunks(rejected, 500):
            for r in connection.execute(
                sa.select(
                    outcomes.c.refund_id,
                    outcomes.c.known_at,
                    outcomes.c.outcome_id,
                    outcomes.c.is_abusive,
                ).where(outcomes.c.refund_id.in_(part), outcomes.c.source != "reviewer")
            ):
                key = (r.known_at, r.outcome_id, bool(r.is_abusive))
                if r.refund_id not in later or key > later[r.refund_id]:
                    later[r.refund_id] = key
    for entry in by_day.values():
        if entry.requests:
            manual = entry.actions.get(REVIEW_ACTION, 0)
            entry.automated_share = 1.0 - manual / entry.requests
    for k in keys:
        end = min(
            datetime.combine(date.fromisoformat(k), datetime.min.time()) + timedelta(days=1), now
        )
        still_open = [o for o, r in spans if o < end and (r is None or r >= end)]
        by_day[k].queue_open = len(still_open)
        if still_open:
            by_day[k].queue_oldest_hours = (end - min(still_open)).total_seconds() / 3600.0
    per_reviewer: dict[str, Counter[str]] = defaultdict(Counter)
    for r in resolved:
        entry = by_day.get(r.resolved_at.date().isoformat())
        if entry is None:
            continue
        entry.resolved += 1
        per_reviewer[entry.day][names.get(r.reviewer, r.reviewer)] += 1
        if r.decision == "reject_abuse":
            entry.caught += 1
            found = later.get(r.refund_id)
            if found is not None:
                if found[2]:
                    entry.confirmed += 1
                else:
                    entry.contradicted += 1
    for k, counts in per_reviewer.items():
        by_day[k].by_reviewer = dict(counts.most_common())
    drift, score_drift, rows, note = _drift(engine, start, by_day, drift_reference)
    ordered = [by_day[k] for k in keys]
    total_requests = sum(x.requests for x in ordered)
    total_manual = sum(x.actions.get(REVIEW_ACTION, 0) for x in ordered)
    totals = {
        "requests": total_requests,
        "automated_share": None if not total_requests else 1.0 - total_manual / total_requests,
        "resolved": sum(x.resolved for x in ordered),
        "caught": sum(x.caught for x in ordered),
        "confirmed": sum(x.confirmed for x in ordered),
        "contradicted": sum(x.contradicted for x in ordered),
    }
    return Dashboard(ordered, drift, score_drift, rows, note, totals)


def _chunks(values: list[str], size: int) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _drift(
    engine: Engine,
    start: datetime,
    by_day: dict[str, Day],
    reference: Mapping[str, Any] | None,
) -> tuple[list[Drift], Drift | None, int, str | None]:
    """PSI of each feature and of the score, over the window's most recent decisions."""
    if not reference:
        return (
            [],
            None,
            0,
            "no drift reference: the abuse model in use has none (or none is loaded)",
        )
    d = DECISIONS
    with engine.connect() as connection:
        names_by_version = {
            r.feature_version: json.loads(r.names)
            for r in connection.execute(sa.select(FEATURE_SETS))
        }
        rows = connection.execute(
            sa.select(d.c.decided_at, d.c.abuse_score, d.c.feature_version, d.c.features)
            .where(d.c.decided_at >= start, d.c.degraded.is_(False))
            .order_by(d.c.decided_at.desc())
            .limit(DRIFT_SAMPLE)
        ).all()
    if not rows:
        return [], None, 0, "no scored decisions in this window yet"
    scores = np.array(
        [np.nan if r.abuse_score is None else r.abuse_score for r in rows], dtype=float
    )
    score_ref = Reference.from_json(reference["score"])
    score_drift = _one("score", score_ref, scores)
    daily: dict[str, list[float]] = defaultdict(list)
    for r, s in zip(rows, scores, strict=True):
        daily[r.decided_at.date().isoformat()].append(s)
    for key, values in daily.items():
        if key in by_day:
            by_day[key].scored = len(values)
            by_day[key].score_psi = psi(score_ref, np.asarray(values))
    columns: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        names = names_by_version.get(r.feature_version)
        if names is None:
            continue
        values = json.loads(r.features)
        for name, value in zip(names, values, strict=False):
            columns[name].append(np.nan if value is None else float(value))
    drift = [
        _one(name, Reference.from_json(ref), np.asarray(columns[name], dtype=float))
        for name, ref in reference.get("features", {}).items()
        if columns.get(name)
    ]
    drift.sort(key=lambda x: (-x.psi, x.name))
    return drift, score_drift, len(rows), None


def _one(name: str, ref: Reference, values: np.ndarray) -> Drift:
    value = psi(ref, values)
    return Drift(name, 0.0 if np.isnan(value) else round(value, 4), level(value))
