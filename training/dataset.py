"""Time-ordered training data with label delay.

The model is imagined to be fitted at a moment `deploy_at` and then used on the months after
it. Everything it learns from must have been known before `deploy_at`:

    requests:  |------ train ------|-- calibration --|-- delay --|------- test -------|
    time:    start          calibration_start     label_cutoff  deploy_at        data end

* train: requests before `calibration_start`, with the labels known before `deploy_at`;
* calibration: requests in `[calibration_start, deploy_at - label delay)`, later than the
  training requests, with the labels known before `deploy_at`;
* fitting: train and calibration together, in time order: every request whose label could be
  known at `deploy_at`. The abuse model is fitted on all of them and calibrated on
  cross-fitted scores over them (`training.abuse.AbuseRiskModel`): a year holds a few hundred
  abusive labels, too few to leave two months of them to calibration alone;
* test: requests from `deploy_at` on, judged by the latest labels in the data (and, for a
  synthetic world, by the oracle's truth).

A request with no outcome known at `deploy_at` is left out of train and calibration: its label
is unknown, which is not the same as honest. Requests in the delay gap are left out because
most of their labels were not known yet; training on the few that were would over-weight the
quickly settled kinds (cancellations) and bias the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import FEATURES
from features.labels import LABEL_COLUMNS, labels_as_of
from refund_risk.errors import DataValidationError

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.categorical)


@dataclass(frozen=True)
class TimeSplit:
    """Where the train, calibration and test periods start and end."""

    calibration_start: pd.Timestamp
    label_cutoff: pd.Timestamp
    deploy_at: pd.Timestamp
    data_end: pd.Timestamp
    label_delay_days: int

    def describe(self) -> dict[str, str]:
        """The split as plain strings, for logs and MLflow parameters."""
        return {
            "calibration_start": str(self.calibration_start.date()),
            "label_cutoff": str(self.label_cutoff.date()),
            "deploy_at": str(self.deploy_at.date()),
            "data_end": str(self.data_end.date()),
            "label_delay_days": str(self.label_delay_days),
        }


def plan_split(
    requested_at: pd.Series,
    test_months: int = 3,
    calibration_months: int = 2,
    label_delay_days: int = 30,
) -> TimeSplit:
    """Put `deploy_at` at the start of the last `test_months` whole months of requests."""
    if requested_at.empty:
        raise DataValidationError(
            "there are no refund requests to train on: import the shop's refund requests "
            "(`refund-risk data import`) or generate a world (`refund-risk data generate`)"
        )
    data_end = pd.Timestamp(requested_at.max())
    deploy_at = (data_end - pd.DateOffset(months=test_months)).to_period("M").to_timestamp()
    deploy_at = deploy_at + pd.DateOffset(months=1)
    label_cutoff = deploy_at - pd.Timedelta(days=label_delay_days)
    calibration_start = deploy_at - pd.DateOffset(months=calibration_months)
    if calibration_start <= pd.Timestamp(requested_at.min()):
        raise DataValidationError(
            "the data is too short for a train, calibration and test period: requests span "
            f"{pd.Timestamp(requested_at.min()).date()} to {data_end.date()}, and the abuse "
            f"model needs {test_months} test month(s), {calibration_months} calibration "
            "month(s) before them and at least one month of requests before those to learn "
            "from; import a longer history, or use fewer test months (--test-months)"
        )
    return TimeSplit(calibration_start, label_cutoff, deploy_at, data_end, label_delay_days)


@dataclass
class AbuseDataset:
    """The three periods' rows, with labels as each period may know them."""

    split: TimeSplit
    train: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame

    @property
    def fitting(self) -> pd.DataFrame:
        """Train and calibration rows together, in time order: what the model is fitted on."""
        both = pd.concat([self.train, self.calibration], ignore_index=True)
        return both.sort_values(["requested_at", "refund_id"], kind="stable").reset_index(drop=True)

    def summary(self) -> dict[str, int]:
        """Row and positive counts per period, for logs."""
        out: dict[str, int] = {}
        for name in ("train", "calibration", "fitting", "test"):
            frame = getattr(self, name)
            out[f"{name}_rows"] = len(frame)
            out[f"{name}_positives"] = int(frame["label"].sum())
        return out


