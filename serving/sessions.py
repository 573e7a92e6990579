"""Signed session cookies for the ops pages, and the tokens their forms carry.

A session is a small payload (the key id and role it was opened with, a random form token and
an expiry), signed with the service's session secret by `itsdangerous` (HMAC-SHA256, with a
key derived from the secret and a salt per use). Nothing is stored server-side: the cookie is
HttpOnly, so page scripts cannot read it, and every request re-checks that its key is still
active, so revoking a key ends its sessions too. A cookie that is not one of ours, whatever
its bytes, is no session.

The form token defends the state-changing forms against cross-site requests: a POST made with
the cookie must also carry the token, which only pages of this origin can read. The sign-in
form, shown before there is a session, gets the same defence from a short-lived signed cookie
of its own (`SIGN_IN_COOKIE`) whose token the form must echo.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, URLSafeSerializer

COOKIE_NAME = "rr_ops_session"
COOKIE_PATH = "/ops"
SIGN_IN_COOKIE = "rr_ops_sign_in"
SIGN_IN_PATH = "/ops/login"
SIGN_IN_SECONDS = 3600.0
"""How long a sign-in form stays good to post."""


@dataclass(frozen=True)
class Session:
    """An open session: who signed in, with which role, and the token its forms carry."""

    key_id: str
    role: str
    csrf: str
    expires: float


class SessionSigner:
    """Makes and checks session cookies (and sign-in form tokens) with one secret."""

    def __init__(self, secret: str | None, max_age_seconds: float) -> None:
        # Without a configured secret, a random one: sessions then end when the service stops.
        key = secret or secrets.token_urlsafe(32)
        sha256 = {"digest_method": hashlib.sha256}
        self._sessions = URLSafeSerializer(key, salt="rr-ops-session", signer_kwargs=sha256)
        self._sign_in = URLSafeSerializer(key, salt="rr-ops-sign-in", signer_kwargs=sha256)
        self.max_age = max_age_seconds

    def open(self, key_id: str, role: str, now: float | None = None) -> tuple[Session, str]:
        """A new session and its cookie value."""
        expires = (time.time() if now is None else now) + self.max_age
        session = Session(key_id, role, secrets.token_urlsafe(24), expires)
        payload = {"k": key_id, "r": role, "c": session.csrf, "e": expires}
        return session, self._sessions.dumps(payload)

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries; None if it is missing, forged, malformed or expired."""
        payload = _loads(self._sessions, cookie)
        if payload is None:
            return None
        try:
            session = Session(
                str(payload["k"]), str(payload["r"]), str(payload["c"]), float(payload["e"])
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def sign_in_token(self, now: float | None = None) -> tuple[str, str]:
        """A fresh sign-in form token and the cookie value that vouches for it."""
        token = secrets.token_urlsafe(24)
        expires = (time.time() if now is None else now) + SIGN_IN_SECONDS
        return token, self._sign_in.dumps({"t": token, "e": expires})

    def sign_in_ok(self, cookie: str | None, token: str | None, now: float | None = None) -> bool:
        """Whether a posted sign-in form's token is the one its cookie vouches for, in time."""
        payload = _loads(self._sign_in, cookie)
        if payload is None or not token:
            return False
        expected, expires = payload.get("t"), payload.get("e")
        if not isinstance(expected, str) or not isinstance(expires, int | float):
            return False
        if expires <= (time.time() if now is None else now):
            return False
        return secrets.compare_digest(expected.encode(), token.encode())


def _loads(serializer: URLSafeSerializer, cookie: str | None) -> dict[str, Any] | None:
    """The signed payload of a cookie, or None for anything that is not one of ours."""
    if not cookie:
        return None
    try:
        payload = serializer.loads(cookie)
    except (BadData, UnicodeError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None
