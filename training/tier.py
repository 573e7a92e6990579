"""The credit-tier model: a customer's probability of causing a refund loss in the next 90 days.

Trained on monthly customer snapshots (`features.batch.build_credit_snapshots`): one row per
customer and snapshot date, the customer and linked-account features as of that date, and a
target saying whether the customer caused a refund loss in the 90 days after the snapshot.

What counts as a loss (`LOSS_DEFINITIONS`). No shop knows its true losses; these are proxies:

* `kept` (the default whenever the data has such losses): a refund the latest outcome says was
  abusive (which is how a return whose goods never came back, or came back swapped, is
  recorded), or a refund-only claim on delivered goods, where the customer kept goods and money
  (`target_has_loss_90d` of the snapshots). Needs no outcome at all for the second kind.
* `refunds`: any refund request, returns and cancellations included: each costs the shop
  handling, shipping and the sale. The proxy of a shop whose export holds neither outcomes nor
  refund-only claims on delivered goods (cancellations and returns alone).

`auto` takes `kept` when the fit months hold such a loss, else `refunds`, and says which.

Tiers are shares of the shop's customers. The tiers file gives each tier a `share` of the scored
population; the cut-offs (each tier's upper score bound) are fitted at those percentiles of the
scores of the latest months the model was trained on (the calibration month, else the fit
months), stored with the model, and put in force by the service through `policy.tiers.with_bounds`.
The tier is then `policy.tiers.assign_tier` of the score, the one definition of it.

Time, and what was known when. A model fitted at `train_end` may learn only from snapshots whose
90-day target window had closed by then:

    snapshots: |-- fit --|-- calibration --|-- windows still open --|-- test (later months) --|
    dates:   first    calibration_start                       train_end <= test_start    data end

* fit and calibration: snapshots with `snapshot_at + 90 days <= train_end`. The snapshot
  column `target_window_complete` is measured against the end of the data, not the cutoff, so
  it cannot be used to choose training rows; the window is checked against `train_end` here.
  Calibration takes the latest of these snapshot months, the booster the earlier ones, so the
  probabilities are fitted on data later than the trees were.
* test: snapshots from `test_start` on whose window had closed by the end of the data (a
  window cut short by the data's end would undercount losses and flatter every tier).

Label delay, and the approximation taken. Targets are built from the final labels in the data,
not from the labels known at `train_end`. Most of a snapshot's loss is known the moment the
refund is requested (a refund-only claim never brings the goods back); the rest is abuse found
on returned goods, which the warehouse check reports within about two weeks, and a few later
findings (chargebacks, ring investigations). On the default world (seed 7, 20,000 customers),
with `train_end` 2025-09-01, 1 of the 836 loss refunds requested before the cutoff changes
between the labels known at the cutoff and the final ones. A strict version needs targets built
from `features.labels.labels_as_of(outcomes, train_end)` in the snapshot builder.

What `kept` counts on the generated world. Refund-only claims on delivered goods are most of
the losses; they follow how often a customer orders more than how far the customer can be
trusted, so among the lowest-scored customers the realised loss rate is nearly flat, and the two
best tiers are told apart by a few tenths of a percentage point.

New customers. A customer with no order before the snapshot date has nothing to be judged on: the
score is NaN (not a number the model made up), and `assign_tier` puts a missing score in the
default tier, as it does for customers absent from the snapshot.

`python -m training.tier [--customers N] [--seed S] [--tiers FILE]` generates a world, trains,
and prints the test months' figures and tier table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from features.batch import CREDIT_TARGET_COLUMNS, CREDIT_TARGET_DAYS
from features.definitions import FEATURES, Entity, Feature
from policy.tiers import Tiers, assign_tier, with_bounds
from refund_risk.errors import DataValidationError
from training.metrics import expected_calibration_error, safe_ap, safe_auc

TARGET = "target_has_loss_90d"
"""The `kept` loss of a snapshot: confirmed abuse, or goods kept, in the next 90 days."""

REFUND_REQUESTS = "target_refund_requests_90d"
"""Refund requests of any kind in the 90 days after a snapshot (the `refunds` loss)."""

LOSS_DEFINITIONS: dict[str, str] = {
    "kept": "a refund an outcome found abusive (goods never returned or swapped included), or a "
    "refund-only claim on delivered goods (the customer kept goods and money)",
    "refunds": "any refund request, returns and cancellations included (each costs the shop "
    "handling, shipping and the sale)",
}
"""What counts as a refund loss, by name; `auto` picks `kept` when the data has such losses."""

LOSS_CHOICES: tuple[str, ...] = ("auto", *LOSS_DEFINITIONS)


def loss_labels(frame: pd.DataFrame, loss: str) -> np.ndarray:
    """Per snapshot row: whether the customer caused a loss of kind `loss` in the next 90 days."""
    if loss == "kept":
        return frame[TARGET].to_numpy(dtype=bool)
    if loss == "refunds":
        return frame[REFUND_REQUESTS].to_numpy(dtype=np.float64) > 0
    raise DataValidationError(
        f"unknown loss definition {loss!r}; choose one of {', '.join(LOSS_DEFINITIONS)}"
    )


def choose_loss(fit_rows: pd.DataFrame, loss: str, fit_dates: Sequence[pd.Timestamp]) -> str:
    """The loss definition to train on: `loss` itself, or for `auto` the first of `kept`,
    `refunds` that the fit months hold; a DataValidationError saying what is missing if none."""
    if loss != "auto" and loss not in LOSS_DEFINITIONS:
        loss_labels(fit_rows.head(0), loss)  # raises, naming the choices
    candidates = list(LOSS_DEFINITIONS) if loss == "auto" else [loss]
    for name in candidates:
        if len(fit_rows) and loss_labels(fit_rows, name).any():
            return name
    months = f"{fit_dates[0].date()} to {fit_dates[-1].date()}" if fit_dates else "(none)"
    if fit_rows.empty:
        raise DataValidationError(
            f"the fit months' snapshots ({months}) hold no customer who had ordered before "
            "them: the tier model learns from customers with a history; import the orders of "
            "earlier months, or use a longer history"
        )
    counted = " or ".join(LOSS_DEFINITIONS[n] for n in candidates)
    raise DataValidationError(
        f"the fit months ({months}, {len(fit_rows):,} customer-months) hold no customer with a "
        f"refund loss, counted as {counted}. The tier model learns who causes such losses: "
        "import the shop's refund requests (cancellations and returns included, with their "
        "refund_type and order_stage) and outcomes if any"
        + ("; or train with --loss auto or --loss refunds" if loss == "kept" else "")
    )


HISTORY_FEATURE = "customer_orders_all_time"
"""A customer with no order before the snapshot is new: no score, the default tier."""

TIER_ENTITIES: frozenset[Entity] = frozenset({Entity.CUSTOMER, Entity.LINKED_ACCOUNTS})
"""Entities whose features describe a customer alone; request and order features do not exist
at a snapshot (there is no request), so they are never tier-model inputs."""

ABUSIVE_TYPES: tuple[str, ...] = ("wardrober", "false_claimer", "swapper", "ring_member")
"""The oracle's latent types that abuse as a habit (evaluation only, never a feature)."""
HONEST_TYPE = "honest"
OPPORTUNIST_TYPE = "opportunist"
LATENT_TYPES: tuple[str, ...] = (HONEST_TYPE, OPPORTUNIST_TYPE, *ABUSIVE_TYPES)


