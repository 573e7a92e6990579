"""The pages reviewers work in (`/ops/...`): sign-in, the queue, a case, the overrides.

Pages take a reviewer or admin key in the `X-API-Key` header, or a signed-in session (see
`serving.ops_access`); their forms carry the session's token. They are rendered on the server
from the templates beside this module; their stylesheet and script are served by the app, so
nothing is fetched from the internet. Each form calls the same action handler as the API
(`serving.review_actions`) and turns a refusal into a message on the page it came from. The
dashboard page is in `serving.dashboard_page`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from refund_risk.errors import DataValidationError, NotFoundError
from serving import review_actions
from serving.errors import ConflictError
from serving.ops_access import (
    OPS_ROLES,
    AsPageUser,
    Caller,
    PathId,
    read_form,
    safe_next,
    service_of,
)
from serving.ops_api import MAX_AGE_HOURS, MAX_AMOUNT, MAX_OFFSET, PAGE_SIZE
from serving.ops_schemas import ResolveIn, TierPinIn, WatchIn
from serving.reviews import RESOLUTION_LABELS, CaseQuery, CaseSort, CaseStatus, Resolution, words
from serving.service import Service
from serving.sessions import (
    COOKIE_NAME,
    COOKIE_PATH,
    SIGN_IN_COOKIE,
    SIGN_IN_PATH,
    SIGN_IN_SECONDS,
    SessionSigner,
)

HERE = FilePath(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

pages = APIRouter(include_in_schema=False)


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.ops_templates
    return templates


def render(
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


def redirect(path: str, **params: str) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v})
    return RedirectResponse(f"{path}?{query}" if query else path, status_code=303)


@pages.get("/ops")
async def ops_home() -> RedirectResponse:
    """The queue is the ops home page."""
    return redirect("/ops/queue")


def _login_page(
    request: Request, next_path: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The sign-in form, with a fresh form token and the short-lived cookie vouching for it."""
    signer: SessionSigner = request.app.state.ops_sessions
    token, vouch = signer.sign_in_token()
    response = render(
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
    return _login_page(request, safe_next(next))


@pages.post("/ops/login")
async def login(request: Request) -> Response:
    """Open a session for a reviewer or admin key, then go where the reviewer was going.

    The form must carry the token its page was served with (and the cookie vouching for it):
    a sign-in posted from another site would otherwise sign the browser in to the poster's
    key, and what the reviewer then does would be recorded under it.
    """
    form = await request.form()
    target = safe_next(str(form.get("next", "")))
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
    service = service_of(request)
    principal = service.keys.authenticate(token) if token else None
    error = None
    if principal is None:
        error = "That key is unknown or revoked."
    elif principal.role not in OPS_ROLES:
        error = f"A {principal.role.value} key cannot open the ops pages; use a reviewer key."
    if principal is None or error is not None:
        return _login_page(request, target, error, status_code=401)
    _, cookie = signer.open(principal.key_id, principal.role.value)
    response = redirect(target)
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
    await read_form(request, caller)
    response = redirect("/ops/login")
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
    return response


def _float(value: str | None, limit: float = MAX_AMOUNT) -> float | None:
    """A number typed into a page's form; None if empty, not a number, or out of bounds."""
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is None or (math.isfinite(number) and abs(number) <= limit) else None


def whole(value: str | None) -> int | None:
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
    page_no = min(max(whole(raw_page) or 1, 1), last_page)
    query = review_actions.case_query(
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
    page = review_actions.list_cases(caller, query)
    cases = page.items
    sla = service.settings.review_sla_hours
    filters = {k: v for k, v in params.items() if k != "page" and v}
    return render(
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
        age=age_words,
    )


def age_words(hours: float | None) -> str:
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
        detail = review_actions.case_detail(service, case_id)
    except NotFoundError as exc:
        return render(request, caller, "error.html", status_code=404, message=str(exc))
    # The next open case, so a reviewer can go on without returning to the queue.
    following = service.reviews.list_cases(CaseQuery(status=CaseStatus.UNCLAIMED, limit=2))
    next_case = next((c.case_id for c in following.items if c.case_id != case_id), None)
    return render(
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
        age=age_words,
    )


@pages.post("/ops/cases/{case_id}/claim")
async def claim_form(request: Request, case_id: PathId, caller: AsPageUser) -> Response:
    """Claim from the case page."""
    await read_form(request, caller)
    try:
        review_actions.claim(caller, case_id)
    except ConflictError as exc:
        return redirect(f"/ops/cases/{case_id}", msg=str(exc))
    return redirect(f"/ops/cases/{case_id}")


@pages.post("/ops/queue/next")
async def next_case_form(request: Request, caller: AsPageUser) -> Response:
    """Take the next case from the queue page, and open it."""
    await read_form(request, caller)
    try:
        taken = await review_actions.take_next(caller, request.app.state.reviewer_limits)
    except ConflictError as exc:
        return redirect("/ops/queue", msg=str(exc))
    if taken.case is None:
        return redirect("/ops/queue", msg="No free case within your limits right now.")
    return redirect(f"/ops/cases/{taken.case.case_id}")


@pages.post("/ops/cases/{case_id}/release")
async def release_form(request: Request, case_id: PathId, caller: AsPageUser) -> Response:
    """Release from the case page."""
    await read_form(request, caller)
    try:
        review_actions.release(caller, case_id)
    except ConflictError as exc:
        return redirect(f"/ops/cases/{case_id}", msg=str(exc))
    return redirect("/ops/queue", msg=f"Released case of refund {case_id[:12]}…")


@pages.post("/ops/cases/{case_id}/resolve")
async def resolve_form(request: Request, case_id: PathId, caller: AsPageUser) -> Response:
    """Resolve from the case page; then on to the next case, or back to the queue."""
    form = await read_form(request, caller)
    try:
        body = ResolveIn(
            decision=form.get("decision", ""),  # type: ignore[arg-type]
            amount=_float(form.get("amount")),
            note=form.get("note", ""),
            expected_version=whole(form.get("version")),
        )
        record = review_actions.resolve(caller, case_id, body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "form"
        return redirect(f"/ops/cases/{case_id}", msg=f"{field}: {first.get('msg', 'invalid')}")
    except (ConflictError, DataValidationError) as exc:
        return redirect(f"/ops/cases/{case_id}", msg=str(exc))
    done = f"Resolved refund {record.refund_id}: {Resolution(record.decision).label.lower()}."
    following = form.get("then")
    if following and following.startswith("/ops/cases/"):
        return redirect(following, msg=done)
    return redirect("/ops/queue", msg=done)


@pages.get("/ops/overrides")
async def overrides_page(request: Request, caller: AsPageUser) -> HTMLResponse:
    """Tier pins and the watch list: what is in force, and forms to add or end them."""
    service = caller.service
    return render(
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
    form = await read_form(request, caller)
    customer = form.get("customer_id", "").strip()
    try:
        if action == "pin":
            body = TierPinIn(
                customer_id=customer,
                tier=form.get("tier", ""),
                expires_at=_when(form.get("expires_at")),  # type: ignore[arg-type]
                reason=form.get("reason", ""),
            )
            review_actions.pin_tier(caller, body)
            done = f"Pinned {customer} to {body.tier}."
        elif action == "watch":
            entry = WatchIn(
                customer_id=customer,
                reason=form.get("reason", ""),
                until=_when(form.get("until")),
            )
            review_actions.watch(caller, entry)
            done = f"{customer} is on the watch list."
        elif action == "unpin":
            review_actions.unpin_tier(caller, customer)
            done = f"Unpinned {customer}."
        else:
            review_actions.unwatch(caller, customer)
            done = f"{customer} is off the watch list."
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "form"
        return redirect("/ops/overrides", msg=f"{field}: {first.get('msg', 'invalid')}")
    except (DataValidationError, NotFoundError, ValueError) as exc:
        return redirect("/ops/overrides", msg=str(exc))
    return redirect("/ops/overrides", msg=done)


@pages.get("/favicon.ico")
async def favicon() -> Response:
    """The service's icon, for browsers that ask for it at the conventional path."""
    return Response(
        (STATIC_DIR / "favicon.svg").read_bytes(),
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )
