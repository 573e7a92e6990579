"""Refund volume and money for the coming weeks, with the method's error on past weeks.

Holt's linear method with a damped trend (statsmodels' exponential smoothing), fitted on the
complete weeks of the trend: it follows a level and a slope that flattens out, so a rise shows
without being drawn on for ever. Its error is measured the way it is used: for each of the last
few weeks, a fit on the weeks before it forecasts that week, and the misses are averaged; the
same is done for "next week is like last week", so an owner sees whether the method earns its
place.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import numpy as np

HORIZON_WEEKS = 4
"""Weeks forecast ahead."""

MIN_WEEKS = 8
"""Complete weeks needed before a forecast is made: fewer give no stable slope."""

BACKTEST_WEEKS = 4
"""Past weeks each forecast is checked against."""


@dataclass(frozen=True)
class Series:
    """One quantity's forecast and its error on past weeks."""

    ahead: list[float]
    """The coming weeks' values, never below zero."""
    mae: float | None
    """Mean absolute error of one-week-ahead forecasts over the backtest weeks."""
    naive_mae: float | None
    """The same for "next week equals this week"."""


@dataclass(frozen=True)
class Forecast:
    """Requests and money for the weeks after the last complete one."""

    weeks: list[str]
    requests: Series
    money: Series
    method: str = "Holt's linear trend, damped (statsmodels exponential smoothing)"


def _fit_forecast(history: np.ndarray, steps: int) -> np.ndarray:
    """Forecast `steps` values after `history` (falls back to the last level if a fit fails)."""
    # Imported here: statsmodels takes a second to import and only the dashboard needs it.
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    if np.all(history == history[0]):
        return np.full(steps, float(history[0]))
    with warnings.catch_warnings():
        # Short, noisy series make the optimiser warn; the fit is still the best it found.
        warnings.simplefilter("ignore")
        try:
            model = ExponentialSmoothing(
                history, trend="add", damped_trend=True, initialization_method="estimated"
            ).fit()
            ahead = np.asarray(model.forecast(steps), dtype=float)
        except (ValueError, np.linalg.LinAlgError):
            ahead = np.full(steps, float(history[-1]))
    if not np.all(np.isfinite(ahead)):
        ahead = np.full(steps, float(history[-1]))
    return np.maximum(ahead, 0.0)


def _series(values: Sequence[float]) -> Series:
    return _series_of(tuple(float(v) for v in values))


@lru_cache(maxsize=64)
def _series_of(values: tuple[float, ...]) -> Series:
    # Five fits per series take a second or so; the weeks behind a dashboard rarely change
    # between two looks at it, so the same history is answered from memory.
    y = np.asarray(values, dtype=float)
    ahead = _fit_forecast(y, HORIZON_WEEKS)
    misses, naive = [], []
    for end in range(len(y) - BACKTEST_WEEKS, len(y)):
        if end < MIN_WEEKS:
            continue
        misses.append(abs(_fit_forecast(y[:end], 1)[0] - y[end]))
        naive.append(abs(y[end - 1] - y[end]))
    return Series(
        [round(float(v), 2) for v in ahead],
        float(np.mean(misses)) if misses else None,
        float(np.mean(naive)) if naive else None,
    )


def forecast(
    week_starts: Sequence[str], requests: Sequence[float], money: Sequence[float]
) -> Forecast | None:
    """The next weeks' requests and money from complete past weeks (oldest first), or None
    when there are fewer than `MIN_WEEKS` of them."""
    if len(week_starts) < MIN_WEEKS or not (len(week_starts) == len(requests) == len(money)):
        return None
    if not all(math.isfinite(v) and v >= 0 for v in (*requests, *money)):
        raise ValueError("weekly figures must be finite and not negative")
    last = date.fromisoformat(week_starts[-1])
    weeks = [(last + timedelta(weeks=i + 1)).isoformat() for i in range(HORIZON_WEEKS)]
    return Forecast(weeks, _series(requests), _series(money))
