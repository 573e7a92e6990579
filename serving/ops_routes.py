"""Ops: the review back office, served by the same app as the decision API.

- `serving.ops_access`: who may use it (API keys, sign-in sessions, form tokens);
- `serving.review_actions`: one handler per review action (claim, take next, release,
  resolve, the overrides), called by both the API and the pages;
- `serving.ops_api`: the review queue and overrides API (`/v1/reviews`, `/v1/overrides`);
- `serving.ops_pages`: the pages reviewers work in (`/ops/...`);
- `serving.dashboard_page`: the dashboard page (`/ops/dashboard`).

This module wires them into the app.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from refund_risk.settings import Settings
from serving import dashboard_page, ops_api, ops_pages
from serving.ops_access import FormExpired, PageForbidden, PathId, SignInRequired
from serving.ops_pages import STATIC_DIR, TEMPLATES_DIR, redirect, render
from serving.reviewers import load_reviewer_limits
from serving.sessions import SessionSigner

__all__ = ["PathId", "install"]


def install(app: FastAPI, settings: Settings) -> None:
    """Add the queue API, the pages, their static files, templates and session signer."""
    app.include_router(ops_api.router)
    app.include_router(ops_pages.pages)
    app.include_router(dashboard_page.router)
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
        return redirect("/ops/login", next=exc.next_path)

    async def forbidden(request: Request, exc: Exception) -> Response:
        return render(
            request,
            None,
            "error.html",
            status_code=403,
            message=f"This key may not open the ops pages ({exc}). Sign in with a reviewer key.",
        )

    app.add_exception_handler(SignInRequired, sign_in)

    async def form_expired(request: Request, exc: Exception) -> Response:
        retry = exc.retry_path if isinstance(exc, FormExpired) else "/ops/queue"
        return render(
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
