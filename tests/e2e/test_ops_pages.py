"""The ops pages in a real browser: sign in, work the queue, decide a case, watch the dashboard.

The real app runs under uvicorn on a free loopback port, over the served world (a trained
model, SQLite); Debian's Chromium, driven by Playwright, does what a reviewer does. Nothing is
downloaded: the browser is the system's, and the pages fetch nothing from the internet.

Set REFUND_RISK_SCREENSHOTS to a folder to keep a screenshot of each page.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from services import skip_or_fail
from serving_world import World, key, review_body, running_app, shipped

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@dataclass
class Running:
    """The app under uvicorn: its address and the world behind it."""

    url: str
    world: World


@pytest.fixture(scope="module")
def server(serving_world: World) -> Iterator[Running]:
    """The real app on a free loopback port, in a thread; stopped after the module."""
    with running_app(serving_world.settings, "ops-e2e-server") as url:
        yield Running(url, serving_world)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright; skips when either is missing."""
    executable = _chromium()
    if executable is None:
        skip_or_fail("no Chromium at /usr/bin/chromium or on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("REFUND_RISK_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _review_decisions(server: Running, count: int) -> list[str]:
    """Send requests the policy sends to review; their refund ids."""
    world = server.world
    made = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i, refund in enumerate(shipped(world)[-count:]):
            refund_id = f"e2e-{i}-{refund['refund_id']}"
            body = review_body(world, refund, refund_id)
            r = http.post("/v1/refund-decisions", json=body, headers=key(world, "scorer"))
            assert r.status_code == 200, r.text
            assert r.json()["action"] == "manual_review"
            made.append(refund_id)
    return made


def _number(page: Any, selector: str) -> int:
    return int(page.inner_text(selector).strip())


def test_a_reviewer_signs_in_decides_the_oldest_case_and_sees_it_counted(
    server: Running, browser: Any
) -> None:
    _review_decisions(server, 3)
    world = server.world
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            outside.append(request.url) if not request.url.startswith(server.url) else None
        ),
    )
    try:
        # Sign in: the queue asks for a key first.
        page.goto(f"{server.url}/ops/queue")
        assert "/ops/login" in page.url
        page.fill("#api_key", world.keys["reviewer"])
        page.click("button[type=submit]")
        page.wait_for_url("**/ops/queue")
        _shot(page, "queue")

        page.goto(f"{server.url}/ops/dashboard")
        resolved_before = _number(page, "#dash-resolved")
        open_before = _number(page, "#dash-open")

        # The queue lists the oldest case first; open it with the keyboard.
        page.goto(f"{server.url}/ops/queue")
        assert _number(page, "#open-count") == open_before >= 3
        first_row = page.locator("table.queue tbody tr").first
        refund_id = first_row.locator("a.open-case").inner_text().strip()
        page.keyboard.press("Enter")
        page.wait_for_url("**/ops/cases/**")
        assert page.inner_text("#refund-id").strip() == refund_id
        case_id = page.url.rsplit("/", 1)[-1]

        # Its reasons, in words, as the decision gave them.
        reasons = [r.strip() for r in page.locator("#reasons li").all_inner_texts()]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            stored = http.get(f"/v1/reviews/{case_id}", headers=key(world, "reviewer")).json()
        assert reasons and reasons == stored["decision"]["reasons"]
        _shot(page, "case")

        # Decide it: "a" chooses approve, Enter confirms.
        page.keyboard.press("a")
        assert "armed" in (page.get_attribute("button[value=approve]", "class") or "")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "Resolved refund" in page.inner_text(".flash")

        # It has left the queue.
        page.goto(f"{server.url}/ops/queue")
        listed = [t.strip() for t in page.locator("a.open-case").all_inner_texts()]
        assert refund_id not in listed
        assert _number(page, "#open-count") == open_before - 1

        # And the dashboard counted it.
        page.goto(f"{server.url}/ops/dashboard")
        assert _number(page, "#dash-resolved") == resolved_before + 1
        assert _number(page, "#dash-open") == open_before - 1
        assert page.locator("svg.chart").count() >= 6
        _shot(page, "dashboard")
        page.goto(f"{server.url}/ops/overrides")
        assert page.locator("#pin-tier option").count() >= 2
        _shot(page, "overrides")
        assert outside == []  # nothing fetched from the internet
    finally:
        context.close()


def test_a_scorer_key_cannot_open_the_pages(server: Running, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{server.url}/ops/login")
        page.fill("#api_key", server.world.keys["scorer"])
        page.click("button[type=submit]")
        assert "cannot open the ops pages" in page.inner_text(".error")
        page.goto(f"{server.url}/ops/queue")
        assert "/ops/login" in page.url
    finally:
        context.close()
