"""The API's own ASGI middleware: what every route passes through before it is matched.

Each is a plain ASGI callable (Starlette's `BaseHTTPMiddleware` would cost more per request
than what it does), installed with `app.add_middleware`, so it sees every request, the
decision route included, in the order the app adds them.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import BodyTooLargeError, http_error
from serving.schemas import ErrorBody
from serving.startup import StartState

WHILE_STARTING = frozenset(
    {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
"""What a served process answers before its service is built (with the OpenAPI document)."""

STARTING_RETRY_AFTER_SECONDS = 5


class BodyLimitMiddleware:
    """Refuses a request body over `limit` bytes with 413, before any key is checked.

    A body declaring a larger length is answered before a byte of it is read; a body sent in
    chunks (no length declared) is read only until its chunks pass the limit: reading past it
    raises `BodyTooLargeError`, which the error handlers answer with the same 413.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await http_error(BodyTooLargeError(self.limit), 0).response()(scope, receive, send)
            return
        await self.app(scope, _limited(receive, self.limit), send)


class StartingMiddleware:
    """Answers 503 `starting` (or the start's failure) to every request that needs the
    service while a served process still builds it; `WHILE_STARTING` paths pass."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.state.service is None
            and scope["path"] not in WHILE_STARTING
        ):
            starting: StartState | None = self.state.starting
            if starting is not None:
                await _not_started(starting)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _not_started(starting: StartState) -> JSONResponse:
    """The answer to a request that needs the service before it is built."""
    if starting.failure is not None:
        message = f"the service failed to start: {starting.failure}"
    else:
        message = "the service is starting (loading the event history and the models); retry"
    return JSONResponse(
        {"error": ErrorBody(code="starting", message=message).model_dump()},
        status_code=503,
        headers={"Retry-After": str(STARTING_RETRY_AFTER_SECONDS)},
    )


def _content_length(scope: Scope) -> int | None:
    """The body length a request declares, if it declares a readable one."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising `BodyTooLargeError` once the body's chunks pass `limit` bytes (a
    body sent in chunks declares no length)."""
    total = 0

    async def counted() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise BodyTooLargeError(limit)
        return message

    return counted
