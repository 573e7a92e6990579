"""The time-ordered split of snapshot months into fit, calibration and test."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from features.batch import CREDIT_TARGET_DAYS
from refund_risk.errors import DataValidationError


@dataclass(frozen=True)
class TierSplit:
    """Which snapshot months fit the trees, calibrate them, and test them."""

    train_end: pd.Timestamp
    test_start: pd.Timestamp
    fit_dates: tuple[pd.Timestamp, ...]
    calibration_dates: tuple[pd.Timestamp, ...]
    test_dates: tuple[pd.Timestamp, ...]

    def describe(self) -> dict[str, str]:
        """The split as plain strings, for logs and MLflow parameters."""

        def days(dates: tuple[pd.Timestamp, ...]) -> str:
            return ",".join(str(d.date()) for d in dates)

        return {
            "train_end": str(self.train_end.date()),
            "test_start": str(self.test_start.date()),
            "fit_snapshots": days(self.fit_dates),
            "calibration_snapshots": days(self.calibration_dates),
            "test_snapshots": days(self.test_dates),
        }


def history_needed(test_months: int) -> str:
    """How much order history a tier training run needs, in words, for error messages."""
    window = math.ceil(CREDIT_TARGET_DAYS / 30)
    # A month to the first snapshot; the training cutoff is the first month start after that
    # snapshot's window closed (one more month, as 90 days outlast most three calendar months);
    # then the test months, the last of whose windows must close before the data ends.
    least = 1 + (window + 1) + (test_months - 1) + window
    return (
        f"The tier model needs about {least} months of orders: up to a month to the first "
        f"monthly snapshot, {window + 1} more to the first month start after its "
        f"{CREDIT_TARGET_DAYS}-day loss window closed (the training cutoff), then "
        f"{test_months} test month(s), the last of whose windows must close before the data "
        f"ends ({least + 1} months to also calibrate on a later month; fewer test months need "
        "less: --test-months 1)"
    )


def _span(snapshots: pd.DataFrame) -> str:
    """The snapshot months present, in words."""
    dates = pd.DatetimeIndex(sorted(pd.unique(snapshots["snapshot_at"])))
    if not len(dates):
        return "there are no snapshot months"
    return f"the data has {len(dates)} snapshot month(s), {dates[0].date()} to {dates[-1].date()}"


def _window_end(dates: pd.Series | pd.DatetimeIndex) -> pd.Series:
    return pd.Series(dates) + pd.Timedelta(days=CREDIT_TARGET_DAYS)


def plan_tier_split(
    snapshots: pd.DataFrame,
    train_end: pd.Timestamp,
    test_start: pd.Timestamp,
    calibration_months: int = 1,
) -> TierSplit:
    """Assign snapshot dates to fit, calibration and test (see the module docstring)."""
    train_end, test_start = pd.Timestamp(train_end), pd.Timestamp(test_start)
    if test_start < train_end:
        raise DataValidationError(
            f"test months must start at or after the training cutoff: test_start {test_start} "
            f"is before train_end {train_end}"
        )
    dates = pd.DatetimeIndex(sorted(pd.unique(snapshots["snapshot_at"])))
    complete = snapshots.groupby("snapshot_at")["target_window_complete"].all()
    test = [d for d in dates if d >= test_start and bool(complete.get(d, False))]
    closed = dates[(_window_end(dates) <= train_end).to_numpy()]
    if len(closed) == 0:
        raise DataValidationError(
            f"no snapshot's {CREDIT_TARGET_DAYS}-day window had closed by the training cutoff "
            f"{train_end.date()}, so there is nothing to learn from; {_span(snapshots)}. "
            f"{history_needed(max(len(test), 1))}"
        )
    n_cal = calibration_months if len(closed) > calibration_months else 0
    if not test:
        raise DataValidationError(
            f"no snapshot from {test_start.date()} on has a complete {CREDIT_TARGET_DAYS}-day "
            f"window in the data, so nothing can be tested; {_span(snapshots)}. "
            f"{history_needed(1)}"
        )
    return TierSplit(
        train_end=train_end,
        test_start=test_start,
        fit_dates=tuple(closed[: len(closed) - n_cal]),
        calibration_dates=tuple(closed[len(closed) - n_cal :]),
        test_dates=tuple(test),
    )


def default_cutoff(snapshots: pd.DataFrame, test_months: int = 2) -> pd.Timestamp:
    """The training cutoff that leaves the last `test_months` complete snapshot months to test.

    Used for both `train_end` and `test_start`: the model is fitted on the first day of the test
    months and then scores them, as it would in production.
    """
    complete = snapshots.groupby("snapshot_at")["target_window_complete"].all()
    dates = pd.DatetimeIndex(complete.index[complete.to_numpy(dtype=bool)]).sort_values()
    if test_months < 1:
        raise DataValidationError(f"test months must be at least 1, got {test_months}")
    if len(dates) < test_months:
        raise DataValidationError(
            f"{len(dates)} snapshot month(s) have a complete {CREDIT_TARGET_DAYS}-day window; "
            f"{test_months} needed for test; {_span(snapshots)}. {history_needed(test_months)}"
        )
    return pd.Timestamp(dates[-test_months])
