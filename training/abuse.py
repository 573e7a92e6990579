"""The refund-abuse model, its baselines, and their evaluation on the test months."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from data.schema import ORDER_STAGES, REFUND_TYPES
from features.definitions import FEATURES
from refund_risk.errors import DataValidationError
from training.dataset import CATEGORICAL, FEATURE_NAMES, AbuseDataset, feature_matrix
from training.metrics import (
    capacity_metrics,
    expected_calibration_error,
    safe_ap,
    safe_auc,
    slice_metrics,
)

# Directions the model may not contradict, with the reason. Anything else is learnt freely.
MONOTONE_UP: dict[str, str] = {
    "customer_confirmed_abusive_refunds": "more confirmed abuse never makes a request safer",
    "customer_confirmed_abusive_amount": "more confirmed abusive money never makes it safer",
    "customer_confirmed_abuse_rate": "a higher confirmed abuse rate never makes it safer",
    "linked_accounts_confirmed_abusive_refunds_by_device": "abuse on a shared device",
    "linked_accounts_confirmed_abusive_refunds_by_address": "abuse at a shared address",
    "linked_accounts_confirmed_abusive_refunds_by_payment": "abuse on a shared card",
    "linked_accounts_confirmed_abusive_refunds_by_any": "abuse on any linked account",
    "request_order_stage": "a request before shipping is never riskier than after it",
    "order_shipped_before_request": "an unshipped order is never riskier than a shipped one",
    "order_delivered_before_request": "an undelivered order is never riskier than a delivered one",
}
# Order stage is kept as its ordinal code (not shipped < in transit < delivered) so that the
# direction above can be enforced; the other enums are true categories.
ORDINAL: frozenset[str] = frozenset({"request_order_stage"})
MODEL_CATEGORICAL: tuple[str, ...] = tuple(c for c in CATEGORICAL if c not in ORDINAL)
CATEGORY_VALUES: dict[str, tuple[str, ...]] = {f.name: f.values for f in FEATURES if f.categorical}


class AbuseRiskModel(ClassifierMixin, BaseEstimator):
    """LightGBM on the request features, with Platt calibration on later months.

    Small trees by default: with a few hundred abusive labels a year, three-leaf trees ranked
    best on later months (ROC-AUC against the truth, worlds of 20,000 to 150,000 customers).

    Follows scikit-learn's contract: parameters only in `__init__`, learned state in trailing
    underscore attributes, `random_state` threaded through; one thread, so a fit is
    reproducible bit for bit.
    """

    def __init__(
        self,
        n_estimators: int = 200,
        learning_rate: float = 0.03,
        num_leaves: int = 3,
        min_child_samples: int = 40,
        feature_fraction: float = 0.8,
        l2_regularisation: float = 1.0,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.l2_regularisation = l2_regularisation
        self.random_state = random_state

    def lgb_params(self) -> dict[str, Any]:
        """The LightGBM parameters this estimator trains with."""
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": self.l2_regularisation,
            "monotone_constraints": [1 if name in MONOTONE_UP else 0 for name in FEATURE_NAMES],
            "monotone_constraints_method": "advanced",
            "seed": self.random_state,
            "num_threads": 1,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_calibration: np.ndarray | None = None,
        y_calibration: np.ndarray | None = None,
    ) -> AbuseRiskModel:
        """Fit the trees on (X, y), then the calibration on the later (X_calibration, y)."""
        data = lgb.Dataset(
            X,
            label=np.asarray(y, dtype=float),
            feature_name=list(FEATURE_NAMES),
            categorical_feature=list(MODEL_CATEGORICAL),
            free_raw_data=True,
        )
        self.booster_ = lgb.train(self.lgb_params(), data, num_boost_round=self.n_estimators)
        self.classes_ = np.array([False, True])
        self.n_features_in_ = X.shape[1]
        self.calibration_ = (1.0, 0.0)
        if X_calibration is not None and y_calibration is not None:
            self.calibrate(X_calibration, y_calibration)
        return self

    def calibrate(self, X: np.ndarray, y: np.ndarray) -> AbuseRiskModel:
        """Platt scaling of the raw score on later data: p = sigmoid(a * raw + b).

        Two parameters, because the later months hold a few dozen abusive labels at most:
        isotonic regression would fit their noise.
        """
        labels = np.asarray(y, dtype=bool)
        if labels.all() or not labels.any():
            raise DataValidationError(
                "the calibration period has only one class of label; use a longer period"
            )
        raw = self.predict_raw(X).reshape(-1, 1)
        platt = LogisticRegression(C=100.0, max_iter=1000).fit(raw, labels)
        self.calibration_ = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        return self

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        """The trees' raw margin (log-odds before calibration)."""
        return np.asarray(self.booster_.predict(X, raw_score=True, num_threads=1))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2): honest, abusive."""
        a, b = self.calibration_
        p = 1.0 / (1.0 + np.exp(-(a * self.predict_raw(X) + b)))
        return np.column_stack([1.0 - p, p])

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the raw score (TreeSHAP), shape (n, features)."""
        out = np.asarray(self.booster_.predict(X, pred_contrib=True, num_threads=1))
        return out[:, :-1]


