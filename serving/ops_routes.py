"""Ops: the review queue and overrides API (`/v1/reviews`, `/v1/overrides`) and the pages
reviewers work in (`/ops/...`), served by the same app.

The API takes the `X-API-Key` header, like the rest of the service. The pages take the header
too, or a session opened by signing in with a reviewer or admin key (a signed, HttpOnly cookie;
see `serving.sessions`); their state-changing forms carry the session's token. Reviewer and
admin keys may use all of it; scorer keys get 403. Pages are rendered on the server from the
templates beside this module; their stylesheet and script are served by the app, so nothing is
fetched from the internet.

Routes parse, call the queue (`serving.reviews`), the overrides (`serving.overrides`) or the
dashboard (`serving.dashboard`), and format; the rules live there.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from data.schema import REASONS
from refund_risk.errors import DataValidationError, NotFoundError
from refund_risk.settings import Settings
from serving import alerts, charts, dashboard, owner
from serving.auth import Principal, Role
from serving.errors import AuthenticationError, ConflictError, PermissionDeniedError
from serving.ops_schemas import (
    CaseDetailOut,
    CaseOut,
    CasePageOut,
    LinkedAccountOut,
    NextCaseOut,
    OverridesOut,
    ResolutionOut,
    ResolveIn,
    SimilarCaseOut,
    TierOut,
    TierPinIn,
    TierPinOut,
    TimelineEventOut,
    WatchIn,
    WatchOut,
)
from serving.reviewers import ReviewerLimits, load_reviewer_limits
from serving.reviews import (
    RESOLUTION_LABELS,
    CaseQuery,
    CaseSort,
    CaseStatus,
    CaseSummary,
    Resolution,
    words,
)
from serving.schemas import DecisionOut, ErrorResponse, Privileges
from serving.service import Service
from serving.sessions import (
    COOKIE_NAME,
    COOKIE_PATH,
    SIGN_IN_COOKIE,
    SIGN_IN_PATH,
    SIGN_IN_SECONDS,
    Session,
    SessionSigner,
)

HERE = FilePath(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
API_KEY_HEADER = "X-API-Key"
PAGE_SIZE = 50
MAX_OFFSET = 1_000_000
"""Deepest a page of cases may start; filters narrow a longer queue better than paging."""
MAX_AGE_HOURS = 24.0 * 366 * 100
"""Largest case age a filter may name (a century): larger ones cannot be a moment in time."""
MAX_AMOUNT = 1e9
"""Largest amount a filter may name, as large as any refund may be."""
DASHBOARD_DAYS = (7, 14, 30, 90)

_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="A reviewer or admin key (`refund-risk keys create --role reviewer`).",
)


# --- who is calling ------------------------------------------------------------------------------


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


OPS_ROLES = frozenset({Role.REVIEWER, Role.ADMIN})


def _service(request: Request) -> Service:
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
        service = _service(request)
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
    service = _service(request)
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


async def _form(request: Request, caller: Caller) -> dict[str, str]:
    """The posted form, after checking its token when the caller came with a session cookie."""
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if caller.session is not None and values.get("csrf") != caller.session.csrf:
        raise FormExpired(_safe_next(urlsplit(request.headers.get("referer", "")).path))
    return values


# --- API: the queue ------------------------------------------------------------------------------

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
PathId = Annotated[str, Path(min_length=1, max_length=64)]
"""An id in a URL path (a case, customer or decision id)."""

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorResponse,
        "description": "Someone else holds the claim, or resolved the case first.",
    }
}


def case_out(summary: CaseSummary, sla_hours: float, now: datetime) -> CaseOut:
    """A case for the API, with its claim and SLA state as of `now`."""
    return CaseOut(
        **summary.__dict__,
        claimed=summary.claimed_now(now),
        over_sla=summary.status == "open" and summary.age_hours >= sla_hours,
    )


def case_now(service: Service, summary: CaseSummary) -> CaseOut:
    """A case for the API, with its claim and SLA state as of the review queue's clock."""
    return case_out(summary, service.settings.review_sla_hours, service.reviews.clock())


