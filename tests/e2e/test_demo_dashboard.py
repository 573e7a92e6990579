"""The dashboard on the world `make demo` builds, in a real browser: no chart empty or clipped.

The demo world (20,000 customers over a year ending today, both models trained and promoted,
its last days run through the service as it would have decided them; see
`tests/demo_world.py`) is served as `make demo` serves it, with nothing sent to it: the ops
panels are filled by the demo itself. Every chart of the owner's part (the 30-day window and
the longest one the page offers) and of the ops panels is checked as the owner's page test
checks it: each label inside its chart, marks drawn, and the charts the owner and the ops lead
expect all there; the tables the charts stand beside (reviewers' load, the reasons products
come back for) are filled too.

Set REFUND_RISK_SCREENSHOTS to a folder to keep a screenshot of the owner's part of the
dashboard (the README's `docs/dashboard-owner.png` is made so).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from demo_world import DemoWorld
from serving_world import running_app
from test_ops_pages import browser  # noqa: F401  (fixture)
from test_owner_pages import CHART_REPORT

from serving.dashboard_page import DASHBOARD_DAYS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OWNER_CHARTS = {
    "Refund requests per order, by week",
    "Refund requests per order, by day",
    "Refund requests by week, by reason",
    "Refund requests per week, and the forecast",
    "Refund money per week, and the forecast",
    "Share of decisions by time to decide",
    "Refund rate by product",
}

OPS_CHARTS = {
    "Refund requests per day, by action",
    "Share decided without a person",
    "Open cases at the end of each day",
    "Oldest open case at the end of each day (hours)",
    "Cases resolved per day",
    "Rejected as abuse by review, and what later evidence said",
    "Score PSI per day against the training data",
    "Feature PSI against the training data, most drifted first",
}


@dataclass
class DemoServer:
    """The demo world served, with the refund requests sent to it."""

    url: str
    demo: DemoWorld


@pytest.fixture(scope="module")
def demo_server(demo_world: DemoWorld) -> Iterator[DemoServer]:
    """The demo world served on a free loopback port, as `make demo` leaves it."""
    with running_app(demo_world.settings, "demo-e2e-server") as url:
        yield DemoServer(url, demo_world)


def _chart_reports(page: Any, selector: str) -> list[dict[str, Any]]:
    charts = page.locator(f"{selector} svg.chart")
    return [charts.nth(i).evaluate(CHART_REPORT) for i in range(charts.count())]


def _problems(reports: list[dict[str, Any]], expected: set[str]) -> dict[str, Any]:
    """What is wrong with a page's charts: clipped labels, charts with no mark, charts missing."""
    return {
        "clipped": {r["title"]: r["clipped"] for r in reports if r["clipped"]},
        "empty": [r["title"] for r in reports if r["marks"] == 0],
        "missing": sorted(expected - {r["title"] for r in reports}),
    }


WINDOWS = (30, max(DASHBOARD_DAYS))
"""The owner's usual month, and the longest window the page offers. Both in one test, so one
test worker serves the demo world rather than each building a server of its own."""


def test_on_the_demo_world_no_chart_of_the_dashboard_is_empty_clipped_or_missing(
    demo_server: DemoServer,
    browser: Any,  # noqa: F811
) -> None:
    context = browser.new_context(
        viewport={"width": 1400, "height": 900},
        extra_http_headers={"X-API-Key": demo_server.demo.keys["reviewer"]},
    )
    page = context.new_page()
    found: dict[tuple[int, str], dict[str, Any]] = {}
    try:
        for days in WINDOWS:
            page.goto(f"{demo_server.url}/ops/dashboard?days={days}")
            found[days, "owner"] = _problems(_chart_reports(page, "#shop"), OWNER_CHARTS)
            found[days, "ops"] = _problems(_chart_reports(page, "main > :not(#shop)"), OPS_CHARTS)
            # No chart stood in for by words: the demo world has something for every one.
            found[days, "said in words"] = {"empty": page.locator(".empty-chart").all_inner_texts()}
            # The tables beside the charts: who resolved cases, and why products come back.
            found[days, "tables"] = {
                "empty": [
                    table
                    for table in ("#reviewer-load table", "#product-reasons")
                    if page.locator(f"{table} tbody tr").count() == 0
                ]
            }
            folder = os.environ.get("REFUND_RISK_SCREENSHOTS")
            if folder and days == WINDOWS[0]:
                Path(folder).mkdir(parents=True, exist_ok=True)
                page.locator("#shop").screenshot(path=str(Path(folder) / "dashboard-owner.png"))
    finally:
        context.close()
    wrong = {k: v for k, v in found.items() if any(v.values())}
    assert wrong == {}