def logistic_baseline(random_state: int = 0) -> Pipeline:
    """Logistic regression on one-hot categories and scaled numbers: the linear baseline."""
    categorical = [FEATURE_NAMES.index(c) for c in CATEGORICAL]
    numeric = [i for i in range(len(FEATURE_NAMES)) if i not in categorical]
    prepare = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
            (
                "numbers",
                Pipeline(
                    [
                        ("fill", SimpleImputer(strategy="median", add_indicator=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            ),
        ]
    )
    model = LogisticRegression(C=0.3, max_iter=3000, random_state=random_state)
    return Pipeline([("prepare", prepare), ("model", model)])


def hand_rules_score(frame: pd.DataFrame, small_amount: float = 30.0) -> np.ndarray:
    """The rules a shop writes by hand, as a 0/1 score: 1 sends the request to a person.

    Unshipped requests and refund-only requests are approved, small amounts are approved,
    everything else goes to a person.
    """
    unshipped = frame["request_order_stage"].to_numpy() == ORDER_STAGES.index("not_shipped")
    refund_only = frame["request_type"].to_numpy() == REFUND_TYPES.index("refund_only")
    small = frame["request_amount"].to_numpy() <= small_amount
    approved = unshipped | refund_only | small
    return (~approved).astype(float)


@dataclass
class Evaluation:
    """Test-month figures for one scorer."""

    name: str
    headline: dict[str, float]
    slices: pd.DataFrame = field(default_factory=pd.DataFrame)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


def evaluate_scores(
    name: str,
    test: pd.DataFrame,
    score: np.ndarray,
    review_share: float = 0.15,
    slice_columns: tuple[str, ...] = (
        "order_category",
        "request_reason",
        "request_order_stage",
    ),
) -> Evaluation:
    """Ranking, calibration, capacity and money figures on the test months.

    `label` (latest label in the data) is what the shop can see; `is_abusive_true` (if present)
    is the synthetic world's truth, which includes abuse that was never detected.
    """
    labelled = test["labelled"].to_numpy(dtype=bool)
    y_obs = test["label"].to_numpy(dtype=bool)
    money = test["request_amount"].to_numpy(dtype=float)
    day = test["requested_at"].dt.floor("D")
    per_day = max(1, math.ceil(review_share * len(test) / max(day.nunique(), 1)))
    head: dict[str, float] = {
        "roc_auc": safe_auc(y_obs[labelled], score[labelled]),
        "average_precision": safe_ap(y_obs[labelled], score[labelled]),
        "calibration_error": expected_calibration_error(y_obs[labelled], score[labelled]),
        "reviews_per_day": float(per_day),
    }
    for key, value in capacity_metrics(day, y_obs, score, money, per_day).items():
        head[f"at_capacity_{key}"] = value
    frame = test.assign(_score=score, _y=y_obs)
    for column in slice_columns:
        values = CATEGORY_VALUES.get(column)
        if values is not None:
            codes = frame[column].to_numpy(dtype=np.int64)
            names = np.array([*values, "unknown"], dtype=object)
            frame[column] = names[np.where((codes >= 0) & (codes < len(values)), codes, -1)]
    slices = [slice_metrics(frame[labelled], c, "_y", "_score") for c in slice_columns]
    if "tier" in test.columns:
        slices.append(slice_metrics(frame[labelled], "tier", "_y", "_score"))
    if "is_abusive_true" in test.columns:
        y_true = test["is_abusive_true"].to_numpy(dtype=bool)
        oracle = test["true_abuse_probability"].to_numpy(dtype=float)
        head["roc_auc_true"] = safe_auc(y_true, score)
        head["oracle_roc_auc_true"] = safe_auc(y_true, oracle)
        head["roc_auc_ratio_to_oracle"] = head["roc_auc_true"] / head["oracle_roc_auc_true"]
        head["calibration_error_true"] = expected_calibration_error(y_true, score)
        for key, value in capacity_metrics(day, y_true, score, money, per_day).items():
            head[f"at_capacity_{key}_true"] = value
    return Evaluation(name, head, pd.concat(slices, ignore_index=True), np.asarray(score))


@dataclass
class AbuseTrainingResult:
    """A fitted abuse model, its baselines' figures, and the data it saw."""

    model: AbuseRiskModel
    evaluations: list[Evaluation]
    dataset: AbuseDataset
    test_scores: np.ndarray

    @property
    def champion_metric(self) -> float:
        """The figure the promotion gate compares: average precision on the test months."""
        return self.evaluations[0].headline["average_precision"]


def train_abuse(
    dataset: AbuseDataset, seed: int, review_share: float = 0.15
) -> AbuseTrainingResult:
    """Fit the LightGBM model and both baselines on one split; evaluate all three alike."""
    X_train, y_train = feature_matrix(dataset.train), dataset.train["label"].to_numpy(bool)
    X_cal, y_cal = feature_matrix(dataset.calibration), dataset.calibration["label"].to_numpy(bool)
    X_test = feature_matrix(dataset.test)

    model = AbuseRiskModel(random_state=seed).fit(X_train, y_train, X_cal, y_cal)
    scores = model.predict_proba(X_test)[:, 1]
    linear = logistic_baseline(seed).fit(X_train, y_train)
    evaluations = [
        evaluate_scores("lightgbm", dataset.test, scores, review_share),
        evaluate_scores(
            "logistic_regression",
            dataset.test,
            linear.predict_proba(X_test)[:, 1],
            review_share,
        ),
        evaluate_scores("hand_rules", dataset.test, hand_rules_score(dataset.test), review_share),
    ]
    return AbuseTrainingResult(model, evaluations, dataset, scores)
