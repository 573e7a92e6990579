"""The ops pages' small parts: signed sessions, inline SVG charts, the overrides in memory."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from typing import Any

import pytest

from serving import charts
from serving.overrides import Overrides, tier_source
from serving.sessions import SessionSigner


def test_a_session_cookie_opens_only_unchanged_and_unexpired() -> None:
    signer = SessionSigner("secret", max_age_seconds=60)
    session, cookie = signer.open("key1", "reviewer", now=1000.0)
    read = signer.read(cookie, now=1030.0)
    assert read == session and read.csrf and len(read.csrf) > 20
    assert signer.read(cookie, now=1061.0) is None  # expired
    body, signature = cookie.split(".")
    assert signer.read(f"{body}x.{signature}", now=1030.0) is None  # tampered
    assert SessionSigner("other", 60).read(cookie, now=1030.0) is None  # another secret
    assert signer.read("garbage", now=1030.0) is None
    assert signer.read(None) is None
    assert SessionSigner(None, 60).open("k", "admin")[0].role == "admin"  # random secret


@pytest.mark.parametrize(
    "svg",
    [
        charts.stacked_bars(["2026-01-01", "2026-01-02"], {"a": [1, 2], "b": [0, 3]}, "t <&>"),
        charts.bars(["2026-01-01"], [0.0], "empty"),
        charts.bars(["2026-01-01", "2026-01-02"], [3, 9], "warn", warn=[False, True]),
        charts.line(["d1", "d2", "d3"], [0.2, None, 0.5], "gap", marks={"x": 0.1}),
        charts.line([], [], "nothing"),
        charts.hbars([("f<1>", 0.3, "shifted"), ("f2", 0.0, "stable")], "psi", {"0.1": 0.1}),
    ],
)
def test_charts_are_well_formed_svg_with_escaped_labels(svg: str) -> None:
    root = ET.fromstring(svg)
    assert root.tag == "svg" and root.get("viewBox")
    assert "<&>" not in svg and "f<1>" not in svg


def test_warned_bars_are_marked() -> None:
    svg = charts.bars(["d1", "d2"], [3, 9], "queue", warn=[False, True])
    assert svg.count('class="s-warn"') == 1 and svg.count('class="s-bar"') == 1


class _NoEngine:
    """Overrides that are only read need no database."""


def test_overrides_answer_from_memory_and_lapse_by_themselves() -> None:
    now = datetime(2026, 1, 1, 12)
    book = Overrides(_NoEngine(), clock=lambda: now)  # type: ignore[arg-type]
    assert book.active("c1") is None
    from serving.overrides import TierPin, WatchEntry

    book._pins["c1"] = TierPin("p", "c1", "gold", "vip", "k", now, now + timedelta(hours=1))
    book._watch["c2"] = WatchEntry("w", "c2", "ring", "k", now, None)
    pinned = book.active("c1")
    assert pinned is not None and pinned.pinned_tier == "gold" and not pinned.watchlisted
    assert "pinned to gold" in pinned.reasons()[0] and "vip" in pinned.reasons()[0]
    assert tier_source(pinned, "gold", 0.01) == "pinned"
    assert tier_source(None, "silver", 0.01) == "model"
    assert tier_source(None, "standard", None) == "default"
    watched: Any = book.active("c2")
    assert watched.watchlisted and watched.pinned_tier is None
    assert book.active("c1", at=now + timedelta(hours=2)) is None
    assert [p.customer_id for p in book.pins()] == ["c1"]


@pytest.mark.parametrize(
    ("largest", "top"), [(0, 4), (3, 4), (6, 8), (19, 20), (37, 40), (130, 200)]
)
def test_count_axes_have_whole_round_steps(largest: float, top: float) -> None:
    assert charts._count_max(largest) == top
