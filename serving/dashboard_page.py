"""The dashboard page (`/ops/dashboard`): per day, requests, actions, automation, the queue,
reviewers, abuse caught and drift, and the owner's figures, drawn as server-side charts.

The figures are computed by `serving.dashboard` and `serving.owner`; this module reads them
off the event loop and draws them (`serving.charts`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from data.schema import REASONS
from serving import alerts, charts, dashboard, owner
from serving.ops_access import AsPageUser
from serving.ops_pages import age_words, render, whole
from serving.reviews import words

DASHBOARD_DAYS = (7, 14, 30, 90)

router = APIRouter(include_in_schema=False)


@router.get("/ops/dashboard")
async def dashboard_page(request: Request, caller: AsPageUser) -> HTMLResponse:
    """Per day: requests, actions, automation, queue, reviewers, abuse caught, drift."""
    service = caller.service
    raw_days = request.query_params.get("days") or "14"
    days = whole(raw_days) or 14
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
    return render(
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
        products_explained=owner.PRODUCTS_EXPLAINED,
        product_reasons_shown=owner.PRODUCT_REASONS_SHOWN,
        product_fdr=owner.PRODUCT_FALSE_DISCOVERY,
        reasons=REASONS,
        reviewers=reviewers,
        actions=dashboard.ACTIONS,
        words=words,
        age=age_words,
    )


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
    # Weeks that have ended: the week still going would read as a dip; the page gives it in
    # words beside the charts.
    complete = shop.complete_weeks
    weeks = [w.start for w in complete]
    settle = shop.settling.bucket_shares()
    return {
        "refund_rate_weeks": charts.line(
            weeks,
            [w.totals.rate for w in complete],
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
            {r: [float(w.reasons.get(r, 0)) for w in complete] for r in REASONS},
            "Refund requests by week, by reason",
        ),
        **_forecast_figures(shop),
        "settle": charts.shares(
            list(settle),
            [100.0 * v for v in settle.values()],
            "Share of decisions by time to decide",
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
