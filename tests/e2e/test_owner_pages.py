"""The owner's part of the dashboard in a real browser: every chart drawn, none clipped.

Runs the same served world and Chromium as the ops pages' tests (their fixtures, imported).
The same chart checks run on the world `make demo` builds in `test_demo_dashboard.py`, which
also makes the README's screenshot.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_ops_pages import Running, browser, server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# For each chart: the labels whose drawn box leaves the chart's own box, and what it draws.
CHART_REPORT = """
(svg) => {
  const vb = svg.viewBox.baseVal;
  const clipped = [];
  for (const t of svg.querySelectorAll("text")) {
    const b = t.getBBox();
    if (b.width === 0) continue;
    if (b.x < vb.x - 0.5 || b.y < vb.y - 0.5 ||
        b.x + b.width > vb.x + vb.width + 0.5 || b.y + b.height > vb.y + vb.height + 0.5) {
      clipped.push(t.textContent);
    }
  }
  const marks = [...svg.querySelectorAll("rect, circle, polyline")].filter((e) => {
    const b = e.getBBox();
    return b.width > 0 || b.height > 0;
  }).length;
  return {title: svg.getAttribute("aria-label"), clipped, marks};
}
"""


def test_the_owner_sees_refund_rate_reasons_and_categories_with_no_chart_empty_or_clipped(
    server: Running,  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    reviewer = {"X-API-Key": server.world.keys["reviewer"]}
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, extra_http_headers=reviewer
    )
    page = context.new_page()
    try:
        page.goto(f"{server.url}/ops/dashboard?days=30")
        rate = page.inner_text("#shop-rate").strip()
        assert rate.endswith("%") and 0.0 < float(rate[:-1]) < 100.0
        categories = page.locator("#category-table tbody tr")
        assert categories.count() >= 3
        assert page.locator("#reason-table tbody tr").count() >= 5
        # Products: the generated world's orders name them; the listed ones and the test's verdict.
        products = page.locator("#product-table tbody tr")
        assert products.count() >= 5
        assert page.locator("#products-standing-out").count() == 1
        first = products.first.locator("td")
        assert first.nth(0).inner_text().strip() and first.nth(1).inner_text().strip()
        charts = page.locator("svg.chart")
        reports = [charts.nth(i).evaluate(CHART_REPORT) for i in range(charts.count())]
        assert [r for r in reports if r["clipped"]] == []
        assert [r for r in reports if r["marks"] == 0] == []  # an empty chart is said in words
        titles = {r["title"] for r in reports}
        assert {
            "Refund requests per order, by week",
            "Refund requests per order, by day",
            "Refund requests by week, by reason",
            "Refund requests per week, and the forecast",
            "Refund money per week, and the forecast",
            "Refund rate by product",
        } <= titles
        assert "missed by" in page.inner_text("#forecast")
        alerts = page.locator("#alerts")
        assert "5 rules, evaluated by the service" in alerts.inner_text()
        page.click("#alerts summary")
        assert alerts.locator("details li").count() == 5
    finally:
        context.close()
