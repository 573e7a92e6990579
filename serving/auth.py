"""API keys: created once and shown once, stored as a salted hash, carrying one role, revocable.

A key reads `rr_<key id>_<secret>`. The key id is public (it names the key in listings and
revocations); the secret is 32 random bytes. Only `sha256(salt + secret)` is stored. A slow
password hash is not needed: the secret is random and long, so there is nothing to guess, and a
fast hash keeps the check to about a microsecond per request.

The service keeps every key in memory and re-reads the table when its copy is older than
`api_key_cache_seconds`, so a key revoked from the command line stops working within that time
without a database query on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from refund_risk.errors import NotFoundError
from serving.db import API_KEYS

TOKEN_PREFIX = "rr"


class Role(StrEnum):
    """What a key may do."""

    SCORER = "scorer"
    """A refund system: asks for decisions, sends events, reads tiers."""
    REVIEWER = "reviewer"
    """Ops: works the review queue, sets overrides, reads stored decisions and tiers."""
    ADMIN = "admin"
    """Everything, including reloading models and the policy."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    role: Role
    name: str
    salt: str
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the key still opens the door."""
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and role."""

    key_id: str
    role: Role


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def hash_secret(salt: str, secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(f"{salt}{secret}".encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    parts = token.strip().split("_")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def create_key(engine: Engine, role: Role, name: str = "") -> tuple[ApiKey, str]:
    """Create a key; return it and its token, which is shown once and never stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32).replace("_", "-")  # "_" separates the token's parts
    salt = secrets.token_hex(16)
    key = ApiKey(key_id, role, name, salt, hash_secret(salt, secret), _now(), None)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(API_KEYS).values(
                key_id=key.key_id,
                role=key.role.value,
                name=key.name,
                salt=key.salt,
                secret_hash=key.secret_hash,
                created_at=key.created_at,
                revoked_at=None,
            )
        )
    return key, f"{TOKEN_PREFIX}_{key_id}_{secret}"


def list_keys(engine: Engine) -> list[ApiKey]:
    """Every key, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(API_KEYS).order_by(API_KEYS.c.created_at))
        return [
            ApiKey(
                r.key_id, Role(r.role), r.name, r.salt, r.secret_hash, r.created_at, r.revoked_at
            )
            for r in rows
        ]


def revoke_key(engine: Engine, key_id: str) -> ApiKey:
    """Revoke a key (idempotent); NotFoundError if there is no such key."""
    with engine.begin() as connection:
        connection.execute(
            sa.update(API_KEYS)
            .where(API_KEYS.c.key_id == key_id, API_KEYS.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
    for key in list_keys(engine):
        if key.key_id == key_id:
            return key
    raise NotFoundError(f"no API key with id {key_id!r}; `refund-risk keys list` shows them")


def revocation_notice(cache_seconds: float) -> str:
    """When a revoked key stops working in a running service, in words."""
    return (
        f"A running service refuses it within {cache_seconds:g} s (REFUND_RISK_API_KEY_CACHE_"
        "SECONDS: how long it trusts its copy of the keys); its ops-page sessions end with it. "
        "While the service cannot reach its database it keeps the keys it last read, so the "
        f"key is refused within {cache_seconds:g} s of the database answering again."
    )


class KeyRing:
    """The keys in memory, re-read from the database when older than `max_age` seconds."""

    def __init__(
        self, engine: Engine, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.max_age = max_age
        self._clock = clock
        self._keys: dict[str, ApiKey] = {}
        self._loaded_at: float | None = None
        # Tokens whose secret matched since the keys were last read, and who they stand for:
        # a caller sends the same token on every request, and hashing it costs more than the
        # rest of the check. Only tokens that matched get in, so the set cannot be grown by
        # guessing; it is emptied whenever the keys are re-read.
        self._verified: dict[str, Principal] = {}

    def refresh(self) -> None:
        """Re-read every key now."""
        self._keys = {k.key_id: k for k in list_keys(self.engine)}
        self._verified = {}
        self._loaded_at = self._clock()

    def _fresh(self) -> None:
        """Re-read the keys if the copy in memory is older than `max_age`."""
        if self._loaded_at is None or self._clock() - self._loaded_at >= self.max_age:
            try:
                self.refresh()
            except sa.exc.SQLAlchemyError:
                if self._loaded_at is None:
                    raise
                # The database is away: keep the keys known a moment ago, and try again after
                # another `max_age` rather than on every request.
                self._loaded_at = self._clock()

    def principal_for(self, key_id: str) -> Principal | None:
        """The principal of an active key by its id (a signed-in session names its key)."""
        self._fresh()
        key = self._keys.get(key_id)
        if key is None or not key.active:
            return None
        return Principal(key.key_id, key.role)

    def names(self) -> dict[str, str]:
        """Each key's name (its id when it has none), by key id: who did what, in words."""
        self._fresh()
        return {k.key_id: k.name or k.key_id for k in self._keys.values()}

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal a token stands for; None if it is missing, unknown or revoked."""
        if not token:
            return None
        self._fresh()
        known = self._verified.get(token)
        if known is not None:
            key = self._keys.get(known.key_id)
            return known if key is not None and key.active else None
        parts = split_token(token)
        if parts is None:
            return None
        key = self._keys.get(parts[0])
        if key is None or not key.active:
            return None
        if not hmac.compare_digest(key.secret_hash, hash_secret(key.salt, parts[1])):
            return None
        principal = self._verified[token] = Principal(key.key_id, key.role)
        return principal
