"""Alerts on refund activity: defined in a file, evaluated by the service, sent to webhooks.

Each rule counts refund requests (or sums their money) in a recent window, overall or per
subject (a reason, a category, a fingerprint shared by several accounts), and compares that with
the same window's expected value from the weeks before. A rule fires when the window is both
large enough (`min_count`) and unlikely under the baseline: a Poisson tail probability below
`p_value` for counts, or `factor` times the expected value for money. An alert is sent once,
when a rule starts firing for a subject, not on every evaluation: it fires again only after it
has cleared. The firing state lives in the database and turns on with one conditional write,
so several service processes evaluating the same rules send each alert once.

Deliveries are JSON POSTs signed with HMAC-SHA256 of the body (header
`X-Refund-Risk-Signature: sha256=<hex>`), retried with growing pauses, and every attempt is
recorded with its status code or error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import httpx
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import Engine

from features.store import EVENT_TABLES
from refund_risk.config_files import load_yaml_model
from refund_risk.errors import ConfigurationError
from serving.db import ALERT_DELIVERIES, ALERT_EVENTS, ALERT_STATE

log = logging.getLogger(__name__)

DEFAULT_ALERTS = Path(__file__).parent / "alerts.yaml"
SIGNATURE_HEADER = "X-Refund-Risk-Signature"


class Measure(StrEnum):
    """What a rule adds up over its window."""

    REQUESTS = "requests"
    MONEY = "money"


class Subject(StrEnum):
    """What a rule splits the requests by (`all`: the shop as a whole)."""

    ALL = "all"
    REASON = "reason_detail"
    CATEGORY = "category"
    PRODUCT = "product_id"
    SHARED_FINGERPRINT = "shared_fingerprint"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Webhook(_Strict):
    """Where alerts are sent."""

    url: str = Field(pattern=r"^https?://", max_length=2048)


class Rule(_Strict):
    """One alert: what is measured, over which window, against what, and who is told."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    description: str
    measure: Measure = Measure.REQUESTS
    by: Subject = Subject.ALL
    window_hours: float = Field(gt=0, le=24 * 14)
    baseline_days: float = Field(default=28, gt=0, le=365)
    test: Literal["poisson", "factor"] = "poisson"
    p_value: float = Field(default=0.001, gt=0, lt=0.5)
    factor: float = Field(default=2.0, gt=1)
    min_count: int = Field(default=10, ge=1)
    """Fewest requests in the window before the rule may fire (money rules too): a few
    requests are noise, and one large refund is not a trend."""
    min_accounts: int = Field(default=1, ge=1)
    """For a shared fingerprint: fewest distinct accounts among the window's requests."""
    notify: list[str] = []

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.measure == Measure.MONEY and self.test == "poisson":
            raise ValueError("money is not a count: use test: factor")
        return self


class AlertFile(_Strict):
    """The whole alerts file."""

    webhooks: dict[str, Webhook] = {}
    rules: list[Rule]

    @model_validator(mode="after")
    def _known_targets(self) -> AlertFile:
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError(
                f"rule ids must be unique: {sorted(i for i in ids if ids.count(i) > 1)}"
            )
        for rule in self.rules:
            unknown = [n for n in rule.notify if n not in self.webhooks]
            if unknown:
                raise ValueError(
                    f"rule {rule.id} notifies unknown webhook(s) {unknown}; "
                    f"known: {sorted(self.webhooks) or 'none'}"
                )
        return self


def load_alerts(path: Path | None) -> AlertFile:
    """The alerts in `path` (none: the shipped file); a bad file stops the service with a
    sentence naming the file and the field."""
    return load_yaml_model(path or DEFAULT_ALERTS, AlertFile, "alerts")


@dataclass(frozen=True)
class Firing:
    """A rule that holds for one subject now."""

    rule: Rule
    subject: str
    observed: float
    expected: float

    @property
    def message(self) -> str:
        """The alert in words."""
        what = "refund money" if self.rule.measure == Measure.MONEY else "refund requests"
        where = "" if self.subject == "all" else f" ({self.rule.by.value} {self.subject})"
        return (
            f"{self.rule.description}: {what}{where} in the last {self.rule.window_hours:g} h "
            f"were {self.observed:,.2f} against {self.expected:,.2f} expected"
        )


@dataclass
class _Window:
    """One subject's figures in the window."""

    value: float = 0.0
    requests: int = 0
    accounts: int = 0


