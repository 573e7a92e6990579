"""The review queue and overrides API (`/v1/reviews`, `/v1/overrides`), for reviewer and admin
keys in the `X-API-Key` header.

Routes parse and call the action handlers (`serving.review_actions`), which the pages call
too; the rules live in the queue (`serving.reviews`) and the overrides (`serving.overrides`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from serving import review_actions
from serving.ops_access import AsReviewer, PathId
from serving.ops_schemas import (
    CaseDetailOut,
    CaseOut,
    CasePageOut,
    NextCaseOut,
    OverridesOut,
    ResolutionOut,
    ResolveIn,
    TierPinIn,
    TierPinOut,
    WatchIn,
    WatchOut,
)
from serving.reviews import CaseSort, CaseStatus
from serving.schemas import ErrorResponse

PAGE_SIZE = 50
MAX_OFFSET = 1_000_000
"""Deepest a page of cases may start; filters narrow a longer queue better than paging."""
MAX_AGE_HOURS = 24.0 * 366 * 100
"""Largest case age a filter may name (a century): larger ones cannot be a moment in time."""
MAX_AMOUNT = 1e9
"""Largest amount a filter may name, as large as any refund may be."""

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorResponse, "description": "The key's role may not do this."},
    404: {"model": ErrorResponse, "description": "No such case."},
    422: {"model": ErrorResponse, "description": "Invalid request; `fields` names each."},
    503: {
        "model": ErrorResponse,
        "description": "The database did not answer; retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorResponse,
        "description": "Someone else holds the claim, or resolved the case first.",
    }
}


# --- the queue -----------------------------------------------------------------------------------


@router.get(
    "/v1/reviews",
    response_model=CasePageOut,
    responses=_ERRORS,
    tags=["reviews"],
    summary="List review cases",
)
async def list_cases(
    caller: AsReviewer,
    status: Annotated[CaseStatus, Query(description="Which cases.")] = CaseStatus.OPEN,
    tier: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[
        str | None, Query(max_length=64, description="Reason or detailed reason.")
    ] = None,
    category: Annotated[str | None, Query(max_length=64)] = None,
    min_amount: Annotated[float | None, Query(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)] = None,
    max_amount: Annotated[float | None, Query(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)] = None,
    min_age_hours: Annotated[
        float | None, Query(ge=0, le=MAX_AGE_HOURS, allow_inf_nan=False)
    ] = None,
    max_age_hours: Annotated[
        float | None, Query(ge=0, le=MAX_AGE_HOURS, allow_inf_nan=False)
    ] = None,
    sort: Annotated[
        CaseSort, Query(description="age (oldest first), risk or amount (highest first).")
    ] = CaseSort.AGE,
    order: Annotated[
        str | None, Query(pattern="^(asc|desc)$", description="Reverse the natural order.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> CasePageOut:
    """Cases, filtered, sorted and one page at a time. Roles: reviewer, admin."""
    query = review_actions.case_query(
        status,
        tier,
        reason,
        category,
        min_amount,
        max_amount,
        min_age_hours,
        max_age_hours,
        sort,
        order,
        limit,
        offset,
    )
    return review_actions.list_cases(caller, query)


@router.get(
    "/v1/reviews/{case_id}",
    response_model=CaseDetailOut,
    responses=_ERRORS,
    tags=["reviews"],
    summary="One case with everything needed to decide it",
)
async def get_case(case_id: PathId, caller: AsReviewer) -> CaseDetailOut:
    """The case, its decision and reasons, the request, the customer's history, linked
    accounts, tier and privileges, and similar past cases. Roles: reviewer, admin."""
    return review_actions.case_detail(caller.service, case_id)


@router.post(
    "/v1/reviews/{case_id}/claim",
    response_model=CaseOut,
    responses={**_ERRORS, **_CONFLICT},
    tags=["reviews"],
    summary="Claim a case",
)
async def claim_case(case_id: PathId, caller: AsReviewer) -> CaseOut:
    """Take a case for the claim period (claiming one's own claim again renews it); 409 when
    someone else holds it or it is resolved. Roles: reviewer, admin."""
    return review_actions.claim(caller, case_id)


@router.post(
    "/v1/reviews/next",
    response_model=NextCaseOut,
    responses={
        **{k: v for k, v in _ERRORS.items() if k != 404},
        409: {
            "model": ErrorResponse,
            "description": "The caller already holds as many open cases as they may.",
        },
    },
    tags=["reviews"],
    summary="Take the next case",
)
async def next_case(request: Request, caller: AsReviewer) -> NextCaseOut:
    """Claim the most urgent free case within the caller's limits: oldest first, then riskiest,
    never one asking back more than the caller may decide, never one someone else holds. Two
    reviewers asking at once never get the same case. 409 when the caller already holds their
    most open cases. Roles: reviewer, admin."""
    return await review_actions.take_next(caller, request.app.state.reviewer_limits)


@router.post(
    "/v1/reviews/{case_id}/release",
    response_model=CaseOut,
    responses={**_ERRORS, **_CONFLICT},
    tags=["reviews"],
    summary="Release a claimed case",
)
async def release_case(
    case_id: PathId,
    caller: AsReviewer,
    force: Annotated[bool, Query(description="Admin only: release anyone's claim.")] = False,
) -> CaseOut:
    """Give the case back to the queue; only its claimant may (an admin may `force`).
    Roles: reviewer, admin."""
    return review_actions.release(caller, case_id, force=force)


@router.post(
    "/v1/reviews/{case_id}/resolve",
    response_model=ResolutionOut,
    responses={**_ERRORS, **_CONFLICT},
    tags=["reviews"],
    summary="Resolve a case",
)
async def resolve_case(
    case_id: PathId,
    body: ResolveIn,
    caller: AsReviewer,
) -> ResolutionOut:
    """Decide the case. Of two reviewers resolving the same case, exactly one wins; the other
    gets 409 and the winner's decision stands. The resolution becomes an outcome of the refund
    request (source `reviewer`), seen by the next decision and the next training table.
    Roles: reviewer, admin."""
    return review_actions.resolve(caller, case_id, body)


# --- overrides ------------------------------------------------------------------------------


@router.get(
    "/v1/overrides",
    response_model=OverridesOut,
    responses=_ERRORS,
    tags=["overrides"],
    summary="Tier pins and watch list in force",
)
async def list_overrides(caller: AsReviewer) -> OverridesOut:
    """Every tier pin and watch-list entry in force. Roles: reviewer, admin."""
    return review_actions.list_overrides(caller)


@router.post(
    "/v1/overrides/tier-pins",
    response_model=TierPinOut,
    responses=_ERRORS,
    tags=["overrides"],
    summary="Pin a customer's tier",
)
async def pin_tier(body: TierPinIn, caller: AsReviewer) -> TierPinOut:
    """The pinned tier replaces the model's in every decision until `expires_at`; decisions
    show `tier_source: pinned` and the pin's reason. Roles: reviewer, admin."""
    return review_actions.pin_tier(caller, body)


@router.delete(
    "/v1/overrides/tier-pins/{customer_id}",
    status_code=204,
    responses=_ERRORS,
    tags=["overrides"],
    summary="End a customer's tier pin",
)
async def unpin_tier(customer_id: PathId, caller: AsReviewer) -> Response:
    """The model's tier applies again from the next decision. Roles: reviewer, admin."""
    review_actions.unpin_tier(caller, customer_id)
    return Response(status_code=204)


@router.post(
    "/v1/overrides/watchlist",
    response_model=WatchOut,
    responses=_ERRORS,
    tags=["overrides"],
    summary="Put an account on the watch list",
)
async def watch(body: WatchIn, caller: AsReviewer) -> WatchOut:
    """The policy sees the customer as watch-listed (the shipped policy sends such requests to
    review) and decisions carry the entry's reason. Roles: reviewer, admin."""
    return review_actions.watch(caller, body)


@router.delete(
    "/v1/overrides/watchlist/{customer_id}",
    status_code=204,
    responses=_ERRORS,
    tags=["overrides"],
    summary="Take an account off the watch list",
)
async def unwatch(customer_id: PathId, caller: AsReviewer) -> Response:
    """From the next decision on, the customer is no longer watch-listed. Roles: reviewer,
    admin."""
    review_actions.unwatch(caller, customer_id)
    return Response(status_code=204)
