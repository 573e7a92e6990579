"""The dashboard's alert list in a real browser, on a world of this test's own.

A generated world's history is moved in time so that it ends two hours ago, stored, and served
with no model (decisions degraded) and the shipped alert rules evaluated every half second.
While the world is quiet the list is empty; a burst of "not received" claims on electronics,
sent as decisions through the API, fires the reason and category alerts, and the list shows
each once however often the rules run again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from serving_world import make_keys, return_request, running_app, settings_for
from test_ops_pages import browser  # noqa: F401  (fixture)

from data.generator import generate_world
from data.schema import TABLES, Kind
from features.store import EventStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

INTERVAL = 0.5
"""Seconds between the service's alert evaluations in this test."""

SPIKE = 25
"""Claims in the burst: the integration test's spike, which the shipped rules must catch."""


def _shifted(tables: dict[str, pd.DataFrame], end: datetime) -> dict[str, pd.DataFrame]:
    """The world with every timestamp moved so its latest refund request is at `end`."""
    latest = tables["refund_requests"]["requested_at"].max()
    shift = (pd.Timestamp(end) - latest).round("s")
    out = {}
    for name, frame in tables.items():
        frame = frame.copy()
        for col in TABLES[name].columns:
            if col.kind is Kind.TIMESTAMP:
                frame[col.name] = frame[col.name] + shift
        out[name] = frame
    return out


@pytest.fixture(scope="module")
def alerting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """The app over a world of its own ending two hours ago; (url, world tables, keys)."""
    tmp: Path = tmp_path_factory.mktemp("owner-alerts")
    now = datetime.now(UTC).replace(tzinfo=None)
    tables = _shifted(generate_world(4000, seed=5).tables, now - timedelta(hours=2))
    settings = settings_for(tmp, alert_interval_seconds=INTERVAL)
    assert settings.database_url is not None
    store = EventStore.open(settings.database_url)
    store.write_frames(tables)
    store.dispose()
    keys = make_keys(settings)
    with running_app(settings, "owner-alerts-server") as url:
        yield url, tables, keys


def _spike(url: str, tables: dict[str, pd.DataFrame], scorer: str) -> None:
    """`SPIKE` "not received" claims on delivered electronics orders, from as many customers,
    in the last twelve hours, each decided by the service."""
    now = datetime.now(UTC).replace(tzinfo=None)
    start = now - timedelta(hours=12)
    orders = tables["orders"]
    delivered = orders[
        (orders.category == "electronics") & (orders.delivered_at < pd.Timestamp(start))
    ]
    picked = delivered.drop_duplicates("customer_id").tail(SPIKE)
    assert len(picked) == SPIKE
    with httpx.Client(base_url=url, timeout=60) as http:
        for i, (_, order) in enumerate(picked.iterrows()):
            body = return_request(
                order,
                f"spike-{i:03d}",
                start + timedelta(minutes=20 * i),
                refund_type="refund_only",
                reason="logistics",
                reason_detail="not_received",
                amount_requested=float(order["amount"]),
            )
            r = http.post("/v1/refund-decisions", json=body, headers={"X-API-Key": scorer})
            assert r.status_code == 200, r.text


def _listed(page: Any) -> list[tuple[str, str]]:
    """(rule, subject) of each row of the dashboard's list of fired alerts."""
    rows = page.locator("#alert-table tbody tr")
    return [
        (
            rows.nth(i).locator("td").nth(1).inner_text(),
            rows.nth(i).locator("td").nth(2).inner_text(),
        )
        for i in range(rows.count())
    ]


def test_a_real_spike_shows_in_the_alert_list_once(
    alerting: tuple[str, dict[str, pd.DataFrame], dict[str, str]],
    browser: Any,  # noqa: F811
) -> None:
    url, tables, keys = alerting
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, extra_http_headers={"X-API-Key": keys["reviewer"]}
    )
    page = context.new_page()
    try:
        # Quiet: the rules have run several times over the world's own last weeks.
        time.sleep(6 * INTERVAL)
        page.goto(f"{url}/ops/dashboard?days=7")
        assert "No alert has fired." in page.inner_text("#alerts")
        assert page.locator("#alerts ul.firing li").count() == 0

        _spike(url, tables, keys["scorer"])
        deadline = time.monotonic() + 60
        listed: list[tuple[str, str]] = []
        while time.monotonic() < deadline:
            page.goto(f"{url}/ops/dashboard?days=7")
            listed = _listed(page)
            if ("category_spike", "electronics") in listed and (
                "reason_spike",
                "not_received",
            ) in listed:
                break
            time.sleep(INTERVAL)
        assert ("reason_spike", "not_received") in listed
        assert ("category_spike", "electronics") in listed

        # The rules keep running while the spike lasts: each alert is still listed once.
        time.sleep(8 * INTERVAL)
        page.goto(f"{url}/ops/dashboard?days=7")
        listed = _listed(page)
        assert Counter(listed).most_common(1)[0][1] == 1, listed
        assert ("reason_spike", "not_received") in listed
        assert ("category_spike", "electronics") in listed
        # Only what the burst explains: that reason, that category, and the shop's money.
        explained = {
            ("reason_spike", "not_received"),
            ("category_spike", "electronics"),
            ("refund_money_jump", "all"),
        }
        assert set(listed) <= explained, listed
        firing = page.locator("#alerts ul.firing li").all_inner_texts()
        assert len(firing) == len(listed)
        assert any(t.startswith("reason_spike") for t in firing)
        # No webhook is configured: the list says so rather than claiming a delivery.
        assert set(page.locator("#alert-table tbody td:nth-child(5)").all_inner_texts()) == {
            "no webhook"
        }
    finally:
        context.close()