NOT_TIER_INPUTS: dict[str, str] = {
    "customer_days_since_last_refund_request": (
        "missing for a customer who never asked for a refund, and a monotone constraint orders "
        "only the values, not 'never' against them: a first claim moved it from missing to a "
        "value the trees read as safer, and lifted the customer's tier. How recently the "
        "customer claimed is carried by the windowed refund counts, which are constrained"
    ),
    **{
        f"customer_mean_days_from_delivery_to_claim_{window}": (
            "one more claim moves a mean either way (and from missing to a value), so it has "
            "no direction a tier could honestly keep: evidence would buy trust"
        )
        for window in ("7d", "30d", "90d", "365d", "all_time")
    },
}
"""Customer features the tier model does not read, each with the reason."""


def _tier_input(feature: Feature) -> bool:
    return feature.entity in TIER_ENTITIES and feature.name not in NOT_TIER_INPUTS


def tier_feature_names(features: Iterable[Feature] = FEATURES) -> tuple[str, ...]:
    """The tier model's inputs: the customer and linked-account features, in definition order,
    but for those in `NOT_TIER_INPUTS`."""
    return tuple(f.name for f in features if _tier_input(f))


def tier_categorical_features(features: Iterable[Feature] = FEATURES) -> tuple[str, ...]:
    """Which tier inputs are category codes (given to LightGBM as integer codes)."""
    return tuple(f.name for f in features if _tier_input(f) and f.categorical)


# Directions the model may not contradict, with the reason; every other feature is learnt
# freely. Behavioural counts (orders, refund requests, refund-only claims) are left free on
# purpose: an honest customer who shops more also claims more, so their direction is a finding
# of the data, not a rule of the business.
MONOTONE: dict[str, tuple[int, str]] = {
    "customer_confirmed_abusive_refunds": (
        +1,
        "another refund confirmed abusive never makes a customer more trustworthy",
    ),
    "customer_confirmed_abusive_amount": (
        +1,
        "more money in confirmed abusive refunds never makes a customer more trustworthy",
    ),
    "customer_confirmed_abuse_rate": (
        +1,
        "a larger share of refunds confirmed abusive never makes a customer more trustworthy",
    ),
    "linked_accounts_confirmed_abusive_refunds_by_device": (
        +1,
        "confirmed abuse by accounts on the same device never vouches for this one",
    ),
    "linked_accounts_confirmed_abusive_refunds_by_address": (
        +1,
        "confirmed abuse by accounts at the same address never vouches for this one",
    ),
    "linked_accounts_confirmed_abusive_refunds_by_payment": (
        +1,
        "confirmed abuse by accounts paying with the same card never vouches for this one",
    ),
    "linked_accounts_confirmed_abusive_refunds_by_any": (
        +1,
        "confirmed abuse by any linked account never vouches for this one",
    ),
    # A new refund request arriving as events (a "not received" claim, one later confirmed
    # abusive) moves these; whatever the habits of honest heavy shoppers, one more claim by
    # the same customer is never evidence that they deserve more trust.
    **{
        f"customer_{what}_{window}": (+1, f"{words} never makes a customer more trustworthy")
        for what, words in (
            ("refund_requests", "another refund request"),
            ("refund_amount", "more money asked back"),
            ("refund_rate_by_count", "more refund requests per order"),
            ("refund_rate_by_amount", "more money asked back per money spent"),
            ("refund_only_requests", "another refund without sending the goods back"),
            ("not_received_claims", "another claim that a parcel never arrived"),
            ("refund_reasons_used", "one more reason given for refunds"),
        )
        for window in ("7d", "30d", "90d", "365d", "all_time")
    },
    "customer_not_received_claims_on_delivered_all_time": (
        +1,
        "another 'not received' claim on a parcel the carrier delivered never makes a customer "
        "more trustworthy",
    ),
    "customer_refunds_with_known_outcome": (
        +1,
        "an outcome found on an earlier refund never makes a customer more trustworthy: the "
        "share found abusive is constrained on its own",
    ),
    **{
        f"linked_accounts_by_{kind}": (
            +1,
            "another account sharing a fingerprint never makes a customer more trustworthy",
        )
        for kind in ("device", "address", "payment", "any")
    },
    "customer_tenure_days": (
        -1,
        "with everything else equal, a longer clean history never makes a customer riskier",
    ),
}


