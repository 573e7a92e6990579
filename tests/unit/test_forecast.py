"""The weekly forecast follows a rise, stays level on a flat history, never goes negative, and
reports its own error on past weeks beside the naive "like last week"."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.forecast import BACKTEST_WEEKS, HORIZON_WEEKS, MIN_WEEKS, forecast

WEEKS = [f"2026-{1 + i // 4:02d}-{1 + 7 * (i % 4):02d}" for i in range(26)]


def test_a_steady_rise_is_forecast_to_go_on_rising_and_beats_repeating_last_week() -> None:
    rng = np.random.default_rng(0)
    requests = [40 + 3 * i + float(rng.normal(0, 1)) for i in range(26)]
    made = forecast(WEEKS, requests, [25.0 * r for r in requests])
    assert made is not None
    assert made.weeks[0] > WEEKS[-1] and len(made.weeks) == HORIZON_WEEKS
    ahead = made.requests.ahead
    assert ahead[0] > requests[-1] - 3 and ahead[-1] > ahead[0]  # still rising
    assert made.requests.mae is not None and made.requests.naive_mae is not None
    assert made.requests.mae < made.requests.naive_mae  # the trend earns its place here


def test_a_flat_history_is_forecast_flat() -> None:
    made = forecast(WEEKS, [30.0] * 26, [900.0] * 26)
    assert made is not None
    assert made.requests.ahead == [30.0] * HORIZON_WEEKS
    assert made.money.mae == 0.0


def test_too_short_a_history_gives_no_forecast() -> None:
    assert (
        forecast(WEEKS[: MIN_WEEKS - 1], [5.0] * (MIN_WEEKS - 1), [1.0] * (MIN_WEEKS - 1)) is None
    )
    assert forecast(WEEKS[:MIN_WEEKS], [5.0] * MIN_WEEKS, [1.0] * MIN_WEEKS) is not None


def test_a_negative_or_missing_week_is_refused() -> None:
    with pytest.raises(ValueError, match="not negative"):
        forecast(WEEKS[:10], [1.0] * 9 + [-1.0], [1.0] * 10)
    with pytest.raises(ValueError):
        forecast(WEEKS[:10], [1.0] * 9 + [math.nan], [1.0] * 10)


@settings(max_examples=8, deadline=None)
@given(
    st.lists(
        st.floats(min_value=0, max_value=5_000, allow_nan=False), min_size=MIN_WEEKS, max_size=14
    )
)
def test_any_history_gives_finite_forecasts_not_below_zero(values: list[float]) -> None:
    made = forecast(WEEKS[: len(values)], values, [v * 30 for v in values])
    assert made is not None
    for series in (made.requests, made.money):
        assert len(series.ahead) == HORIZON_WEEKS
        assert all(math.isfinite(v) and v >= 0 for v in series.ahead)
        backtested = len(values) - max(len(values) - BACKTEST_WEEKS, MIN_WEEKS)
        assert (series.mae is None) == (backtested <= 0)


def test_a_fall_towards_zero_is_never_forecast_below_zero() -> None:
    falling = [max(120.0 - 12.0 * i, 0.0) + (i % 2) for i in range(12)]
    made = forecast(WEEKS[:12], falling, falling)
    assert made is not None
    assert min(made.requests.ahead) >= 0.0 and made.requests.ahead[-1] < falling[0]
