"""One mapping from errors to HTTP answers, and one error body for all of them.

Domain code raises the project's own errors (`refund_risk.errors`); this module alone turns them
into status codes. Every error answer has the body `{"error": {"code", "message", "fields"}}`,
where `fields` names each bad field of the request. Anything unexpected is logged with a
reference and answered in the same shape, never with a stack trace.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from refund_risk.errors import (
    ConfigurationError,
    DataValidationError,
    FactConflictError,
    FieldsError,
    IdempotencyConflictError,
    InvalidFieldsError,
    NotFoundError,
    RefundRiskError,
)
from serving.schemas import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)


class ServiceError(RefundRiskError):
    """An error of the service itself (not of the domain)."""


class DatabaseUnavailableError(ServiceError):
    """The database did not take a write or answer a read; the caller should retry."""


class AuthenticationError(ServiceError):
    """No API key, or one that is unknown or revoked."""


class PermissionDeniedError(ServiceError):
    """The key is valid but its role may not do this."""


class ConflictError(ServiceError):
    """The request lost to a concurrent change (a case claimed or resolved by someone else)."""


class RequestTooLargeError(DataValidationError):
    """More items than a call may carry; `field` names the list."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class BodyTooLargeError(StarletteHTTPException):
    """A request body over the service's limit (`max_body_bytes`).

    An HTTP exception, not a domain error: it is raised while the framework reads the body,
    which passes HTTP exceptions through and turns anything else into a 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit:,} bytes")
        self.limit = limit


# Where a database error means "not available right now" (retry), rather than a bug.
_UNAVAILABLE = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
    sa.exc.DisconnectionError,
)


@dataclass(frozen=True)
class HttpError:
    """An error as the API answers it."""

    status: int
    body: ErrorBody
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        """The JSON answer."""
        return JSONResponse(
            {"error": self.body.model_dump()}, status_code=self.status, headers=self.headers
        )


def _field_path(loc: Sequence[int | str]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        # The body's own fields are named bare (`order.amount`); other places keep their name.
        parts = parts[1:] if parts[0] == "body" else parts
    return ".".join(str(p) for p in parts) or "body"


MAX_MESSAGE_CHARS = 300
"""Longest message of one bad field: a message quoting the caller's value quotes a prefix."""

# Pydantic prefixes the messages of a validator's own errors with their kind; the caller
# needs the sentence alone.
_PREFIXES = ("Value error, ", "Assertion failed, ")
# Messages that name an internal class ("a valid dictionary or instance of OrderDetails").
_OBJECT_KINDS = frozenset({"model_type", "model_attributes_type", "dict_type"})


def plain_message(kind: str, message: str) -> str:
    """Pydantic's message for one problem, in the words a caller reads."""
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    if kind in _OBJECT_KINDS:
        return "must be a JSON object"
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return message


def validation_fields(errors: Sequence[Any]) -> list[ErrorDetail]:
    """Pydantic's error list as bad fields, one per problem."""
    fields = []
    for err in errors:
        kind = str(err.get("type", "value_error"))
        message = plain_message(kind, str(err.get("msg", "invalid")))
        fields.append(
            ErrorDetail(field=_field_path(err.get("loc", ())), message=message, type=kind)
        )
    return fields


def _line_and_column(document: Any, position: int) -> tuple[int, int]:
    """1-based line and column of a character position in a JSON document."""
    text = document.decode("utf-8", "replace") if isinstance(document, bytes) else str(document)
    before = text[:position]
    line = before.count("\n") + 1
    return line, position - (before.rfind("\n") + 1) + 1


def malformed_json(exc: RequestValidationError) -> HttpError | None:
    """The answer to a body that is not JSON at all (None if the body parsed)."""
    for err in exc.errors():
        if err.get("type") != "json_invalid":
            continue
        loc = err.get("loc", ())
        position = loc[-1] if loc and isinstance(loc[-1], int) else 0
        line, column = _line_and_column(exc.body, position)
        reason = str((err.get("ctx") or {}).get("error", "not valid JSON"))
        return malformed_json_error(f"{reason} at line {line}, column {column}")
    return None


