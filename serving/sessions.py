"""Signed session cookies for the ops pages, and the per-session token their forms carry.

A session is a small JSON payload (the key id and role it was opened with, a random form token
and an expiry), base64-encoded and signed with HMAC-SHA256 under the service's session secret.
Nothing is stored server-side: the cookie is HttpOnly, so page scripts cannot read it, and every
request re-checks that its key is still active, so revoking a key ends its sessions too.

The form token defends the state-changing forms against cross-site requests: a POST made with
the cookie must also carry the token, which only pages of this origin can read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE_NAME = "rr_ops_session"
COOKIE_PATH = "/ops"


@dataclass(frozen=True)
class Session:
    """An open session: who signed in, with which role, and the token its forms carry."""

    key_id: str
    role: str
    csrf: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Makes and checks session cookies with one secret."""

    def __init__(self, secret: str | None, max_age_seconds: float) -> None:
        # Without a configured secret, a random one: sessions then end when the service stops.
        self._secret = (secret or secrets.token_urlsafe(32)).encode()
        self.max_age = max_age_seconds

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def open(self, key_id: str, role: str, now: float | None = None) -> tuple[Session, str]:
        """A new session and its cookie value."""
        expires = (time.time() if now is None else now) + self.max_age
        session = Session(key_id, role, secrets.token_urlsafe(24), expires)
        payload = {"k": key_id, "r": role, "c": session.csrf, "e": expires}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return session, f"{body}.{self._sign(body)}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries; None if it is missing, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            payload = json.loads(_unb64(body))
            session = Session(
                str(payload["k"]), str(payload["r"]), str(payload["c"]), float(payload["e"])
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session