def _query(
    status: CaseStatus,
    tier: str | None,
    reason: str | None,
    category: str | None,
    min_amount: float | None,
    max_amount: float | None,
    min_age_hours: float | None,
    max_age_hours: float | None,
    sort: CaseSort,
    order: str | None,
    limit: int,
    offset: int,
) -> CaseQuery:
    return CaseQuery(
        status=status,
        tier=tier or None,
        reason=reason or None,
        category=category or None,
        min_amount=min_amount,
        max_amount=max_amount,
        min_age_hours=min_age_hours,
        max_age_hours=max_age_hours,
        sort=sort,
        descending=None if order is None else order == "desc",
        limit=limit,
        offset=offset,
    )


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
    query = _query(
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
    service = caller.service
    page = service.reviews.list_cases(query)
    now = service.reviews.clock()
    sla = service.settings.review_sla_hours
    return CasePageOut(
        items=[case_out(s, sla, now) for s in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


def case_detail(service: Service, case_id: str) -> CaseDetailOut:
    """Everything about a case that a reviewer reads: the API's and the case page's content."""
    queue = service.reviews
    record = queue.get(case_id)
    summary = record.summary
    decision = DecisionOut.model_validate(record.decision)
    tiers = service.snapshot.policies.tiers
    try:
        tier = tiers.get(decision.tier)
    except Exception:  # a tier the tiers file in force no longer has
        tier = tiers.default
    active = service.overrides.active(summary.customer_id)
    return CaseDetailOut(
        case=case_now(service, summary),
        decision=decision,
        request=record.request,
        resolution=None
        if record.resolution is None
        else ResolutionOut.model_validate(record.resolution),
        tier=TierOut(
            name=tier.name,
            source=decision.tier_source,
            description=tier.description,
            privileges=Privileges(
                refund_before_return_allowed=tier.refund_before_return_allowed,
                auto_approve_limit=tier.auto_approve_limit,
                max_outstanding_unreturned=tier.max_outstanding_unreturned,
            ),
        ),
        pinned=None
        if active is None or active.pin is None
        else TierPinOut.model_validate(active.pin),
        watchlisted=None
        if active is None or active.watch is None
        else WatchOut.model_validate(active.watch),
        history=[TimelineEventOut.model_validate(e) for e in queue.history(summary.customer_id)],
        linked_accounts=[
            LinkedAccountOut.model_validate(a) for a in queue.linked_accounts(summary.customer_id)
        ],
        similar=[SimilarCaseOut.model_validate(s) for s in queue.similar(record)],
    )


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
    return case_detail(caller.service, case_id)


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
    service = caller.service
    summary = service.reviews.claim_case(case_id, caller.who)
    return case_now(service, summary)


def _limits(request_app: Any, caller: Caller) -> tuple[float | None, int]:
    limits: ReviewerLimits = request_app.state.reviewer_limits
    name = caller.service.keys.names().get(caller.who)
    return limits.for_key(caller.who, name, caller.service.settings.review_max_open_claims)


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
    max_amount, cap = _limits(request.app, caller)
    queue = caller.service.reviews
    summary = await run_in_threadpool(queue.next_case, caller.who, cap, max_amount)
    held = queue.held_by_reviewer().get(caller.who, 0)
    return NextCaseOut(
        case=None if summary is None else case_now(caller.service, summary),
        held=held,
        max_open_claims=cap,
        max_amount=max_amount,
    )


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
    if force and not caller.is_admin:
        raise PermissionDeniedError("only an admin key may release someone else's claim")
    service = caller.service
    summary = service.reviews.release(case_id, caller.who, force=force)
    return case_now(service, summary)


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
    record = caller.service.reviews.resolve(
        case_id, caller.who, body.decision, body.note, body.amount, body.expected_version
    )
    return ResolutionOut.model_validate(record)


# --- API: overrides ------------------------------------------------------------------------------


@router.get(
    "/v1/overrides",
    response_model=OverridesOut,
    responses=_ERRORS,
    tags=["overrides"],
    summary="Tier pins and watch list in force",
)
async def list_overrides(caller: AsReviewer) -> OverridesOut:
    """Every tier pin and watch-list entry in force. Roles: reviewer, admin."""
    overrides = caller.service.overrides
    return OverridesOut(
        pins=[TierPinOut.model_validate(p) for p in overrides.pins()],
        watchlist=[WatchOut.model_validate(w) for w in overrides.watchlist()],
    )


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
    service = caller.service
    pin = service.overrides.pin_tier(
        body.customer_id,
        body.tier,
        body.expires_at,
        body.reason,
        caller.who,
        service.snapshot.policies.tiers.names,
    )
    return TierPinOut.model_validate(pin)


@router.delete(
    "/v1/overrides/tier-pins/{customer_id}",
    status_code=204,
    responses=_ERRORS,
    tags=["overrides"],
    summary="End a customer's tier pin",
)
async def unpin_tier(customer_id: PathId, caller: AsReviewer) -> Response:
    """The model's tier applies again from the next decision. Roles: reviewer, admin."""
    caller.service.overrides.unpin(customer_id)
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
    entry = caller.service.overrides.watch(body.customer_id, body.reason, caller.who, body.until)
    return WatchOut.model_validate(entry)


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
    caller.service.overrides.unwatch(customer_id)
    return Response(status_code=204)


# --- pages ---------------------------------------------------------------------------------------

pages = APIRouter(include_in_schema=False)


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.ops_templates
    return templates


def _render(
    request: Request,
    caller: Caller | None,
    name: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page, with the signed-in reviewer and the form token every template may need."""
    names = {} if caller is None else caller.service.keys.names()
    return _templates(request).TemplateResponse(
        request,
        name,
        {
            "caller": caller,
            "who": None if caller is None else names.get(caller.who, caller.who),
            "names": names,
            "csrf": "" if caller is None or caller.session is None else caller.session.csrf,
            "sla_hours": None if caller is None else caller.service.settings.review_sla_hours,
            **context,
        },
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )


def _safe_next(value: str | None) -> str:
    """Only paths of the ops pages are followed after sign-in (no open redirect)."""
    if value and value.startswith("/ops/") and not value.startswith("//"):
        return value
    return "/ops/queue"


def _redirect(path: str, **params: str) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v})
    return RedirectResponse(f"{path}?{query}" if query else path, status_code=303)


@pages.get("/ops")
async def ops_home() -> RedirectResponse:
    """The queue is the ops home page."""
    return _redirect("/ops/queue")


def _login_page(
    request: Request, next_path: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The sign-in form, with a fresh form token and the short-lived cookie vouching for it."""
    signer: SessionSigner = request.app.state.ops_sessions
    token, vouch = signer.sign_in_token()
    response = _render(
        request,
        None,
        "login.html",
        status_code=status_code,
        next=next_path,
        error=error,
        sign_in_token=token,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        vouch,
        max_age=int(SIGN_IN_SECONDS),
        path=SIGN_IN_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@pages.get("/ops/login")
async def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    """The sign-in form."""
    return _login_page(request, _safe_next(next))


@pages.post("/ops/login")
async def login(request: Request) -> Response:
    """Open a session for a reviewer or admin key, then go where the reviewer was going.

    The form must carry the token its page was served with (and the cookie vouching for it):
    a sign-in posted from another site would otherwise sign the browser in to the poster's
    key, and what the reviewer then does would be recorded under it.
    """
    form = await request.form()
    target = _safe_next(str(form.get("next", "")))
    signer: SessionSigner = request.app.state.ops_sessions
    posted = form.get("csrf")
    if not signer.sign_in_ok(
        request.cookies.get(SIGN_IN_COOKIE), posted if isinstance(posted, str) else None
    ):
        return _login_page(
            request,
            target,
            "The sign-in form was stale or not from this site; please sign in again.",
            status_code=403,
        )
    token = str(form.get("api_key", "")).strip()
    service = _service(request)
    principal = service.keys.authenticate(token) if token else None
    error = None
    if principal is None:
        error = "That key is unknown or revoked."
    elif principal.role not in OPS_ROLES:
        error = f"A {principal.role.value} key cannot open the ops pages; use a reviewer key."
    if principal is None or error is not None:
        return _login_page(request, target, error, status_code=401)
    _, cookie = signer.open(principal.key_id, principal.role.value)
    response = _redirect(target)
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=int(signer.max_age),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=SIGN_IN_PATH)
    return response


@pages.post("/ops/logout")
async def logout(request: Request, caller: AsPageUser) -> Response:
    """End the session."""
    await _form(request, caller)
    response = _redirect("/ops/login")
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
    return response


def _float(value: str | None, limit: float = MAX_AMOUNT) -> float | None:
    """A number typed into a page's form; None if empty, not a number, or out of bounds."""
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is None or (math.isfinite(number) and abs(number) <= limit) else None


def _whole(value: str | None) -> int | None:
    """A whole number typed into a page or form (at most 12 digits); None if it is not one."""
    if value is None or not value.isdecimal() or len(value) > 12:
        return None
    return int(value)


def band_of(service: Service, score: float | None) -> str | None:
    """The policy's band of a score (None without a score)."""
    return None if score is None else service.snapshot.policies.policy.band_of(score)


@pages.get("/ops/queue")
async def queue_page(request: Request, caller: AsPageUser) -> HTMLResponse:
    """The queue: open cases, oldest first, with their age against the SLA."""
    params = request.query_params
    service = caller.service
    try:
        status = CaseStatus(params.get("status") or CaseStatus.OPEN)
        sort = CaseSort(params.get("sort") or CaseSort.AGE)
    except ValueError:
        status, sort = CaseStatus.OPEN, CaseSort.AGE
    raw_page = params.get("page") or "1"
    last_page = MAX_OFFSET // PAGE_SIZE + 1
    page_no = min(max(_whole(raw_page) or 1, 1), last_page)
    query = _query(
        status,
        params.get("tier"),
        params.get("reason"),
        params.get("category"),
        _float(params.get("min_amount")),
        _float(params.get("max_amount")),
        _float(params.get("min_age_hours"), MAX_AGE_HOURS),
        _float(params.get("max_age_hours"), MAX_AGE_HOURS),
        sort,
        params.get("order") if params.get("order") in ("asc", "desc") else None,
        PAGE_SIZE,
        (page_no - 1) * PAGE_SIZE,
    )
    page = service.reviews.list_cases(query)
    now = service.reviews.clock()
    sla = service.settings.review_sla_hours
    cases = [case_out(s, sla, now) for s in page.items]
    filters = {k: v for k, v in params.items() if k != "page" and v}
    return _render(
        request,
        caller,
        "queue.html",
        cases=cases,
        bands={c.case_id: band_of(service, c.abuse_score) for c in cases},
        total=page.total,
        page_no=page_no,
        pages=max(math.ceil(page.total / PAGE_SIZE), 1),
        filters=filters,
        filter_query=urlencode(filters),
        status=status.value,
        sort=sort.value,
        tiers=service.snapshot.policies.tiers.names,
        counts=service.reviews.open_counts(sla),
        message=params.get("msg"),
        words=words,
        age=_age,
    )


def _age(hours: float | None) -> str:
    """An age in words a reviewer reads at a glance: 45m, 5h 10m, 2d 3h."""
    if hours is None:
        return "-"
    minutes = int(hours * 60)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h {minutes % 60:02d}m"
    return f"{minutes // 1440}d {minutes % 1440 // 60}h"


@pages.get("/ops/cases/{case_id}")
async def case_page(request: Request, case_id: PathId, caller: AsPageUser) -> HTMLResponse:
    """One case with everything needed to decide it, and the decide buttons."""
    service = caller.service
    try:
        detail = case_detail(service, case_id)
    except NotFoundError as exc:
        return _render(request, caller, "error.html", status_code=404, message=str(exc))
    # The next open case, so a reviewer can go on without returning to the queue.
    following = service.reviews.list_cases(CaseQuery(status=CaseStatus.UNCLAIMED, limit=2))
    next_case = next((c.case_id for c in following.items if c.case_id != case_id), None)
    return _render(
        request,
        caller,
        "case.html",
        d=detail,
        band=detail.decision.abuse_band,
        resolutions=RESOLUTION_LABELS,
        mine=detail.case.claimed and detail.case.claimed_by == caller.who,
        next_case=next_case,
        message=request.query_params.get("msg"),
        words=words,
        age=_age,
    )


@pages.post("/ops/cases/{case_id}/claim")
async def claim_form(request: Request, case_id: PathId, caller: AsPageUser) -> Response:
    """Claim from the case page."""
    await _form(request, caller)
    try:
        caller.service.reviews.claim_case(case_id, caller.who)
    except ConflictError as exc:
        return _redirect(f"/ops/cases/{case_id}", msg=str(exc))
    return _redirect(f"/ops/cases/{case_id}")


@pages.post("/ops/queue/next")
async def next_case_form(request: Request, caller: AsPageUser) -> Response:
    """Take the next case from the queue page, and open it."""
    await _form(request, caller)
    max_amount, cap = _limits(request.app, caller)
    try:
        summary = await run_in_threadpool(
            caller.service.reviews.next_case, caller.who, cap, max_amount
        )
    except ConflictError as exc:
        return _redirect("/ops/queue", msg=str(exc))
    if summary is None:
        return _redirect("/ops/queue", msg="No free case within your limits right now.")
    return _redirect(f"/ops/cases/{summary.case_id}")


@pages.post("/ops/cases/{case_id}/release")
async def release_form(request: Request, case_id: PathId, caller: AsPageUser) -> Response:
    """Release from the case page."""
    await _form(request, caller)
    try:
        caller.service.reviews.release(case_id, caller.who)
    except ConflictError as exc:
        return _redirect(f"/ops/cases/{case_id}", msg=str(exc))
    return _redirect("/ops/queue", msg=f"Released case of refund {case_id[:12]}…")


@pages.post("/ops/cases/{case_id}/resolve")
async def resolve_form(request: Request, case_id: PathId, caller: AsPageUser) -> Response:
    """Resolve from the case page; then on to the next case, or back to the queue."""
    form = await _form(request, caller)
    try:
        body = ResolveIn(
            decision=form.get("decision", ""),  # type: ignore[arg-type]
            amount=_float(form.get("amount")),
            note=form.get("note", ""),
            expected_version=_whole(form.get("version")),
        )
        record = caller.service.reviews.resolve(
            case_id, caller.who, body.decision, body.note, body.amount, body.expected_version
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "form"
        return _redirect(f"/ops/cases/{case_id}", msg=f"{field}: {first.get('msg', 'invalid')}")
    except (ConflictError, DataValidationError) as exc:
        return _redirect(f"/ops/cases/{case_id}", msg=str(exc))
    done = f"Resolved refund {record.refund_id}: {Resolution(record.decision).label.lower()}."
    following = form.get("then")
    if following and following.startswith("/ops/cases/"):
        return _redirect(following, msg=done)
    return _redirect("/ops/queue", msg=done)


@pages.get("/ops/dashboard")
async def dashboard_page(request: Request, caller: AsPageUser) -> HTMLResponse:
    """Per day: requests, actions, automation, queue, reviewers, abuse caught, drift."""
    service = caller.service
    raw_days = request.query_params.get("days") or "14"
    days = _whole(raw_days) or 14
    days = days if days in DASHBOARD_DAYS else 14
    abuse = service.snapshot.models.abuse
    reference = None if abuse is None else abuse.card.get("drift_reference")
    names = service.keys.names()
    # Reading and decoding up to a month of decisions and drift rows takes a while: off the
    # event loop, so decision requests keep flowing while an owner looks at the dashboard.
    board = await run_in_threadpool(
        dashboard.build, service.engine, days, reference, names, service.reviews.clock()
    )
    sla = service.settings.review_sla_hours
    shop = await run_in_threadpool(owner.build, service.engine, days, service.reviews.clock(), sla)
    labels = [d.day for d in board.days]
    figures = {
        "actions": charts.stacked_bars(
            labels,
            {a: [float(d.actions.get(a, 0)) for d in board.days] for a in dashboard.ACTIONS},
            "Refund requests per day, by action",
        ),
        "automation": charts.line(
            labels,
            [d.automated_share for d in board.days],
            "Share decided without a person",
            fmt=lambda v: f"{v:.0%}",
            top=1.0,
            marks={"85% (field best)": 0.85},
        ),
        "queue": charts.bars(
            labels,
            [float(d.queue_open) for d in board.days],
            "Open cases at the end of each day",
            warn=[(d.queue_oldest_hours or 0.0) >= sla for d in board.days],
        ),
        "oldest": charts.line(
            labels,
            [d.queue_oldest_hours for d in board.days],
            "Oldest open case at the end of each day (hours)",
            fmt=lambda v: f"{v:.0f} h",
            marks={f"SLA {sla:g} h": sla},
        ),
        "throughput": charts.bars(
            labels, [float(d.resolved) for d in board.days], "Cases resolved per day"
        ),
        "abuse": charts.stacked_bars(
            labels,
            {
                "confirmed": [float(d.confirmed) for d in board.days],
                "contradicted": [float(d.contradicted) for d in board.days],
                "pending": [float(d.caught - d.confirmed - d.contradicted) for d in board.days],
            },
            "Rejected as abuse by review, and what later evidence said",
        ),
        "score_psi": charts.line(
            labels,
            [d.score_psi for d in board.days],
            "Score PSI per day against the training data",
            fmt=lambda v: f"{v:.2f}",
            marks={"watch 0.1": 0.1, "shifted 0.25": 0.25},
        ),
        "features_psi": charts.hbars(
            [(x.name, x.psi, x.level) for x in board.drift[:15]],
            "Feature PSI against the training data, most drifted first",
            marks={"0.1": 0.1, "0.25": 0.25},
        )
        if board.drift
        else "",
        **_owner_figures(shop),
    }
    # A chart with nothing to draw is left out; the page says why in words instead.
    drawn = {
        "actions": board.totals["requests"] > 0,
        "automation": any(d.automated_share is not None for d in board.days),
        "queue": any(d.queue_open for d in board.days),
        "oldest": any(d.queue_oldest_hours is not None for d in board.days),
        "throughput": any(d.resolved for d in board.days),
        "abuse": any(d.caught for d in board.days),
        "score_psi": any(d.score_psi is not None for d in board.days),
    }
    figures.update({name: "" for name, has_data in drawn.items() if not has_data})
    reviewers = sorted({name for d in board.days for name in d.by_reviewer})
    return _render(
        request,
        caller,
        "dashboard.html",
        board=board,
        figures=figures,
        days=days,
        day_options=DASHBOARD_DAYS,
        counts=await run_in_threadpool(service.reviews.open_counts, sla),
        shop=shop,
        alert_rules=request.app.state.alerts.rules,
        alerts_firing=await run_in_threadpool(alerts.firing_now, service.engine),
        alerts_recent=await run_in_threadpool(alerts.recent, service.engine),
        load=_reviewer_load(
            board, names, await run_in_threadpool(service.reviews.held_by_reviewer)
        ),
        field_settle=owner.FIELD_SETTLE_SHARES,
        field_mean_hours=owner.FIELD_MEAN_HOURS_AUTOMATED,
        min_product_orders=owner.PRODUCT_MIN_ORDERS,
        products_shown=owner.PRODUCTS_SHOWN,
        product_fdr=owner.PRODUCT_FALSE_DISCOVERY,
        reasons=REASONS,
        reviewers=reviewers,
        actions=dashboard.ACTIONS,
        words=words,
        age=_age,
    )


@pages.get("/ops/overrides")
async def overrides_page(request: Request, caller: AsPageUser) -> HTMLResponse:
    """Tier pins and the watch list: what is in force, and forms to add or end them."""
    service = caller.service
    return _render(
        request,
        caller,
        "overrides.html",
        pins=service.overrides.pins(),
        watchlist=service.overrides.watchlist(),
        tiers=service.snapshot.policies.tiers.names,
        customer=request.query_params.get("customer", ""),
        message=request.query_params.get("msg"),
        default_expiry=(service.reviews.clock() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M"),
    )


def _when(value: str | None) -> datetime | None:
    """A datetime-local form value (UTC) as a naive UTC datetime."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


@pages.post("/ops/overrides/{action}")
async def overrides_form(
    request: Request,
    action: Annotated[str, Path(pattern="^(pin|unpin|watch|unwatch)$")],
    caller: AsPageUser,
) -> Response:
    """Add or end a tier pin or a watch-list entry from the overrides page."""
    form = await _form(request, caller)
    service = caller.service
    customer = form.get("customer_id", "").strip()
    try:
        if action == "pin":
            body = TierPinIn(
                customer_id=customer,
                tier=form.get("tier", ""),
                expires_at=_when(form.get("expires_at")),  # type: ignore[arg-type]
                reason=form.get("reason", ""),
            )
            service.overrides.pin_tier(
                body.customer_id,
                body.tier,
                body.expires_at,
                body.reason,
                caller.who,
                service.snapshot.policies.tiers.names,
            )
            done = f"Pinned {customer} to {body.tier}."
        elif action == "watch":
            entry = WatchIn(
                customer_id=customer,
                reason=form.get("reason", ""),
                until=_when(form.get("until")),
            )
            service.overrides.watch(entry.customer_id, entry.reason, caller.who, entry.until)
            done = f"{customer} is on the watch list."
        elif action == "unpin":
            service.overrides.unpin(customer)
            done = f"Unpinned {customer}."
        else:
            service.overrides.unwatch(customer)
            done = f"{customer} is off the watch list."
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "form"
        return _redirect("/ops/overrides", msg=f"{field}: {first.get('msg', 'invalid')}")
    except (DataValidationError, NotFoundError, ValueError) as exc:
        return _redirect("/ops/overrides", msg=str(exc))
    return _redirect("/ops/overrides", msg=done)


def _reviewer_load(
    board: dashboard.Dashboard, names: dict[str, str], held: dict[str, int]
) -> list[tuple[str, int, int]]:
    """(reviewer, open cases held now, cases resolved in the window), busiest first."""
    resolved: dict[str, int] = {}
    for day in board.days:
        for name, n in day.by_reviewer.items():
            resolved[name] = resolved.get(name, 0) + n
    holding = {names.get(k, k): n for k, n in held.items()}
    rows = [(r, holding.get(r, 0), resolved.get(r, 0)) for r in {*holding, *resolved}]
    return sorted(rows, key=lambda row: (-row[1], -row[2], row[0]))


def _owner_figures(shop: owner.OwnerView) -> dict[str, str]:
    """The owner's charts: refund rate by week and by day, reason mix by week, time to decide."""
    if shop.empty:
        return {}
    low, high = owner.FIELD_REFUND_RATE
    weeks = [w.start for w in shop.weeks]
    settle = shop.settling.bucket_shares()
    return {
        "refund_rate_weeks": charts.line(
            weeks,
            [w.totals.rate for w in shop.weeks],
            "Refund requests per order, by week",
            fmt=lambda v: f"{v:.1%}",
            marks={f"field low {low:.1%}": low, f"field high {high:.1%}": high},
        ),
        "refund_rate_days": charts.line(
            [d for d, _ in shop.daily],
            [t.rate for _, t in shop.daily],
            "Refund requests per order, by day",
            fmt=lambda v: f"{v:.1%}",
            marks={f"field high {high:.1%}": high},
        ),
        "reason_mix": charts.stacked_bars(
            weeks,
            {r: [float(w.reasons.get(r, 0)) for w in shop.weeks] for r in REASONS},
            "Refund requests by week, by reason",
        ),
        **_forecast_figures(shop),
        "settle": charts.bars(
            list(settle),
            [100.0 * v for v in settle.values()],
            "Share of decisions by time to decide",
            fmt=lambda v: f"{v:.0f}%",
        ),
        **_product_figures(shop),
    }


def _product_figures(shop: owner.OwnerView) -> dict[str, str]:
    """Refund rate of the listed products, those standing out against their category in red."""
    rows = [r for r in shop.products.rows[: owner.PRODUCTS_SHOWN] if r.totals.rate is not None]
    if not rows:
        return {}
    return {
        "products": charts.hbars(
            [
                (
                    r.name or r.product_id,
                    r.totals.rate or 0.0,
                    "stands-out" if r.stands_out else "usual",
                )
                for r in rows
            ],
            "Refund rate by product",
            fmt=lambda v: f"{v:.1%}",
        )
    }


def _forecast_figures(shop: owner.OwnerView) -> dict[str, str]:
    """Weekly requests and money so far, and the forecast after them (dashed)."""
    ahead = shop.forecast
    if ahead is None:
        return {}
    past = [w for w in shop.weeks if w.start < ahead.weeks[0]]
    labels = [w.start for w in past] + ahead.weeks
    gap: list[float | None] = [None] * len(ahead.weeks)

    def joined(last: float, coming: list[float]) -> list[float | None]:
        # The dashed line starts at the last real week, so the two read as one line.
        return [None] * (len(past) - 1) + [last, *coming]

    return {
        "forecast_requests": charts.line(
            labels,
            [float(w.totals.requests) for w in past] + gap,
            "Refund requests per week, and the forecast",
            fmt=lambda v: f"{v:,.0f}",
            second=joined(float(past[-1].totals.requests), ahead.requests.ahead),
        ),
        "forecast_money": charts.line(
            labels,
            [w.totals.refund_money for w in past] + gap,
            "Refund money per week, and the forecast",
            fmt=lambda v: f"{v:,.0f}",
            second=joined(past[-1].totals.refund_money, ahead.money.ahead),
        ),
    }


@pages.get("/favicon.ico")
async def favicon() -> Response:
    """The service's icon, for browsers that ask for it at the conventional path."""
    return Response(
        (STATIC_DIR / "favicon.svg").read_bytes(),
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )


# --- wiring --------------------------------------------------------------------------------------


def install(app: FastAPI, settings: Settings) -> None:
    """Add the queue API, the pages, their static files, templates and session signer."""
    app.include_router(router)
    app.include_router(pages)
    app.mount("/ops/static", StaticFiles(directory=STATIC_DIR), name="ops-static")
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.filters["money"] = lambda v: "-" if v is None else f"{v:,.2f}"
    templates.env.filters["pct"] = lambda v: "-" if v is None else f"{v:.0%}"
    templates.env.filters["pct1"] = lambda v: "-" if v is None else f"{v:.1%}"
    templates.env.filters["when"] = lambda v: "-" if v is None else v.strftime("%Y-%m-%d %H:%M")
    app.state.ops_templates = templates
    app.state.reviewer_limits = load_reviewer_limits(settings.reviewer_limits)
    secret = None if settings.session_secret is None else settings.session_secret.get_secret_value()
    app.state.ops_sessions = SessionSigner(secret, settings.session_hours * 3600.0)

    async def sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return _redirect("/ops/login", next=exc.next_path)

    async def forbidden(request: Request, exc: Exception) -> Response:
        return _render(
            request,
            None,
            "error.html",
            status_code=403,
            message=f"This key may not open the ops pages ({exc}). Sign in with a reviewer key.",
        )

    app.add_exception_handler(SignInRequired, sign_in)

    async def form_expired(request: Request, exc: Exception) -> Response:
        retry = exc.retry_path if isinstance(exc, FormExpired) else "/ops/queue"
        return _render(
            request,
            None,
            "error.html",
            status_code=403,
            heading="This form has expired",
            message="Nothing was changed: the page was opened before your current sign-in (or "
            "came from another site), so its form is no longer valid. Reload the page and try "
            "again.",
            retry=retry,
        )

    app.add_exception_handler(PageForbidden, forbidden)
    app.add_exception_handler(FormExpired, form_expired)