def _windows(
    engine: Engine, rule: Rule, now: datetime
) -> tuple[dict[str, _Window], dict[str, float]]:
    """Per subject: the window's measure, requests and distinct accounts; the baseline's
    measure."""
    refunds, orders, links = (
        EVENT_TABLES["refund_requests"],
        EVENT_TABLES["orders"],
        EVENT_TABLES["identity_links"],
    )
    start = now - timedelta(hours=rule.window_hours)
    base_start = start - timedelta(days=rule.baseline_days)
    value = (
        sa.func.sum(refunds.c.amount_requested)
        if rule.measure == Measure.MONEY
        else sa.func.count()
    )
    source: Any = refunds
    if rule.by == Subject.CATEGORY:
        source = refunds.join(orders, orders.c.order_id == refunds.c.order_id)
        key: Any = orders.c.category
    elif rule.by == Subject.PRODUCT:
        # Orders that name no product have no subject here (a shop without product ids: none).
        source = refunds.join(
            orders,
            sa.and_(orders.c.order_id == refunds.c.order_id, orders.c.product_id.is_not(None)),
        )
        key = orders.c.product_id
    elif rule.by == Subject.REASON:
        key = refunds.c.reason_detail
    elif rule.by == Subject.SHARED_FINGERPRINT:
        source = refunds.join(links, links.c.customer_id == refunds.c.customer_id)
        key = links.c.kind + sa.literal(":") + links.c.fingerprint
    else:
        key = sa.literal("all")
    in_window = sa.case((refunds.c.requested_at >= start, sa.literal(1)), else_=sa.literal(0))
    stmt = (
        sa.select(
            key.label("subject"),
            in_window.label("now"),
            value,
            sa.func.count(),
            sa.func.count(sa.distinct(refunds.c.customer_id)),
        )
        .select_from(source)
        .where(refunds.c.requested_at >= base_start, refunds.c.requested_at < now)
        .group_by(key, in_window)
    )
    window: dict[str, _Window] = {}
    baseline: dict[str, float] = {}
    with engine.connect() as connection:
        for subject, is_now, total, count, distinct in connection.execute(stmt):
            if is_now:
                window[str(subject)] = _Window(float(total or 0.0), int(count), int(distinct))
            else:
                baseline[str(subject)] = float(total or 0.0)
    return window, baseline


def evaluate(engine: Engine, rules: list[Rule], now: datetime) -> list[Firing]:
    """Every (rule, subject) that holds at `now` (UTC, naive)."""
    firing = []
    for rule in rules:
        window, baseline = _windows(engine, rule, now)
        share = rule.window_hours / (rule.baseline_days * 24.0)
        for subject, seen in window.items():
            if seen.requests < rule.min_count or seen.accounts < rule.min_accounts:
                continue
            observed = seen.value
            expected = baseline.get(subject, 0.0) * share
            if rule.test == "poisson":
                # Imported here: scipy.stats takes seconds to import, which would delay the
                # moment a served process first answers its liveness probe.
                from scipy.stats import poisson

                # At least half a request expected: a subject new to the shop is judged against a
                # small rate rather than none, which would make any request a certainty of alarm.
                fires = poisson.sf(observed - 1, max(expected, 0.5)) < rule.p_value
            else:
                fires = observed >= rule.factor * max(expected, 1.0)
            if fires:
                firing.append(Firing(rule, subject, observed, round(expected, 2)))
    return firing


def _turn(engine: Engine, rule_id: str, subject: str, on: bool, now: datetime) -> bool:
    """Set a (rule, subject)'s firing state; True only for the one call that changed it."""
    s = ALERT_STATE
    with engine.begin() as connection:
        changed = connection.execute(
            sa.update(s)
            .where(s.c.rule_id == rule_id, s.c.subject == subject, s.c.firing.is_(not on))
            .values(firing=on, changed_at=now)
        ).rowcount
        if changed == 1 or not on:
            return changed == 1
        try:
            with connection.begin_nested():
                connection.execute(
                    sa.insert(s).values(
                        rule_id=rule_id, subject=subject, firing=True, changed_at=now
                    )
                )
        except sa.exc.IntegrityError:
            return False  # someone else recorded it first (or it was already on)
        return True