def build_abuse_dataset(
    rows: pd.DataFrame,
    outcomes: pd.DataFrame,
    split: TimeSplit,
    oracle_refunds: pd.DataFrame | None = None,
) -> AbuseDataset:
    """Cut feature rows into train, calibration and test, each with its honest label.

    `rows` is the batch builder's table (features plus final-label columns); `label` is the
    label known before `deploy_at` for train and calibration, and the latest one in the data for
    test (test rows with no label yet are kept, with `label` False and `labelled` False, so the
    oracle figures can use every test request).
    """
    missing = [c for c in FEATURE_NAMES if c not in rows.columns]
    if missing:
        raise DataValidationError(f"feature table lacks columns: {', '.join(missing)}")
    known = labels_as_of(outcomes, split.deploy_at).set_index("refund_id")["is_abusive"]
    at = rows["requested_at"]
    if known.empty:
        learnable = int((at < split.label_cutoff).sum())
        raise DataValidationError(
            f"the abuse model learns from outcomes (which refund requests were found abusive), "
            f"and no outcome is known before {split.deploy_at.date()}: the {learnable:,} refund "
            f"requests before {split.label_cutoff.date()} have none ({len(outcomes):,} outcomes "
            "in the data). Record outcomes (warehouse checks, carrier proofs, reviewers' "
            "decisions, exported by `refund-risk events export`) and import them, then train "
            "again. Until then train the credit-tier model (`refund-risk train tier --promote`): "
            "the service decides with tiers and the rules-only policy"
        )

    def period(mask: pd.Series) -> pd.DataFrame:
        part = rows.loc[mask].drop(columns=list(LABEL_COLUMNS))
        label = known.reindex(part["refund_id"])
        part = part.loc[label.notna().to_numpy()].copy()
        part["label"] = label.dropna().to_numpy(dtype=bool)
        return part.reset_index(drop=True)

    train = period(at < split.calibration_start)
    calibration = period((at >= split.calibration_start) & (at < split.label_cutoff))
    test = rows.loc[at >= split.deploy_at].copy()
    final = test["label_is_abusive_final"]
    test["labelled"] = final.notna().to_numpy()
    test["label"] = final.fillna(False).to_numpy(dtype=bool)
    test = test.drop(columns=list(LABEL_COLUMNS))
    if oracle_refunds is not None:
        truth = oracle_refunds.set_index("refund_id").reindex(test["refund_id"])
        test["is_abusive_true"] = truth["is_abusive_true"].to_numpy(dtype=bool)
        test["true_abuse_probability"] = truth["true_abuse_probability"].to_numpy()
    periods = {
        "train": (train, f"requests before {split.calibration_start.date()}"),
        "calibration": (
            calibration,
            f"requests from {split.calibration_start.date()} to {split.label_cutoff.date()}",
        ),
    }
    for name, (frame, when) in periods.items():
        if frame.empty:
            raise DataValidationError(
                f"the {name} period ({when}) has no refund request with an outcome known "
                f"before {split.deploy_at.date()} ({len(known):,} refund requests in all have "
                "one): record and import outcomes of earlier requests, or use fewer test months "
                "(--test-months) so more of them count"
            )
        positives = int(frame["label"].sum())
        if positives in (0, len(frame)):
            kind = "abusive" if positives == 0 else "found not abusive"
            raise DataValidationError(
                f"the {name} period ({when}) has {len(frame):,} refund requests with a known "
                f"outcome and none {kind}: the abuse model needs both kinds to learn what "
                "abuse looks like. Record outcomes that find abuse (warehouse checks of swapped "
                "or empty returns, false not-received claims, reviewers' decisions) and import "
                "them, or use a longer history; the credit-tier model needs no outcome "
                "(`refund-risk train tier --promote`)"
            )
    if test.empty:
        raise DataValidationError(
            f"the test period (requests from {split.deploy_at.date()}) has no refund request: "
            "use fewer test months (--test-months)"
        )
    return AbuseDataset(split, train, calibration, test.reset_index(drop=True))


def feature_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The model's input: the feature columns in definition order, as float64."""
    return frame.loc[:, list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
