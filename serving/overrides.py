"""Analysts' overrides: a customer's tier pinned for a while, and the watch list.

Both are kept in the database (every pin and entry stays, ended rather than deleted, so a past
decision can be explained) and in memory: the decision path asks `Overrides.active`, a dict
lookup, and never reads the database. Writes go to the database first, then to memory, so a
restarted service starts from what was stored. One process owns the writes, as it owns the
event store's appends; another process sees them when it starts.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from refund_risk.errors import DataValidationError, NotFoundError
from serving.db import TIER_PINS, WATCHLIST

TIER_SOURCE_PINNED = "pinned"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class TierPin:
    """A tier set by an analyst for one customer, until `expires_at`."""

    pin_id: str
    customer_id: str
    tier: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime

    def reason_text(self) -> str:
        """The pin as a reviewer reads it among a decision's reasons."""
        return (
            f"Tier pinned to {self.tier} by an analyst until "
            f"{self.expires_at:%Y-%m-%d %H:%M} UTC: {self.reason}"
        )


@dataclass(frozen=True)
class WatchEntry:
    """An account on the watch list, until `until` (None: until removed)."""

    entry_id: str
    customer_id: str
    reason: str
    created_by: str
    created_at: datetime
    until: datetime | None

    def reason_text(self) -> str:
        """The entry as a reviewer reads it among a decision's reasons."""
        return f"Watch list note: {self.reason}"


@dataclass(frozen=True)
class ActiveOverride:
    """What applies to one customer's decision now: a pin, a watch-list entry, or both."""

    pin: TierPin | None
    watch: WatchEntry | None

    @property
    def watchlisted(self) -> bool:
        """Whether the policy should see the customer as watch-listed."""
        return self.watch is not None

    @property
    def pinned_tier(self) -> str | None:
        """The pinned tier's name, if a pin applies."""
        return None if self.pin is None else self.pin.tier

    def reasons(self) -> list[str]:
        """Sentences for the decision's reasons, pin first."""
        out = []
        if self.pin is not None:
            out.append(self.pin.reason_text())
        if self.watch is not None:
            out.append(self.watch.reason_text())
        return out


