"""Who may use the review back office, and how they prove it.

The API (`serving.ops_api`) takes the `X-API-Key` header, like the rest of the service. The
pages (`serving.ops_pages`) take the header too, or a session opened by signing in with a
reviewer or admin key (a signed, HttpOnly cookie; see `serving.sessions`); their
state-changing forms carry the session's token. Reviewer and admin keys may use all of it;
scorer keys get 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader

from serving.auth import Principal, Role
from serving.errors import AuthenticationError, PermissionDeniedError
from serving.service import Service
from serving.sessions import COOKIE_NAME, Session, SessionSigner

API_KEY_HEADER = "X-API-Key"
OPS_ROLES = frozenset({Role.REVIEWER, Role.ADMIN})

PathId = Annotated[str, Path(min_length=1, max_length=64)]
"""An id in a URL path (a case, customer or decision id)."""

_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="A reviewer or admin key (`refund-risk keys create --role reviewer`).",
)


@dataclass(frozen=True)
class Caller:
    """An authenticated reviewer or admin, the service, and the session if one was used."""

    service: Service
    principal: Principal
    session: Session | None

    @property
    def who(self) -> str:
        """The key id, as resolutions and overrides record it."""
        return self.principal.key_id

    @property
    def is_admin(self) -> bool:
        """Whether the caller holds an admin key."""
        return self.principal.role == Role.ADMIN


def service_of(request: Request) -> Service:
    """The app's service."""
    service: Service = request.app.state.service
    return service


def _check_role(principal: Principal, allowed: frozenset[Role]) -> None:
    if principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise PermissionDeniedError(
            f"a {principal.role.value} key may not do this; it needs one of: {names}"
        )


def api_caller(*roles: Role) -> Callable[..., Awaitable[Caller]]:
    """A dependency for the API: a key of these roles (admin always) in the header."""
    allowed = frozenset((*roles, Role.ADMIN))

    async def caller(
        request: Request, token: Annotated[str | None, Security(_key_header)] = None
    ) -> Caller:
        service = service_of(request)
        if not token:
            raise AuthenticationError(f"an API key is required in the {API_KEY_HEADER} header")
        principal = service.keys.authenticate(token)
        if principal is None:
            raise AuthenticationError("the API key is unknown or revoked")
        _check_role(principal, allowed)
        return Caller(service, principal, None)

    return caller


AsReviewer = Annotated[Caller, Depends(api_caller(Role.REVIEWER))]


class SignInRequired(Exception):
    """A page was asked for without a key or session: the answer is the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageForbidden(Exception):
    """A page was asked for with a key whose role may not see it."""


class FormExpired(Exception):
    """A form was posted with a token its session no longer has (or none): the page that
    served it is older than the session, e.g. opened before the reviewer signed in again."""

    def __init__(self, retry_path: str) -> None:
        super().__init__(retry_path)
        self.retry_path = retry_path


async def page_caller(request: Request) -> Caller:
    """A dependency for pages: a reviewer or admin key in the header, or a signed-in session."""
    service = service_of(request)
    token = request.headers.get(API_KEY_HEADER)
    session: Session | None = None
    principal: Principal | None
    if token:
        principal = service.keys.authenticate(token)
    else:
        signer: SessionSigner = request.app.state.ops_sessions
        session = signer.read(request.cookies.get(COOKIE_NAME))
        principal = None if session is None else service.keys.principal_for(session.key_id)
    if principal is None:
        raise SignInRequired(request.url.path)
    if principal.role not in OPS_ROLES:
        raise PageForbidden(principal.role.value)
    return Caller(service, principal, session)


AsPageUser = Annotated[Caller, Depends(page_caller)]


def safe_next(value: str | None) -> str:
    """Only paths of the ops pages are followed after sign-in (no open redirect)."""
    if value and value.startswith("/ops/") and not value.startswith("//"):
        return value
    return "/ops/queue"


async def read_form(request: Request, caller: Caller) -> dict[str, str]:
    """The posted form, after checking its token when the caller came with a session cookie."""
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if caller.session is not None and values.get("csrf") != caller.session.csrf:
        raise FormExpired(safe_next(urlsplit(request.headers.get("referer", "")).path))
    return values
