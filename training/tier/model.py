"""The tier estimator: LightGBM with monotone constraints, Platt-calibrated on later months."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from refund_risk.errors import DataValidationError
from training.estimator import CalibratedBooster, platt_scaling
from training.tier.inputs import monotone_constraints, tier_categorical_features, tier_feature_names


class CreditTierModel(CalibratedBooster):
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
        self._fitted(
            lgb.train(self.lgb_params(), data, num_boost_round=self.n_estimators), len(names)
        )
        self.features_ = names
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
        slope, intercept = platt_scaling(self.predict_raw(X), y, C=1e4)
        if slope > 0:
            self.calibration_ = (slope, intercept)
            self.calibrated_ = True
        return self

    def _inputs(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self._matrix(X, self.features_)

    def _threads(self) -> int:
        return self.n_jobs