def malformed_json_error(detail: str) -> HttpError:
    """A 400 for a body that is not a JSON document; `detail` says where and why."""
    return HttpError(
        400,
        ErrorBody(
            code="malformed_json",
            message=f"the request body is not valid JSON: {detail}",
            fields=[ErrorDetail(field="body", message=detail, type="json_invalid")],
        ),
    )


def _invalid(fields: list[ErrorDetail]) -> ErrorBody:
    count = len(fields)
    return ErrorBody(
        code="validation_error",
        message=f"{count} field{'s are' if count != 1 else ' is'} invalid",
        fields=fields,
    )


def _named(exc: FieldsError) -> list[ErrorDetail]:
    return [ErrorDetail(field=f, message=m, type=t) for f, m, t in exc.fields]


def http_error(exc: BaseException, retry_after: int) -> HttpError:
    """The HTTP answer for any error (the catch-all logs what it did not expect)."""
    if isinstance(exc, RequestValidationError):
        return malformed_json(exc) or HttpError(422, _invalid(validation_fields(exc.errors())))
    if isinstance(exc, ValidationError):
        return HttpError(422, _invalid(validation_fields(exc.errors())))
    if isinstance(exc, InvalidFieldsError):
        return HttpError(422, _invalid(_named(exc)))
    if isinstance(exc, IdempotencyConflictError):
        body = ErrorBody(code="idempotency_conflict", message=str(exc), fields=_named(exc))
        return HttpError(409, body)
    if isinstance(exc, FactConflictError):
        return HttpError(
            409, ErrorBody(code="order_conflict", message=str(exc), fields=_named(exc))
        )
    if isinstance(exc, RequestTooLargeError):
        detail = ErrorDetail(field=exc.field, message=str(exc), type="too_long")
        return HttpError(422, ErrorBody(code="too_many_items", message=str(exc), fields=[detail]))
    if isinstance(exc, (DatabaseUnavailableError, *_UNAVAILABLE)):
        message = (
            str(exc)
            if isinstance(exc, DatabaseUnavailableError)
            else "the database is not available; retry later with the same request"
        )
        if not isinstance(exc, DatabaseUnavailableError):
            log.warning("database unavailable: %s", exc)
        return HttpError(
            503,
            ErrorBody(code="database_unavailable", message=message),
            {"Retry-After": str(retry_after)},
        )
    if isinstance(exc, AuthenticationError):
        return HttpError(
            401,
            ErrorBody(code="unauthenticated", message=str(exc)),
            {"WWW-Authenticate": 'ApiKey header="X-API-Key"'},
        )
    if isinstance(exc, PermissionDeniedError):
        return HttpError(403, ErrorBody(code="forbidden", message=str(exc)))
    if isinstance(exc, ConflictError):
        return HttpError(409, ErrorBody(code="conflict", message=str(exc)))
    if isinstance(exc, NotFoundError):
        return HttpError(404, ErrorBody(code="not_found", message=str(exc)))
    if isinstance(exc, DataValidationError):
        return HttpError(422, ErrorBody(code="invalid_data", message=str(exc)))
    if isinstance(exc, ConfigurationError):
        return HttpError(409, ErrorBody(code="configuration_error", message=str(exc)))
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 400:
        # The framework's only 400: a body it could not read as JSON (not UTF-8, say).
        return malformed_json_error("it could not be read as JSON text in UTF-8")
    if isinstance(exc, StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        code = codes.get(exc.status_code, "http_error")
        return HttpError(
            exc.status_code, ErrorBody(code=code, message=str(exc.detail)), dict(exc.headers or {})
        )
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected error %s", reference, exc_info=exc)
    return HttpError(
        500,
        ErrorBody(
            code="internal_error",
            message=f"unexpected error; the service log has it under {reference}",
        ),
    )


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    """Answer every error, expected or not, with the one error body."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return http_error(exc, retry_after).response()

    for kind in (
        RequestValidationError,
        StarletteHTTPException,
        RefundRiskError,
        sa.exc.SQLAlchemyError,
        Exception,
    ):
        app.add_exception_handler(kind, handle)
