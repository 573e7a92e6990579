"""The refund id as an idempotency key bound to its request, as payment APIs bind theirs.

A request is kept in its canonical form: the validated request as the request schema writes it
(times in UTC, numbers as numbers, defaults filled in, fields in schema order), so the same
request sent with other spacing, key order, time zone or an omitted default is the same
request. Its fingerprint is the SHA-256 of that form; the decision log keeps both (the form as
the stored request, the fingerprint beside it). The same refund id with the same fingerprint is
a retry (the stored decision is returned); with another, a conflict that names the fields that
differ, read off the two canonical forms, and says nothing of the stored decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from refund_risk.errors import IdempotencyConflictError
from serving.schemas import RefundDecisionRequest


def canonical_request(request: RefundDecisionRequest) -> str:
    """The request's canonical JSON (what the decision log stores as the request)."""
    return request.model_dump_json()


def fingerprint(canonical: str) -> str:
    """The SHA-256 (hex) of a canonical request."""
    return hashlib.sha256(canonical.encode()).hexdigest()


def _differing(before: Any, after: Any, path: str) -> Iterator[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        for name in dict.fromkeys([*before, *after]):
            yield from _differing(
                before.get(name), after.get(name), f"{path}.{name}" if path else name
            )
    elif before != after:
        yield path or "body"


def recanonical(stored: str) -> str:
    """A stored request in today's canonical form (one stored by an older version may lack a
    field added since with a default); as stored if it no longer reads as a request."""
    try:
        return RefundDecisionRequest.model_validate_json(stored).model_dump_json()
    except ValueError:
        return stored


def differing_fields(stored: str, sent: str) -> list[str]:
    """The dotted names of the fields whose values differ between a stored request and a
    canonical one sent now (`order.amount`; a whole object, e.g. `customer`, when one side has
    none). Empty when they are the same request written in two canonical forms."""
    return list(_differing(orjson.loads(recanonical(stored)), orjson.loads(sent), ""))


def check_retry(refund_id: str, stored_hash: str | None, stored: str, sent: str) -> None:
    """Raise the conflict if `sent` (canonical) is not the request stored for the refund id
    (`stored_hash` its fingerprint; None: hash `stored`)."""
    if (stored_hash or fingerprint(stored)) == fingerprint(sent):
        return
    fields = differing_fields(stored, sent)
    if fields:
        raise conflict(refund_id, fields)


def conflict(refund_id: str, fields: list[str]) -> IdempotencyConflictError:
    """The error for a refund id used again with a different request."""
    names = ", ".join(fields) if fields else "the request"
    return IdempotencyConflictError(
        f"refund_id {refund_id!r} was already used for a different request; a retry must "
        f"send the same request, a new request needs a new refund_id (differs: {names})",
        [
            (field, "differs from the request first sent with this refund_id", "idempotency")
            for field in fields
        ],
    )