@dataclass(frozen=True)
class Sender:
    """How deliveries are made: attempts, pauses between them, the signing key, the client."""

    secret: str
    attempts: int = 3
    first_pause_seconds: float = 1.0
    timeout_seconds: float = 5.0
    sleep: Callable[[float], None] = time.sleep


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _deliver(
    engine: Engine, sender: Sender, event: dict[str, Any], targets: dict[str, str]
) -> bool:
    """POST the event to each target until one answer is 2xx or attempts run out; record each
    attempt. True when every target took it."""
    body = json.dumps(event, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(sender.secret, body),
        "X-Refund-Risk-Event": event["event_id"],
    }
    all_taken = True
    with httpx.Client(timeout=sender.timeout_seconds) as client:
        for name, url in targets.items():
            taken = False
            for attempt in range(1, sender.attempts + 1):
                status, error = None, None
                try:
                    status = client.post(url, content=body, headers=headers).status_code
                    taken = 200 <= status < 300
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
                with engine.begin() as connection:
                    connection.execute(
                        sa.insert(ALERT_DELIVERIES).values(
                            event_id=event["event_id"],
                            target=name,
                            attempt=attempt,
                            attempted_at=datetime.now(UTC).replace(tzinfo=None),
                            status_code=status,
                            error=error,
                        )
                    )
                if taken:
                    break
                if attempt < sender.attempts:
                    sender.sleep(sender.first_pause_seconds * 2 ** (attempt - 1))
            all_taken = all_taken and taken
    return all_taken


def run(engine: Engine, alerts: AlertFile, sender: Sender, now: datetime) -> list[dict[str, Any]]:
    """Evaluate every rule at `now`, record and deliver each alert that starts firing, clear
    those that stopped; the events sent."""
    firing = evaluate(engine, alerts.rules, now)
    on = {(f.rule.id, f.subject) for f in firing}
    with engine.connect() as connection:
        was_on = {
            (r.rule_id, r.subject)
            for r in connection.execute(
                sa.select(ALERT_STATE.c.rule_id, ALERT_STATE.c.subject).where(
                    ALERT_STATE.c.firing.is_(True)
                )
            )
        }
    for rule_id, subject in was_on - on:
        _turn(engine, rule_id, subject, False, now)
    sent = []
    for f in firing:
        if not _turn(engine, f.rule.id, f.subject, True, now):
            continue
        event = {
            "event_id": uuid.uuid4().hex,
            "rule_id": f.rule.id,
            "subject": f.subject,
            "fired_at": now.isoformat() + "Z",
            "observed": f.observed,
            "expected": f.expected,
            "message": f.message,
        }
        with engine.begin() as connection:
            connection.execute(
                sa.insert(ALERT_EVENTS).values(
                    event_id=event["event_id"],
                    rule_id=f.rule.id,
                    subject=f.subject,
                    fired_at=now,
                    observed=f.observed,
                    expected=f.expected,
                    message=f.message,
                    delivered=False,
                )
            )
        targets = {n: alerts.webhooks[n].url for n in f.rule.notify}
        if targets and _deliver(engine, sender, event, targets):
            with engine.begin() as connection:
                connection.execute(
                    sa.update(ALERT_EVENTS)
                    .where(ALERT_EVENTS.c.event_id == event["event_id"])
                    .values(delivered=True)
                )
        sent.append(event)
    return sent


def recent(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    """The latest alerts, newest first, each with its delivery attempts."""
    with engine.connect() as connection:
        events = connection.execute(
            sa.select(ALERT_EVENTS).order_by(ALERT_EVENTS.c.fired_at.desc()).limit(limit)
        ).all()
        ids = [e.event_id for e in events]
        attempts = (
            connection.execute(
                sa.select(ALERT_DELIVERIES).where(ALERT_DELIVERIES.c.event_id.in_(ids))
            ).all()
            if ids
            else []
        )
    tried: dict[str, int] = {}
    for a in attempts:
        tried[a.event_id] = tried.get(a.event_id, 0) + 1
    return [{**e._mapping, "attempts": tried.get(e.event_id, 0)} for e in events]


def sender_for(alerts_file: AlertFile, secret: str | None) -> Sender:
    """The sender for this alerts file; a file that names a webhook needs a signing key."""
    if alerts_file.webhooks and not secret:
        raise ConfigurationError(
            "the alerts file names a webhook: set REFUND_RISK_ALERT_SECRET, the key that signs "
            "deliveries so the receiver can check they come from this service"
        )
    return Sender(secret or "")


async def evaluate_periodically(
    engine: Engine,
    alerts_file: AlertFile,
    sender: Sender,
    interval_seconds: float,
    clock: Callable[[], datetime],
) -> None:
    """Run the alert rules every `interval_seconds` until cancelled, off the event loop."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await asyncio.to_thread(run, engine, alerts_file, sender, clock())
        except Exception:  # an alert failing must never stop the service or the next run
            log.exception("alert evaluation failed; it runs again in %s s", interval_seconds)


def firing_now(engine: Engine) -> list[tuple[str, str, datetime]]:
    """(rule, subject, since) of every alert firing now."""
    s = ALERT_STATE
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(s.c.rule_id, s.c.subject, s.c.changed_at)
            .where(s.c.firing.is_(True))
            .order_by(s.c.changed_at.desc())
        ).all()
    return [(r.rule_id, r.subject, r.changed_at) for r in rows]