def monotone_constraints(names: Sequence[str]) -> list[int]:
    """LightGBM's `monotone_constraints` for the features `names`, in their order."""
    return [MONOTONE[n][0] if n in MONOTONE else 0 for n in names]


# --- the estimator ---------------------------------------------------------------------------


class CreditTierModel(ClassifierMixin, BaseEstimator):
    """LightGBM with monotone constraints on the customer features, Platt-calibrated later.

    scikit-learn's contract: parameters only in `__init__`, learned state in trailing-underscore
    attributes, `random_state` threaded through. One thread and LightGBM's deterministic mode,
    so the same data and seed give the same model, bit for bit.

    `X` is a frame holding the feature columns (matched by name) or an array with the columns in
    the order of `features` (default: `tier_feature_names()`). `predict_proba` returns shape
    (n, 2), no loss and loss, as scikit-learn expects; `score_customers` gives the loss
    probability alone, with NaN for customers who have no history.

    The defaults are small, strongly regularised trees: the target is mostly ordinary refund-only
    claims of honest customers, a weak signal. On the default world, fitted before July and
    tested on July and August, 31-leaf trees ranked later months worse (ROC-AUC about 0.55
    against 0.59) and abusers no better; 3 to 7 leaves with 200+ rows per leaf all did alike.
    """

    def __init__(
        self,
        n_estimators: int = 150,
        learning_rate: float = 0.03,
        num_leaves: int = 5,
        min_child_samples: int = 200,
        l2_regularisation: float = 1.0,
        features: Sequence[str] | None = None,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.l2_regularisation = l2_regularisation
        self.features = features
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _feature_list(self) -> tuple[str, ...]:
        return tuple(self.features) if self.features is not None else tier_feature_names()

    def lgb_params(self) -> dict[str, Any]:
        """The LightGBM parameters this estimator trains with."""
        names = self._feature_list()
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "lambda_l2": self.l2_regularisation,
            # No row or feature sampling: nothing random left but ties, which `deterministic`
            # settles.
            "feature_fraction": 1.0,
            "bagging_fraction": 1.0,
            "bagging_freq": 0,
            "monotone_constraints": monotone_constraints(names),
            "monotone_constraints_method": "advanced",
            "seed": self.random_state,
            "num_threads": self.n_jobs,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }

    def _matrix(self, X: pd.DataFrame | np.ndarray, names: Sequence[str]) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            missing = [n for n in names if n not in X.columns]
            if missing:
                raise DataValidationError(f"tier model input lacks columns: {', '.join(missing)}")
            return X.loc[:, list(names)].to_numpy(dtype=np.float64)
        matrix = np.asarray(X, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(names):
            raise DataValidationError(
                f"tier model input must have {len(names)} columns, got shape {matrix.shape}"
            )
        return matrix

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        y: np.ndarray | pd.Series,
        X_calibration: pd.DataFrame | np.ndarray | None = None,
        y_calibration: np.ndarray | pd.Series | None = None,
    ) -> CreditTierModel:
        """Fit the trees on (X, y); then, if given, Platt scaling on the later calibration rows."""
        names = self._feature_list()
        categorical = [n for n in tier_categorical_features() if n in names]
        data = lgb.Dataset(
            self._matrix(X, names),
            label=np.asarray(y, dtype=np.float64),
            feature_name=list(names),
            categorical_feature=categorical,
            free_raw_data=True,
        )
        self.booster_ = lgb.train(self.lgb_params(), data, num_boost_round=self.n_estimators)
        self.features_ = names
        self.classes_ = np.array([False, True])
        self.n_features_in_ = len(names)
        self.calibration_ = (1.0, 0.0)
        self.calibrated_ = False
        if X_calibration is not None and y_calibration is not None:
            self.calibrate(X_calibration, y_calibration)
        return self

    def calibrate(self, X: pd.DataFrame | np.ndarray, y: np.ndarray | pd.Series) -> CreditTierModel:
        """Platt scaling of the raw margin on later rows: p = sigmoid(a * margin + b).

        Tier thresholds are read as probabilities ("at most 2% chance of a loss"), so the score
        must mean one. Two parameters, not isotonic steps: steps would tie whole groups of
        customers at one score and could empty a tier. A slope that is not positive (the later
        months ranked the other way round) would reverse the ranking and break the monotone
        directions; then the trees' own probabilities are kept and `calibrated_` stays False.
        """
        y = np.asarray(y, dtype=bool)
        if y.all() or not y.any():
            return self
        margin = self.predict_raw(X).reshape(-1, 1)
        platt = LogisticRegression(C=1e4, max_iter=1000).fit(margin, y)
        slope, intercept = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        if slope > 0:
            self.calibration_ = (slope, intercept)
            self.calibrated_ = True
        return self

    def predict_raw(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The trees' raw margin (log-odds before calibration)."""
        matrix = self._matrix(X, self.features_)
        return np.asarray(self.booster_.predict(matrix, raw_score=True, num_threads=self.n_jobs))

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2): no loss, loss in the next 90 days."""
        slope, intercept = self.calibration_
        p = 1.0 / (1.0 + np.exp(-(slope * self.predict_raw(X) + intercept)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """True where a loss is likelier than not (rare; tiers use the probability instead)."""
        return self.predict_proba(X)[:, 1] > 0.5

    def model_string(self) -> str:
        """The booster as LightGBM's text model: two equal strings mean two equal models."""
        return str(self.booster_.model_to_string(num_iteration=-1))


