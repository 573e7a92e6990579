"""The dashboard's charts keep every label inside the picture and put grid lines on round steps."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import charts

DAYS = [f"2026-11-{d:02d}" for d in range(1, 15)]
# Wider than any glyph of an 11 px sans-serif font: a label this wide per character still fits.
GLYPH_PX = 11 * 0.62


def _texts(svg: str) -> list[ET.Element]:
    return [e for e in ET.fromstring(svg).iter() if e.tag == "text"]


def _left_edges(svg: str) -> list[float]:
    """Where each right-aligned label starts, at the widest its glyphs can be."""
    return [
        float(e.get("x", "0")) - len(e.text or "") * GLYPH_PX
        for e in _texts(svg)
        if e.get("text-anchor") == "end"
    ]


def _ticks(svg: str) -> list[float]:
    """The y-axis values, read back from their labels (thousands separators and units off)."""
    values = []
    for e in _texts(svg):
        if e.get("text-anchor") == "end":
            values.append(float((e.text or "").replace(",", "").replace(" h", "").rstrip("%")))
    return values


@pytest.mark.parametrize("peak", [9.0, 980.0, 41_000.0, 200_000.0, 3_500_000.0])
def test_count_axes_never_clip_their_labels(peak: float) -> None:
    svgs = [
        charts.bars(DAYS, [peak] * len(DAYS), "requests"),
        charts.stacked_bars(DAYS, {"a": [peak / 2] * 14, "b": [peak / 2] * 14}, "by action"),
    ]
    for svg in svgs:
        assert min(_left_edges(svg)) >= 0, svg


def test_long_feature_names_are_shortened_to_fit_and_kept_whole_in_the_tooltip() -> None:
    name = "linked_accounts_confirmed_abusive_refunds_by_payment_all_time_share"
    svg = charts.hbars([(name, 0.31, "shifted"), ("amount", 0.02, "stable")], "psi")
    assert min(_left_edges(svg)) >= 0
    assert name in svg  # the whole name stays readable on hover
    labels = [e.text for e in _texts(svg) if e.get("text-anchor") == "end"]
    assert any(label and label.endswith("\u2026") for label in labels)
    assert "amount" in labels


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.01, max_value=1e7, allow_nan=False))
def test_line_axes_step_evenly_by_a_round_amount(peak: float) -> None:
    svg = charts.line(DAYS[:3], [peak, peak / 2, None], "oldest", fmt=lambda v: f"{v:g}")
    ticks = _ticks(svg)
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1, ticks  # even
    step = steps.pop()
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0), ticks  # round
    assert ticks[-1] >= peak  # and the line fits under the top


def test_hours_axis_reads_in_whole_hours() -> None:
    svg = charts.line(DAYS[:4], [3.0, 19.0, 11.5, None], "oldest", fmt=lambda v: f"{v:.0f} h")
    assert _ticks(svg) == [0.0, 5.0, 10.0, 15.0, 20.0]


@pytest.mark.parametrize("n", [3, 10, 14, 26, 30, 90])
def test_day_labels_never_overprint_each_other(n: int) -> None:
    days = [f"2026-{1 + i // 28:02d}-{1 + i % 28:02d}" for i in range(n)]
    svg = charts.line(days, [1.0] * n, "by day")
    bottom = [e for e in _texts(svg) if e.get("text-anchor") == "middle"]
    xs = sorted(float(e.get("x", "0")) for e in bottom)
    assert xs, svg
    widest = max(len(e.text or "") for e in bottom) * GLYPH_PX
    assert all(b - a >= widest for a, b in itertools.pairwise(xs)), xs
    assert bottom[-1].text == days[-1][5:]  # the last day is always named


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=120), st.sampled_from(["line", "bars", "stacked"]))
def test_day_labels_stay_inside_the_picture_however_many_days(n: int, kind: str) -> None:
    days = [f"2026-{1 + i // 28:02d}-{1 + i % 28:02d}" for i in range(n)]
    svg = {
        "line": lambda: charts.line(days, [0.5] * n, "by day"),
        "bars": lambda: charts.bars(days, [3.0] * n, "by day"),
        "stacked": lambda: charts.stacked_bars(days, {"a": [2.0] * n}, "by day"),
    }[kind]()
    bottom = [e for e in _texts(svg) if e.get("text-anchor") == "middle"]
    assert bottom, svg
    for e in bottom:
        half = len(e.text or "") * GLYPH_PX / 2
        x = float(e.get("x", "0"))
        assert x - half >= 0, (n, e.text, x)
        assert x + half <= charts.WIDTH, (n, e.text, x)


@given(st.lists(st.integers(0, 1000), min_size=4, max_size=4).filter(any))
def test_shares_of_a_whole_read_on_an_axis_that_ends_at_100_percent(counts: list[int]) -> None:
    percents = [100.0 * c / sum(counts) for c in counts]
    svg = charts.shares(["< 24 h", "1-3 days", "3-7 days", "> 7 days"], percents, "settle")
    assert _ticks(svg) == [0.0, 25.0, 50.0, 75.0, 100.0]
    bars = [float(e.get("height", "0")) for e in ET.fromstring(svg).iter() if e.tag == "rect"]
    plot_h = charts.HEIGHT - charts.TOP - charts.BOTTOM
    assert math.isclose(max(bars) / plot_h, max(percents) / 100, abs_tol=0.01)
