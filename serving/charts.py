"""Small charts as inline SVG, drawn on the server: no script and no library to fetch.

Each function returns an SVG element as text (every label escaped), sized by its viewBox so it
fills the width of its container. Colours come from CSS classes in the ops stylesheet, so the
charts follow the page's palette.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

WIDTH = 640
HEIGHT = 180
LEFT = 44
RIGHT = 8
TOP = 10
BOTTOM = 26
AXIS_FONT_PX = 11
CHAR_EM = 0.62
"""Widest glyph of the axis font (digits, capitals) as a share of its size: a label's drawn
width is at most this times its length, so margins sized with it never clip a label."""
HBAR_LABEL_SHARE = 0.45
"""Most of a horizontal bar chart's width its labels may take; longer labels are shortened."""


def text_width(text: str, size_px: float = AXIS_FONT_PX) -> float:
    """An upper estimate of the width of `text` drawn at `size_px` in the ops font."""
    return len(text) * size_px * CHAR_EM


def _round_step(value: float) -> float:
    """The smallest step of 1, 2 or 5 times a power of ten that is at least `value`."""
    power = 10 ** math.floor(math.log10(value))
    for nice in (1, 2, 5, 10):
        if value <= nice * power * (1 + 1e-9):
            return nice * power
    return 10 * power


def _nice_max(value: float) -> float:
    """An axis top whose four grid steps are each 1, 2 or 5 times a power of ten."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    return 4 * _round_step(value / 4)


def _count_max(value: float) -> float:
    """An axis top for counts whose four grid steps are whole, round numbers."""
    if value <= 4 or not math.isfinite(value):
        return 4.0
    return 4 * _round_step(math.ceil(value / 4))


def _shorten(label: str, width_px: float) -> str:
    """`label` cut with an ellipsis so that it fits `width_px` at the axis font size."""
    fits = max(int(width_px / (AXIS_FONT_PX * CHAR_EM)), 2)
    return label if len(label) <= fits else label[: fits - 1] + "\u2026"


def _short_day(label: str) -> str:
    """An ISO day without its year (the axis is a window of weeks); any other label as is."""
    return label[5:] if len(label) == 10 and label[4] == "-" and label[7] == "-" else label


def _frame(
    labels: Sequence[str], top: float, fmt: Callable[[float], str], title: str
) -> tuple[list[str], float]:
    """The SVG opening, axes, horizontal grid lines and every other day's label, and the left
    edge of the plot: wide enough for the longest value label, so none is clipped."""
    plot_h = HEIGHT - TOP - BOTTOM
    ticks = [fmt(top * i / 4) for i in range(5)]
    left = max(LEFT, math.ceil(max(text_width(t) for t in ticks)) + 10)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
    ]
    for i, tick in enumerate(ticks):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line class="gridline" x1="{left}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(tick)}</text>"
        )
    n = max(len(labels), 1)
    slot = (WIDTH - left - RIGHT) / n
    every = max(1, math.ceil(n / 10))

    def centre(i: int, label: str) -> float:
        # Centred under its slot, but moved in where half the label would leave the picture
        # (the last of many days' narrow slots ends a few pixels from the right edge).
        half = text_width(label) / 2 + 0.5  # and half a pixel, for the rounding of x
        return min(max(left + slot * (i + 0.5), half), WIDTH - half)

    last_x = centre(n - 1, _short_day(labels[-1])) if labels else 0.0
    for i, label in enumerate(labels):
        shown = _short_day(label)
        x = centre(i, shown)
        # The last label is always shown; a regular one too close to it would overprint it.
        clear = last_x - x >= text_width(shown) + 6
        if i == n - 1 or (i % every == 0 and clear):
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{escape(shown)}</text>"
            )
    return parts, left


def stacked_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
) -> str:
    """Bars per label, stacked by series (each series gets the CSS class `s-<name>`)."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top = _count_max(max(totals, default=0.0))
    parts, left = _frame(labels, top, fmt, title)
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - left - RIGHT) / max(len(labels), 1)
    width = max(slot * 0.7, 1.0)
    for i, label in enumerate(labels):
        base = float(TOP + plot_h)
        x = left + slot * i + (slot - width) / 2
        for name, values in series.items():
            value = values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            base -= h
            parts.append(
                f'<rect class="s-{escape(name)}" x="{x:.1f}" y="{base:.1f}" '
                f'width="{width:.1f}" height="{h:.1f}"><title>{escape(label)} '
                f"{escape(name.replace('_', ' '))}: {escape(fmt(value))}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
    warn: Sequence[bool] | None = None,
) -> str:
    """One bar per label; a bar whose `warn` is true gets the class `s-warn`."""
    return _warn_bars(labels, values, title, fmt, warn or [False] * len(values))