class Overrides:
    """Tier pins and watch-list entries: stored in the database, answered from memory."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _now) -> None:
        self.engine = engine
        self._clock = clock
        self._pins: dict[str, TierPin] = {}
        self._watch: dict[str, WatchEntry] = {}
        # Writes come from request handlers and tests' threads; reads are single dict lookups.
        self._lock = threading.Lock()

    def load(self) -> None:
        """Read the pins and entries in force from the database (service start)."""
        now = self._clock()
        pins: dict[str, TierPin] = {}
        watch: dict[str, WatchEntry] = {}
        with self.engine.connect() as connection:
            for r in connection.execute(
                sa.select(TIER_PINS)
                .where(TIER_PINS.c.removed_at.is_(None), TIER_PINS.c.expires_at > now)
                .order_by(TIER_PINS.c.created_at)
            ):
                pins[r.customer_id] = TierPin(
                    r.pin_id,
                    r.customer_id,
                    r.tier,
                    r.reason,
                    r.created_by,
                    r.created_at,
                    r.expires_at,
                )
            for r in connection.execute(
                sa.select(WATCHLIST)
                .where(
                    WATCHLIST.c.removed_at.is_(None),
                    sa.or_(WATCHLIST.c.until.is_(None), WATCHLIST.c.until > now),
                )
                .order_by(WATCHLIST.c.created_at)
            ):
                watch[r.customer_id] = WatchEntry(
                    r.entry_id, r.customer_id, r.reason, r.created_by, r.created_at, r.until
                )
        with self._lock:
            self._pins, self._watch = pins, watch

    # --- the decision path ---------------------------------------------------------------------

    def active(self, customer_id: str, at: datetime | None = None) -> ActiveOverride | None:
        """The overrides in force for a customer now; None (the usual case) if there are none."""
        pin = self._pins.get(customer_id)
        watch = self._watch.get(customer_id)
        if pin is None and watch is None:
            return None
        now = at or self._clock()
        if pin is not None and pin.expires_at <= now:
            pin = None
        if watch is not None and watch.until is not None and watch.until <= now:
            watch = None
        if pin is None and watch is None:
            return None
        return ActiveOverride(pin, watch)

    # --- listing -------------------------------------------------------------------------------

    def pins(self) -> list[TierPin]:
        """Pins in force, newest first."""
        now = self._clock()
        return sorted(
            (p for p in self._pins.values() if p.expires_at > now),
            key=lambda p: p.created_at,
            reverse=True,
        )

    def watchlist(self) -> list[WatchEntry]:
        """Watch-list entries in force, newest first."""
        now = self._clock()
        return sorted(
            (w for w in self._watch.values() if w.until is None or w.until > now),
            key=lambda w: w.created_at,
            reverse=True,
        )

    # --- writing -------------------------------------------------------------------------------

    def pin_tier(
        self,
        customer_id: str,
        tier: str,
        expires_at: datetime,
        reason: str,
        who: str,
        known_tiers: tuple[str, ...],
    ) -> TierPin:
        """Pin a customer's tier until `expires_at`; a pin already in force is ended by it."""
        if tier not in known_tiers:
            raise DataValidationError(f"unknown tier {tier!r}; tiers are {', '.join(known_tiers)}")
        now = self._clock()
        if expires_at <= now:
            raise DataValidationError("expires_at must be in the future")
        pin = TierPin(secrets.token_hex(8), customer_id, tier, reason.strip(), who, now, expires_at)
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(TIER_PINS)
                .where(TIER_PINS.c.customer_id == customer_id, TIER_PINS.c.removed_at.is_(None))
                .values(removed_at=now)
            )
            connection.execute(
                sa.insert(TIER_PINS).values(
                    pin_id=pin.pin_id,
                    customer_id=customer_id,
                    tier=tier,
                    reason=pin.reason,
                    created_by=who,
                    created_at=now,
                    expires_at=expires_at,
                    removed_at=None,
                )
            )
        with self._lock:
            self._pins[customer_id] = pin
        return pin

    def unpin(self, customer_id: str) -> None:
        """End a customer's pin; NotFoundError if none is in force."""
        now = self._clock()
        if customer_id not in self._pins:
            raise NotFoundError(f"customer {customer_id!r} has no tier pin in force")
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(TIER_PINS)
                .where(TIER_PINS.c.customer_id == customer_id, TIER_PINS.c.removed_at.is_(None))
                .values(removed_at=now)
            )
        with self._lock:
            self._pins.pop(customer_id, None)

    def watch(self, customer_id: str, reason: str, who: str, until: datetime | None) -> WatchEntry:
        """Put an account on the watch list (replacing an entry already in force)."""
        now = self._clock()
        if until is not None and until <= now:
            raise DataValidationError("until must be in the future")
        entry = WatchEntry(secrets.token_hex(8), customer_id, reason.strip(), who, now, until)
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(WATCHLIST)
                .where(WATCHLIST.c.customer_id == customer_id, WATCHLIST.c.removed_at.is_(None))
                .values(removed_at=now)
            )
            connection.execute(
                sa.insert(WATCHLIST).values(
                    entry_id=entry.entry_id,
                    customer_id=customer_id,
                    reason=entry.reason,
                    created_by=who,
                    created_at=now,
                    until=until,
                    removed_at=None,
                )
            )
        with self._lock:
            self._watch[customer_id] = entry
        return entry

    def unwatch(self, customer_id: str) -> None:
        """Take an account off the watch list; NotFoundError if it is not on it."""
        now = self._clock()
        if customer_id not in self._watch:
            raise NotFoundError(f"customer {customer_id!r} is not on the watch list")
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(WATCHLIST)
                .where(WATCHLIST.c.customer_id == customer_id, WATCHLIST.c.removed_at.is_(None))
                .values(removed_at=now)
            )
        with self._lock:
            self._watch.pop(customer_id, None)


def tier_source(override: ActiveOverride | None, tier: str, tier_score: float | None) -> str:
    """Where a decision's tier came from: `pinned`, `model` (a score) or `default`."""
    if override is not None and override.pinned_tier == tier:
        return TIER_SOURCE_PINNED
    return "default" if tier_score is None else "model"
