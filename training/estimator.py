"""What the abuse and tier models share: a LightGBM booster read through Platt scaling.

Both models are scikit-learn classifiers over one fitted `lgb.Booster` (`booster_`) whose raw
margin becomes a probability as `sigmoid(slope * margin + intercept)` (`calibration_`). How the
booster is grown, and when a calibration is accepted, is each model's own; scoring, the
probability columns, contributions and the text form of the model are defined here once, so the
two models (and the service, which stores the same slope and intercept in each model's card)
cannot drift apart on what a score means.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def platt_scaling(raw: np.ndarray, y: np.ndarray, C: float) -> tuple[float, float]:
    """Slope and intercept of a logistic regression of `y` on the raw margin, regularised by `C`.

    Two parameters, not isotonic steps: steps would fit the noise of a few hundred positive
    labels and tie whole groups of rows at one score.
    """
    platt = LogisticRegression(C=C, max_iter=1000).fit(raw.reshape(-1, 1), y)
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


class CalibratedBooster(ClassifierMixin, BaseEstimator):
    """A binary LightGBM booster and the Platt scaling of its raw margin.

    Subclasses set their parameters in `__init__` (scikit-learn's contract: learned state only in
    trailing-underscore attributes), grow the booster in `fit` and hand it to `_fitted`; they may
    override `_inputs` (how `X` becomes the booster's matrix) and `_threads`.
    """

    booster_: lgb.Booster
    calibration_: tuple[float, float]

    def _inputs(self, X: Any) -> Any:
        """`X` as the booster reads it; by default as given."""
        return X

    def _threads(self) -> int:
        """Threads for prediction: one, so a request-time score never waits on a thread pool."""
        return 1

    def _fitted(self, booster: lgb.Booster, n_features: int) -> None:
        """Record a freshly grown booster, uncalibrated (slope 1, intercept 0)."""
        self.booster_ = booster
        self.classes_ = np.array([False, True])
        self.n_features_in_ = n_features
        self.calibration_ = (1.0, 0.0)

    def predict_raw(self, X: Any) -> np.ndarray:
        """The trees' raw margin (log-odds before calibration)."""
        return np.asarray(
            self.booster_.predict(self._inputs(X), raw_score=True, num_threads=self._threads())
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2): the negative class, then the positive."""
        slope, intercept = self.calibration_
        p = sigmoid(slope * self.predict_raw(X) + intercept)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """True where the positive class is likelier than not."""
        return np.asarray(self.predict_proba(X)[:, 1] > 0.5)

    def contributions(self, X: Any) -> np.ndarray:
        """Per-feature contributions to the raw score (TreeSHAP), shape (n, features)."""
        out = np.asarray(
            self.booster_.predict(self._inputs(X), pred_contrib=True, num_threads=self._threads())
        )
        return out[:, :-1]

    def model_string(self) -> str:
        """The booster as LightGBM's text model: two equal strings mean two equal models."""
        return str(self.booster_.model_to_string(num_iteration=-1))