# --- scoring and tiers -----------------------------------------------------------------------


def has_history(frame: pd.DataFrame) -> np.ndarray:
    """Per snapshot row: whether the customer had ordered before the snapshot date."""
    return frame[HISTORY_FEATURE].to_numpy(dtype=np.float64) > 0


def score_customers(model: CreditTierModel, frame: pd.DataFrame) -> np.ndarray:
    """Loss probability per snapshot row, 1-D; NaN for customers with no history yet."""
    scores = np.full(len(frame), np.nan)
    known = has_history(frame)
    if known.any():
        scores[known] = model.predict_proba(frame.loc[known])[:, 1]
    return scores


def tier_for(score: float | None, tiers: Tiers) -> str:
    """The tier name for one score; None or NaN (a new customer) gives the default tier."""
    return assign_tier(score, tiers).name


def tiers_for(scores: np.ndarray, tiers: Tiers) -> np.ndarray:
    """Tier names for many scores (NaN: the default tier), by the policy's own `assign_tier`."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.full(len(scores), tiers.default.name, dtype=object)
    known = ~np.isnan(scores)
    # Each distinct score is assigned once: the policy's rule stays the only definition of it.
    unique, inverse = np.unique(scores[known], return_inverse=True)
    names = np.array([tier_for(float(s), tiers) for s in unique], dtype=object)
    out[known] = names[inverse] if len(unique) else out[known]
    return out


def customer_tiers(
    model: CreditTierModel,
    snapshot: pd.DataFrame,
    tiers: Tiers,
    customer_ids: Sequence[str] | pd.Series | None = None,
) -> pd.DataFrame:
    """Score and tier per customer of one snapshot: `customer_id`, `score`, `tier`.

    With `customer_ids`, one row per id in that order; ids absent from the snapshot (signed up
    after it, or unknown) get no score and the default tier.
    """
    scored = pd.DataFrame(
        {
            "customer_id": snapshot["customer_id"].to_numpy(),
            "score": score_customers(model, snapshot),
        }
    )
    if customer_ids is not None:
        ids = pd.Index(np.asarray(customer_ids, dtype=object))
        scored = scored.set_index("customer_id").reindex(ids).rename_axis("customer_id")
        scored = scored.reset_index()
    scored["tier"] = tiers_for(scored["score"].to_numpy(dtype=np.float64), tiers)
    return scored


def suggest_thresholds(
    scores: np.ndarray, tiers: Tiers, quantiles: Sequence[float]
) -> dict[str, float]:
    """Upper bounds for every tier but the worst, at the given quantiles of `scores`.

    For choosing the tiers file's `max_loss_probability` values from scores the model gave on
    data known at training time (the calibration months), never from the test months. Bounds
    are rounded to 4 decimals (a file people read) and kept strictly rising.
    """
    if len(quantiles) != len(tiers.tiers) - 1:
        raise ValueError(
            f"{len(tiers.tiers)} tiers need {len(tiers.tiers) - 1} quantiles, got {len(quantiles)}"
        )
    known = np.asarray(scores, dtype=np.float64)
    known = known[~np.isnan(known)]
    if not len(known):
        raise ValueError("no scores to take quantiles of")
    bounds: dict[str, float] = {}
    previous = 0.0
    for tier, q in zip(tiers.tiers[:-1], quantiles, strict=True):
        bound = max(round(float(np.quantile(known, q)), 4), round(previous + 1e-4, 4))
        bounds[tier.name] = bound
        previous = bound
    bounds[tiers.tiers[-1].name] = 1.0
    return bounds


def with_thresholds(tiers: Tiers, thresholds: Mapping[str, float]) -> Tiers:
    """The same tiers with other upper bounds, validated again as a tiers file would be."""
    return with_bounds(tiers, thresholds, source=f"{tiers.source} (thresholds replaced)")


def fit_cutoffs(scores: np.ndarray, tiers: Tiers) -> dict[str, float]:
    """Each tier's upper score bound, at the tiers' cumulative shares of `scores`, best first.

    `scores` are the training population's (NaN, customers with no history, are left out: they
    take the default tier whatever the bounds). A bound is the score below which the tier's
    share (and the better tiers') of customers lie: `np.quantile` with the "inverted_cdf"
    method, an actual score, and a tier holds the scores at or below it. Where many customers
    share the score at the bound, they all go to the tier or all to the next, whichever leaves
    the tier's share nearer; so a tier can hold more or less than its share; a bound equal to
    the previous
    one is nudged up by the smallest step so bounds still rise (the tier is then empty). The
    worst tier's bound is 1.0 (it takes every customer). Without shares in the tiers file the
    file's own bounds are returned.
    """
    shares = tiers.shares
    if shares is None:
        return {t.name: t.max_loss_probability for t in tiers.tiers}
    known = np.asarray(scores, dtype=np.float64)
    known = known[~np.isnan(known)]
    if not len(known):
        raise DataValidationError(
            "no customer of the training months has a score to fit the tiers' cut-offs on"
        )
    cumulative = np.cumsum(shares)[:-1]
    bounds: dict[str, float] = {}
    previous = 0.0
    for tier, q in zip(tiers.tiers[:-1], cumulative, strict=True):
        bound = float(np.quantile(known, min(float(q), 1.0), method="inverted_cdf"))
        # Customers sharing the bound's score all fall in the tier; when leaving them to the
        # next tier comes nearer the share, the bound is the score just below theirs.
        below = known[known < bound]
        if len(below) and abs(len(below) / len(known) - q) < abs(np.mean(known <= bound) - q):
            bound = float(below.max())
        bound = max(bound, float(np.nextafter(previous, 1.0)))
        bounds[tier.name] = min(bound, float(np.nextafter(1.0, 0.0)))
        previous = bounds[tier.name]
    bounds[tiers.tiers[-1].name] = 1.0
    return bounds


def ordering_problem(table: pd.DataFrame, loss: str = "kept") -> str | None:
    """None when realised loss rises strictly from the best tier to the worst; else a sentence
    naming the first tiers out of order and what to try (`loss`: the definition trained on)."""
    counts, rates = _ordering_columns(table)
    names = list(table["tier"])
    empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
    if empty:
        what = f"tier(s) {', '.join(empty)} hold no scored test customer"
    else:
        i = next((k for k in range(len(rates) - 1) if not rates[k + 1] > rates[k]), None)
        if i is None:
            return None
        what = (
            f"tier '{names[i + 1]}' lost {rates[i + 1]:.2%} of its scored customers, not more "
            f"than the better tier '{names[i]}' ({rates[i]:.2%})"
        )
    return (
        f"realised loss does not rise strictly from the best tier to the worst on the test "
        f"months: {what}. Try: fewer tiers or larger shares for the small ones in the tiers file "
        "(a tier of a few hundred customers has a noisy loss rate), a longer history or more "
        "test months (--test-months), or "
        + (
            "--loss kept if the data has outcomes or refund-only claims on delivered goods"
            if loss == "refunds"
            else "--loss refunds if few customers have a kept-goods loss"
        )
    )


# --- time-ordered split ----------------------------------------------------------------------


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


# --- evaluation ------------------------------------------------------------------------------


def tier_table(
    tiers: Tiers,
    tier: np.ndarray,
    loss: np.ndarray,
    score: np.ndarray,
    latent_type: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per tier, best first: customer share, realised loss rate, mean score, latent types.

    Counts are customer-months (a customer appears once per test snapshot). `new_share` is the
    share of the tier's customers with no history (always in the default tier); `scored` and
    `scored_loss_rate` count only the customers the model scored, whom the cut-offs placed.
    With the oracle's `latent_type`, one `type_<name>` column per type holds its share of the
    tier.
    """
    frame = pd.DataFrame(
        {"tier": tier, "loss": np.asarray(loss, dtype=bool), "score": score, "new": np.isnan(score)}
    )
    if latent_type is not None:
        frame["latent"] = np.asarray(latent_type, dtype=object)
    rows = []
    for name in tiers.names:
        part = frame[frame["tier"] == name]
        row: dict[str, Any] = {
            "tier": name,
            "customers": len(part),
            "share": len(part) / len(frame) if len(frame) else math.nan,
            "loss_rate": float(part["loss"].mean()) if len(part) else math.nan,
            "losses": int(part["loss"].sum()),
            "mean_score": float(part["score"].mean()) if part["score"].notna().any() else math.nan,
            "new_share": float(part["new"].mean()) if len(part) else math.nan,
            "scored": int((~part["new"]).sum()),
            "scored_loss_rate": (
                float(part.loc[~part["new"], "loss"].mean()) if (~part["new"]).any() else math.nan
            ),
        }
        if latent_type is not None:
            for t in LATENT_TYPES:
                row[f"type_{t}"] = float((part["latent"] == t).mean()) if len(part) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def rises_strictly(table: pd.DataFrame) -> bool:
    """Whether every tier has scored customers and their realised loss rate rises from the best
    tier to the worst.

    Scored customers only: the cut-offs place them, while new customers are put in the default
    tier by rule, whatever their loss (a tier table without the `scored` columns counts all).
    """
    counts, rates = _ordering_columns(table)
    return bool((counts > 0).all() and np.all(np.diff(rates) > 0))


def _ordering_columns(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    if "scored_loss_rate" in table:
        return table["scored"].to_numpy(), table["scored_loss_rate"].to_numpy(dtype=np.float64)
    return table["customers"].to_numpy(), table["loss_rate"].to_numpy(dtype=np.float64)


def oracle_agreement(
    score: np.ndarray, tier: np.ndarray, latent_type: np.ndarray, tiers: Tiers, worst: int = 2
) -> dict[str, float]:
    """How well the score and the tiers agree with the oracle's latent customer types.

    * `oracle_auc_abusive_vs_honest`: ROC-AUC of the score, habitual abusers against honest
      customers (customers with a score only);
    * `oracle_auc_opportunist_vs_honest`: the same for opportunists, who abuse rarely;
    * `abusive_share_best_tier` / `_worst_tiers`: habitual abusers' share of the best tier, and
      of the `worst` worst tiers together, and their ratio (`abusive_lift_worst_vs_best`);
    * `abusive_in_worst_tiers`: the share of habitual abusers' customer-months that landed in
      the worst tiers.
    """
    latent = np.asarray(latent_type, dtype=object)
    known = ~np.isnan(score)
    abusive = np.isin(latent, ABUSIVE_TYPES)
    honest = latent == HONEST_TYPE
    opportunist = latent == OPPORTUNIST_TYPE
    out: dict[str, float] = {}
    pair = known & (abusive | honest)
    out["oracle_auc_abusive_vs_honest"] = safe_auc(abusive[pair], score[pair])
    pair = known & (opportunist | honest)
    out["oracle_auc_opportunist_vs_honest"] = safe_auc(opportunist[pair], score[pair])
    best = tier == tiers.names[0]
    bottom = np.isin(tier, tiers.names[-worst:])
    out["abusive_share_best_tier"] = float(abusive[best].mean()) if best.any() else math.nan
    out["abusive_share_worst_tiers"] = float(abusive[bottom].mean()) if bottom.any() else math.nan
    lift = out["abusive_share_worst_tiers"] / out["abusive_share_best_tier"]
    out["abusive_lift_worst_vs_best"] = lift if math.isfinite(lift) else math.nan
    out["abusive_in_worst_tiers"] = float(bottom[abusive].mean()) if abusive.any() else math.nan
    return out


def _tier_loss_figure(table: pd.DataFrame) -> Figure:
    """Realised loss rate per tier, best to worst, with each tier's customer share."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    positions = np.arange(len(table))
    rates = table["loss_rate"].fillna(0.0).to_numpy() * 100
    ax.bar(positions, rates, color="#4477aa")
    for x, rate, share in zip(positions, rates, table["share"], strict=True):
        ax.annotate(
            f"{rate:.1f}%\n{share:.0%} of customers",
            (x, rate),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(positions, list(table["tier"]))
    ax.set_ylabel("customers with a refund loss in 90 days (%)")
    ax.set_title("Realised loss by credit tier, test months")
    ax.margins(y=0.25)
    fig.tight_layout()
    return fig


def _score_distribution_figure(
    score: np.ndarray, groups: np.ndarray, order: Sequence[str], tiers: Tiers
) -> Figure:
    """Score distribution per group (latent type, or realised loss), with the tier bounds."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    known = ~np.isnan(score)
    present = [g for g in order if (known & (groups == g)).any()]
    for g in present:
        values = np.log10(np.clip(score[known & (groups == g)], 1e-4, 1.0))
        ax.hist(
            values,
            bins=60,
            range=(-4.0, 0.0),
            density=True,
            histtype="step",
            linewidth=1.5,
            label=g,
        )
    if present:
        ax.legend(fontsize=8)
    for tier in tiers.tiers[:-1]:
        bound = math.log10(tier.max_loss_probability)
        ax.axvline(bound, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            tier.name,
            (bound, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            va="top",
            ha="right",
        )
    ax.set_xlabel("predicted 90-day loss probability (log10); dotted: upper bound of each tier")
    ax.set_ylabel("density")
    ax.set_title("Scores by customer group, test months")
    fig.tight_layout()
    return fig


@dataclass
class TierTrainingResult:
    """A fitted tier model and its figures on the test months.

    `test` holds one row per test customer-month: `snapshot_at`, `customer_id`, `score` (NaN
    for new customers), `tier`, `loss` (the realised target) and, with the oracle,
    `latent_type`.
    """

    model: CreditTierModel
    features: tuple[str, ...]
    split: TierSplit
    tiers: Tiers
    """The tiers in force: the file's, with the fitted cut-offs as upper bounds."""
    metrics: dict[str, float]
    tier_table: pd.DataFrame
    loss_rises_strictly: bool
    oracle: dict[str, float]
    test: pd.DataFrame
    calibration_scores: np.ndarray
    seconds: float
    figures: dict[str, Figure] = field(default_factory=dict)
    loss: str = "kept"
    """The loss definition trained on (a key of `LOSS_DEFINITIONS`)."""
    cutoffs: dict[str, float] = field(default_factory=dict)
    """Each tier's upper score bound, fitted at the tiers file's shares (or the file's own)."""
    ordering_problem: str | None = None
    """Why realised loss does not rise strictly across tiers, and what to try; None if it does."""
    test_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The feature columns of the test months' customers with a history, in `test` order."""
    example_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The first five fitted rows (calibration rows if fewer), the model's input example."""

    def summary(self) -> dict[str, float]:
        """Every headline figure in one flat mapping, for logs and MLflow metrics."""
        out = dict(self.metrics)
        out.update(self.oracle)
        out["loss_rises_strictly"] = float(self.loss_rises_strictly)
        table = self.tier_table
        for name, share, rate in zip(
            table["tier"], table["share"], table["loss_rate"], strict=True
        ):
            out[f"tier_{name}_share"] = float(share)
            out[f"tier_{name}_loss_rate"] = float(rate)
        return out


def _check_columns(snapshots: pd.DataFrame, features: Sequence[str]) -> None:
    needed = ["snapshot_at", "customer_id", TARGET, REFUND_REQUESTS, "target_window_complete"]
    needed += list(features)
    missing = [c for c in needed if c not in snapshots.columns]
    if missing:
        raise DataValidationError(f"credit snapshots lack columns: {', '.join(missing)}")
    leaked = set(features) & (set(CREDIT_TARGET_COLUMNS) | {"latent_type", "ring_id"})
    if leaked:
        raise DataValidationError(f"targets or oracle columns among features: {sorted(leaked)}")


@dataclass
class SnapshotPart:
    """Snapshot rows of some months cut down to what tier training reads from them.

    `known` says, per row, whether the customer had a history (the model scores only those);
    `labels` holds per row the two columns the loss definitions read (`TARGET`,
    `REFUND_REQUESTS`); `rows` holds the feature columns of the known rows only; `head`, for
    test months, the `snapshot_at` and `customer_id` of every row. A month of a million-customer
    world is about 700,000 rows, so training keeps these parts, never whole snapshot frames.
    """

    known: np.ndarray
    labels: pd.DataFrame
    rows: pd.DataFrame
    head: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.labels)


def snapshot_part(
    frame: pd.DataFrame, columns: Sequence[str], with_head: bool = False
) -> SnapshotPart:
    """`frame` (snapshot rows) reduced to a `SnapshotPart` keeping the feature `columns`."""
    known = has_history(frame)
    head = None
    if with_head:
        head = pd.DataFrame(
            {
                "snapshot_at": frame["snapshot_at"].to_numpy(),
                "customer_id": frame["customer_id"].to_numpy(),
            }
        )
    return SnapshotPart(
        known=known,
        labels=frame.loc[:, [TARGET, REFUND_REQUESTS]].reset_index(drop=True),
        rows=frame.loc[known, list(columns)].reset_index(drop=True),
        head=head,
    )


def join_parts(parts: Iterable[SnapshotPart]) -> SnapshotPart:
    """Several parts as one, rows in the order given (each part is released once copied)."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    known = np.concatenate([p.known for p in parts]) if parts else np.zeros(0, dtype=bool)
    labels = pd.concat([p.labels for p in parts], ignore_index=True) if parts else None
    heads = [p.head for p in parts if p.head is not None]
    rows = pd.concat([p.rows for p in parts], ignore_index=True) if parts else None
    empty = pd.DataFrame({TARGET: np.zeros(0, dtype=bool), REFUND_REQUESTS: np.zeros(0)})
    return SnapshotPart(
        known=known,
        labels=labels if labels is not None else empty,
        rows=rows if rows is not None else pd.DataFrame(),
        head=pd.concat(heads, ignore_index=True) if heads else None,
    )


def feature_columns(snapshots: pd.DataFrame) -> list[str]:
    """The snapshot columns that are features (what a champion model may read), in order."""
    names = {f.name for f in FEATURES}
    return [c for c in snapshots.columns if c in names]


def train_tier_model(
    snapshots: pd.DataFrame,
    *,
    train_end: pd.Timestamp,
    test_start: pd.Timestamp,
    seed: int,
    tiers: Tiers,
    oracle_customers: pd.DataFrame | None = None,
    calibration_months: int = 1,
    model: CreditTierModel | None = None,
    loss: str = "auto",
) -> TierTrainingResult:
    """Fit the tier model on snapshots known at `train_end`; evaluate it from `test_start` on.

    `snapshots` is the concatenation of `build_credit_snapshots` frames. Customers with no
    history are left out of fitting (their tier is the default, whatever a model would say) but
    kept in the test months' tier table, in the default tier. `oracle_customers` (customer_id,
    latent_type), for a synthetic world only, adds the latent-type figures; it never reaches the
    model. `model` sets hyperparameters (its `random_state` is replaced by `seed`). `loss` is a
    key of `LOSS_DEFINITIONS` or `auto` (see the module docstring). When the tiers file gives
    shares, the tiers' cut-offs are fitted at them on the calibration months' scores (the fit
    months' without calibration) and `tiers` of the result holds them.

    Returns the model, its inputs, ROC-AUC / average precision / Brier / calibration error and
    base rates on the test months, the per-tier table, whether realised loss rises strictly from
    the best tier to the worst, the oracle agreement, and two figures: `tier_loss` and
    `score_by_type` (by latent type with the oracle, else by realised loss).
    `train_tier_parts` does the same from snapshot months built one at a time.
    """
    started = time.perf_counter()
    estimator = clone(model or CreditTierModel()).set_params(random_state=seed)
    features = estimator._feature_list()
    _check_columns(snapshots, features)
    split = plan_tier_split(snapshots, train_end, test_start, calibration_months)
    at = snapshots["snapshot_at"]

    def part(dates: tuple[pd.Timestamp, ...], columns: Sequence[str], head: bool) -> SnapshotPart:
        return snapshot_part(snapshots[at.isin(dates).to_numpy()], columns, head)

    return train_tier_parts(
        split,
        part(split.fit_dates, features, False),
        part(split.calibration_dates, features, False),
        iter([part(split.test_dates, feature_columns(snapshots), True)]),
        seed=seed,
        tiers=tiers,
        oracle_customers=oracle_customers,
        model=estimator,
        loss=loss,
        started=started,
    )


def train_tier_parts(
    split: TierSplit,
    fit: SnapshotPart,
    calibration: SnapshotPart,
    test_parts: Iterable[SnapshotPart],
    *,
    seed: int,
    tiers: Tiers,
    oracle_customers: pd.DataFrame | None = None,
    model: CreditTierModel | None = None,
    loss: str = "auto",
    started: float | None = None,
) -> TierTrainingResult:
    """`train_tier_model` on snapshot rows already cut into the split's parts.

    `fit` and `calibration` hold the split's fit and calibration months (their `rows` at least
    the model's features); `test_parts` yields the test months in order, each with its `head`
    and the feature columns a champion may read. It is read only after the model is fitted, so
    a caller may build each test month as it is asked for. The result's `test_rows` keeps the
    test months' known rows, for re-scoring a champion on them.
    """
    started = time.perf_counter() if started is None else started
    estimator = clone(model or CreditTierModel()).set_params(random_state=seed)
    features = estimator._feature_list()
    fit_labels = fit.labels.loc[fit.known]
    cal_labels = calibration.labels.loc[calibration.known]
    loss_name = choose_loss(fit_labels, loss, split.fit_dates)
    y_fit = loss_labels(fit_labels, loss_name)
    if y_fit.all():
        raise DataValidationError(
            f"every customer of the fit months has a refund loss ({LOSS_DEFINITIONS[loss_name]})"
            ": there is nobody to tell them apart from; train with --loss kept, or check that "
            "the refund types and order stages were imported as they are"
        )
    cal_rows = calibration.rows
    estimator.fit(
        fit.rows,
        y_fit,
        cal_rows if len(cal_rows) else None,
        loss_labels(cal_labels, loss_name) if len(cal_rows) else None,
    )
    calibration_scores = estimator.predict_proba(cal_rows)[:, 1] if len(cal_rows) else np.zeros(0)
    # The cut-offs come from the latest months known at training, as the model then scores them.
    population = calibration_scores if len(cal_rows) else estimator.predict_proba(fit.rows)[:, 1]
    fit_rows = len(fit.rows)
    example_rows = pd.concat(
        [p.loc[:, list(features)].head(5) for p in (fit.rows, cal_rows) if len(p)],
        ignore_index=True,
    ).head(5)
    # Released before the test months are read: a caller may build those only now.
    del fit, calibration, cal_rows
    cutoffs = fit_cutoffs(population, tiers)
    tiers = with_bounds(tiers, cutoffs)
    scores, losses, heads, kept_rows = [], [], [], []
    for part in test_parts:
        score = np.full(len(part), np.nan)
        if part.known.any():
            score[part.known] = estimator.predict_proba(part.rows)[:, 1]
        scores.append(score)
        losses.append(loss_labels(part.labels, loss_name))
        heads.append(part.head)
        kept_rows.append(part.rows)
    score = np.concatenate(scores) if scores else np.zeros(0)
    loss_of_test = np.concatenate(losses) if losses else np.zeros(0, dtype=bool)
    head = pd.concat(heads, ignore_index=True) if heads else pd.DataFrame()
    tier = tiers_for(score, tiers)
    scored = ~np.isnan(score)
    metrics = {
        "roc_auc": safe_auc(loss_of_test[scored], score[scored]),
        "average_precision": safe_ap(loss_of_test[scored], score[scored]),
        "brier": float(brier_score_loss(loss_of_test[scored], score[scored])),
        "calibration_error": expected_calibration_error(loss_of_test[scored], score[scored]),
        "mean_score": float(score[scored].mean()),
        "loss_rate": float(loss_of_test[scored].mean()),
        "loss_rate_new_customers": (
            float(loss_of_test[~scored].mean()) if (~scored).any() else math.nan
        ),
        "new_customer_share": float((~scored).mean()),
        "fit_rows": float(fit_rows),
        "calibration_rows": float(len(cal_labels)),
        "test_rows": float(len(score)),
    }
    test = pd.DataFrame(
        {
            "snapshot_at": head["snapshot_at"].to_numpy(),
            "customer_id": head["customer_id"].to_numpy(),
            "score": score,
            "tier": tier,
            "loss": loss_of_test,
        }
    )
    latent: np.ndarray | None = None
    oracle: dict[str, float] = {}
    if oracle_customers is not None:
        types = oracle_customers.set_index("customer_id")["latent_type"]
        latent = types.reindex(test["customer_id"]).to_numpy(dtype=object)
        test["latent_type"] = latent
        oracle = oracle_agreement(score, tier, latent, tiers)
    table = tier_table(tiers, tier, loss_of_test, score, latent)
    if latent is not None:
        groups, order = latent, LATENT_TYPES
    else:
        groups = np.where(loss_of_test, "loss in 90 days", "no loss")
        order = ("no loss", "loss in 90 days")
    figures = {
        "tier_loss": _tier_loss_figure(table),
        "score_by_type": _score_distribution_figure(score, groups, order, tiers),
    }
    return TierTrainingResult(
        model=estimator,
        features=features,
        split=split,
        tiers=tiers,
        metrics=metrics,
        tier_table=table,
        loss_rises_strictly=rises_strictly(table),
        oracle=oracle,
        test=test,
        calibration_scores=calibration_scores,
        seconds=time.perf_counter() - started,
        figures=figures,
        loss=loss_name,
        cutoffs=cutoffs,
        ordering_problem=ordering_problem(table, loss_name),
        test_rows=pd.concat(kept_rows, ignore_index=True) if kept_rows else pd.DataFrame(),
        example_rows=example_rows,
    )


def _main(argv: Sequence[str] | None = None) -> None:
    """`python -m training.tier`: train on a generated world and print the test figures."""
    import argparse

    from data.generator import generate_world
    from features.batch import build_credit_snapshots
    from policy.tiers import load_tiers

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--test-months", type=int, default=2)
    parser.add_argument("--tiers", default=None, help="credit tiers file (default: shipped)")
    parser.add_argument("--loss", choices=LOSS_CHOICES, default="auto")
    args = parser.parse_args(argv)

    world = generate_world(args.customers, seed=args.seed)
    snapshots = pd.concat(list(build_credit_snapshots(world.tables)), ignore_index=True)
    tiers = load_tiers(args.tiers) if args.tiers else load_tiers()
    cutoff = default_cutoff(snapshots, args.test_months)
    result = train_tier_model(
        snapshots,
        train_end=cutoff,
        test_start=cutoff,
        seed=args.seed,
        tiers=tiers,
        oracle_customers=world.oracle_customers,
        loss=args.loss,
    )
    print(f"split: {result.split.describe()}")
    print(f"fitted in {result.seconds:.1f} s")
    for key, value in {**result.metrics, **result.oracle}.items():
        print(f"{key:36s} {value:10.4f}")
    columns = ["tier", "customers", "share", "loss_rate", "mean_score", "new_share"]
    columns += ["scored", "scored_loss_rate"]
    columns += [c for c in result.tier_table.columns if c.startswith("type_")]
    print(result.tier_table[columns].round(4).to_string(index=False))
    print(f"realised loss rises strictly from best to worst: {result.loss_rises_strictly}")
    print(f"loss: {result.loss} ({LOSS_DEFINITIONS[result.loss]})")
    print(f"cut-offs fitted at the tiers' shares: {result.cutoffs}")
    if result.ordering_problem:
        print(result.ordering_problem)


if __name__ == "__main__":
    _main()