def shares(labels: Sequence[str], percents: Sequence[float], title: str) -> str:
    """One bar per label for shares of a whole, in percent, on an axis from 0% to 100% (a
    count's axis would round 100% up to 200%)."""
    return _warn_bars(
        labels, percents, title, lambda v: f"{v:.0f}%", [False] * len(percents), top=100.0
    )


def _warn_bars(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    fmt: Callable[[float], str],
    warn: Sequence[bool],
    top: float | None = None,
) -> str:
    if top is None:
        top = _count_max(max(values, default=0.0))
    parts, left = _frame(labels, top, fmt, title)
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - left - RIGHT) / max(len(labels), 1)
    width = max(slot * 0.7, 1.0)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        if value <= 0:
            continue
        h = plot_h * value / top
        x = left + slot * i + (slot - width) / 2
        kind = "s-warn" if warn[i] else "s-bar"
        parts.append(
            f'<rect class="{kind}" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{width:.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}: {escape(fmt(value))}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def line(
    labels: Sequence[str],
    values: Sequence[float | None],
    title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:.2f}",
    top: float | None = None,
    marks: Mapping[str, float] | None = None,
    second: Sequence[float | None] | None = None,
) -> str:
    """A line over the labels (gaps where a value is None), with dashed reference `marks`, and
    an optional `second` line drawn dashed (class `second`), e.g. a forecast."""
    lines = [values] if second is None else [values, second]
    present = [v for series in lines for v in series if v is not None and math.isfinite(v)]
    ceiling = (
        top if top is not None else _nice_max(max([*present, *(marks or {}).values()], default=0))
    )
    parts, left = _frame(labels, ceiling, fmt, title)
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - left - RIGHT) / max(len(labels), 1)

    def y_of(v: float) -> float:
        return TOP + plot_h - plot_h * min(v, ceiling) / ceiling

    for i, (name, value) in enumerate((marks or {}).items()):
        y = y_of(value)
        # Marks close together would print their labels on top of each other: stagger them.
        label_x = WIDTH - RIGHT - 4 - 110 * i
        parts.append(
            f'<line class="mark" x1="{left}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
            f'<text class="mark-label" x="{label_x}" y="{y - 4:.1f}" '
            f'text-anchor="end">{escape(name)}</text>'
        )
    for n, series in enumerate(lines):
        extra = " second" if n else ""
        path: list[str] = []
        for i, (label, point) in enumerate(zip(labels, series, strict=True)):
            if point is None or not math.isfinite(point):
                path.append("")
                continue
            x, y = left + slot * (i + 0.5), y_of(point)
            path.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle class="dot{extra}" cx="{x:.1f}" cy="{y:.1f}" r="3"><title>'
                f"{escape(label)}: {escape(fmt(point))}</title></circle>"
            )
        for run in " ".join(p if p else "|" for p in path).split("|"):
            points = run.split()
            if len(points) > 1:
                parts.append(f'<polyline class="line{extra}" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def hbars(
    items: Sequence[tuple[str, float, str]],
    title: str,
    marks: Mapping[str, float] | None = None,
    fmt: Callable[[float], str] = lambda v: f"{v:.3f}",
) -> str:
    """Horizontal bars, one per (label, value, level) (class `lvl-<level>`), largest first."""
    row_h = 18
    widest = max((text_width(label) for label, _, _ in items), default=0.0)
    label_w = min(math.ceil(widest) + 12, math.floor(WIDTH * HBAR_LABEL_SHARE))
    height = TOP + row_h * max(len(items), 1) + 8
    values = [v for _, v, _ in items]
    top = _nice_max(max([*values, *(marks or {}).values()], default=0.0))
    span = WIDTH - label_w - RIGHT - 50
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
    ]
    last_label = -math.inf
    for name, value in (marks or {}).items():
        x = label_w + span * value / top
        parts.append(
            f'<line class="mark" x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{height - 4}"/>'
        )
        if x - last_label > 40:  # labels of marks this close would overprint each other
            parts.append(
                f'<text class="mark-label" x="{x + 3:.1f}" y="{TOP + 2}">{escape(name)}</text>'
            )
            last_label = x
    for i, (label, value, lvl) in enumerate(items):
        y = TOP + 6 + row_h * i
        w = max(span * value / top, 1.0)
        parts.append(
            f'<text class="axis" x="{label_w - 6}" y="{y + 12}" text-anchor="end">'
            f"{escape(_shorten(label, label_w - 12))}</text>"
            f'<rect class="lvl-{escape(lvl)}" x="{label_w}" y="{y + 2}" width="{w:.1f}" '
            f'height="{row_h - 6}"><title>{escape(label)}: {escape(fmt(value))} ({escape(lvl)})'
            f"</title></rect>"
            f'<text class="axis" x="{label_w + w + 4:.1f}" y="{y + 12}">{escape(fmt(value))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
