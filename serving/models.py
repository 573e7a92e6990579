"""The models the service scores with, loaded from the registry's scoring cards.

A scoring card (see `refund_risk.model_contract`) holds a LightGBM text model and a JSON card:
the feature names in the model's column order, the feature version, the Platt calibration, and
for the abuse model the contribution tables that give reasons. The service never loads an MLflow
model: a raw booster loads in milliseconds and predicts one row in tens of microseconds.

One row is predicted through LightGBM's single-row "fast" C entry point, set up once per model
with one thread: about a third of `Booster.predict` on a one-row array, which re-checks its
input and re-reads its configuration on every call. At load the fast path is checked against
`Booster.predict` on a few rows; if they ever disagree the service uses `Booster.predict`.

A request's row gives the model's inputs once (`LoadedModel.inputs`, a tuple picked from the
builder's row); the prediction packs them straight into the buffer LightGBM reads (numpy's
conversion of a list costs more than the packing), and the contribution look-up reads the same
tuple, one `bisect` per feature that can push the score up (`ContributionLookup.top`).

A model that cannot be loaded (none registered under the alias, built on other features, or a
broken card) is reported as a problem, not raised: the service then runs without it.
"""

from __future__ import annotations

import ctypes
import logging
import math
import operator
import struct
import tempfile
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from features.definitions import FEATURE_NAMES, FEATURE_VERSION
from policy.tiers import Tiers, with_bounds
from refund_risk.errors import ConfigurationError, NotFoundError
from refund_risk.model_contract.card import (
    ABUSE_MODEL,
    TIER_MODEL,
    card_cutoffs,
    client_for,
    download_scoring,
)
from refund_risk.model_contract.explain import ContributionTables
from refund_risk.settings import Settings

log = logging.getLogger(__name__)

_C_API_PREDICT_RAW_SCORE = 1
_C_API_DTYPE_FLOAT64 = 1

DEFAULT_HISTORY_FEATURE = "customer_orders_all_time"
"""A customer with none of these before the request is new: the tier model does not score them
(the tiers file's default tier applies). A tier card may name another feature."""


class RowPredictor(Protocol):
    """Raw score (log-odds) of one feature row."""

    def raw(self, row: Sequence[float] | np.ndarray) -> float:
        """The booster's raw margin for `row`."""
        ...


class BoosterPredictor:
    """`Booster.predict` on a one-row array, one thread: the reference path."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def raw(self, row: Sequence[float] | np.ndarray) -> float:
        """The booster's raw margin for `row`."""
        x = np.asarray(row, dtype=np.float64).reshape(1, -1)
        return float(self.booster.predict(x, raw_score=True, num_threads=1)[0])


class FastPredictor:
    """LightGBM's single-row fast C API, configured once (one thread, raw score, float64)."""

    def __init__(self, booster: Any, n_features: int) -> None:
        from lightgbm.basic import _LIB, _safe_call

        self._lib = _LIB
        self._safe_call = _safe_call
        self.booster = booster  # the config points into the booster: keep it alive
        self.n_features = n_features
        self._handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_C_API_PREDICT_RAW_SCORE),
                ctypes.c_int(0),
                ctypes.c_int(-1),
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._row = np.zeros(n_features, dtype=np.float64)
        self._row_bytes = self._row.data  # packed into directly from a sequence of floats
        self._pack = struct.Struct(f"{n_features}d").pack_into
        self._out = ctypes.c_double(0.0)
        self._out_len = ctypes.c_int64(0)
        self._row_ptr = self._row.ctypes.data_as(ctypes.c_void_p)
        self._out_ptr = ctypes.byref(self._out)
        self._out_len_ref = ctypes.byref(self._out_len)
        self._predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast

    def raw(self, row: Sequence[float] | np.ndarray) -> float:
        """The booster's raw margin for `row` (one thread; not for concurrent callers)."""
        if isinstance(row, np.ndarray):
            self._row[:] = row
        else:
            self._pack(self._row_bytes, 0, *row)
        self._safe_call(
            self._predict(self._handle, self._row_ptr, self._out_len_ref, self._out_ptr)
        )
        return self._out.value

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.LGBM_FastConfigFree(handle)
            handle.value = None


def row_predictor(booster: Any, n_features: int) -> RowPredictor:
    """The fast predictor if it agrees with `Booster.predict` on probe rows, else the latter."""
    reference = BoosterPredictor(booster)
    try:
        fast = FastPredictor(booster, n_features)
    except Exception as exc:  # an older or unusual LightGBM build: fall back, loudly
        log.warning("LightGBM fast single-row prediction unavailable (%s)", exc)
        return reference
    rng = np.random.default_rng(0)
    probes = [np.zeros(n_features), np.full(n_features, np.nan), rng.normal(0, 50, n_features)]
    for probe in probes:
        expected, got = reference.raw(probe), fast.raw(probe)
        if not math.isclose(expected, got, rel_tol=1e-9, abs_tol=1e-9):
            log.warning("fast prediction disagrees with Booster.predict; using the latter")
            return reference
    return fast


class ContributionLookup:
    """The contribution tables of a model laid out for one row at a time.

    Gives exactly `ContributionTables.explain`: a value's bin is the number of the feature's
    edges at or below it, a missing value takes the feature's "missing" contribution. `explain`
    does it for every feature with numpy; `top` only for the features that can push a score up
    at all (those with a positive contribution somewhere), one `bisect` each in plain Python,
    which for one row costs less than numpy's calls.
    """

    def __init__(self, tables: ContributionTables) -> None:
        k, bins = tables.contributions.shape
        self.names = tables.names
        self.edges = np.ascontiguousarray(tables.edges)
        self.missing_bin = bins
        table = np.concatenate([tables.contributions, tables.missing[:, None]], axis=1)
        self.table = np.ascontiguousarray(table).ravel()
        self.offsets = np.arange(k, dtype=np.intp) * (bins + 1)
        self.missing_index = self.offsets + bins
        self._ones = np.ones(self.edges.shape[1], dtype=np.uint8)
        self._pushing: list[tuple[int, list[float], list[float], float]] = [
            (
                i,
                tables.edges[i].tolist(),
                tables.contributions[i].tolist(),
                float(tables.missing[i]),
            )
            for i in range(k)
            if tables.contributions[i].max() > 0 or tables.missing[i] > 0
        ]

    def explain(self, x: np.ndarray) -> np.ndarray:
        """Approximate contributions of one feature vector (same order as the model's)."""
        # Edges at or below each value, counted by a product with ones (cheaper than a sum
        # over the axis for one row); a missing value goes to the feature's missing bin.
        below = (self.edges <= x[:, None]).view(np.uint8) @ self._ones
        index = np.where(np.isnan(x), self.missing_index, self.offsets + below)
        return self.table[index]

    def top(self, x: Sequence[float], top: int) -> list[tuple[int, float]]:
        """The `top` features pushing the score up most, largest first: (position, amount).

        Of equal amounts the later feature comes first (as a stable sort, reversed, has it).
        """
        pushing = []
        for i, edges, contributions, missing in self._pushing:
            value = x[i]
            amount = missing if value != value else contributions[bisect_right(edges, value)]
            if amount > 0:
                pushing.append((amount, i))
        pushing.sort(reverse=True)
        return [(i, amount) for amount, i in pushing[:top]]


@dataclass
class LoadedModel:
    """One registered model version, ready to score rows of the online feature builder."""

    name: str
    version: str
    run_id: str
    alias: str
    feature_names: tuple[str, ...]
    indices: tuple[int, ...] | None
    """Positions of the model's features in the builder's row; None when they are the same."""
    slope: float
    intercept: float
    predictor: RowPredictor
    explainer: ContributionTables | None = None
    history_index: int | None = None
    card: dict[str, Any] = field(default_factory=dict, repr=False)
    cutoffs: dict[str, float] | None = None
    """A tier model's fitted cut-offs (tier name to upper score bound); None: the file's."""
    lookup: ContributionLookup | None = field(init=False, default=None, repr=False)
    _pick: Callable[[Sequence[float]], Sequence[float]] | None = field(
        init=False, default=None, repr=False
    )

    def __post_init__(self) -> None:
        if self.explainer is not None:
            self.lookup = ContributionLookup(self.explainer)
        if self.indices is not None:
            indices = self.indices
            self._pick = (
                operator.itemgetter(*indices)
                if len(indices) > 1
                else lambda row: tuple(row[i] for i in indices)
            )

    @property
    def label(self) -> str:
        """`name/version`, as decisions record it."""
        return f"{self.name}/{self.version}"

    def inputs(self, row: Sequence[float]) -> Sequence[float]:
        """The model's inputs, in its column order, taken from a full builder row."""
        return row if self._pick is None else self._pick(row)

    def probability(self, row: Sequence[float]) -> float:
        """Calibrated probability for a full builder row."""
        return self.probability_of(self.inputs(row))

    def probability_of(self, x: Sequence[float] | np.ndarray) -> float:
        """Calibrated probability of the model's inputs (see `inputs`)."""
        raw = self.predictor.raw(x)
        return 1.0 / (1.0 + math.exp(-(self.slope * raw + self.intercept)))

    def has_history(self, row: Sequence[float]) -> bool:
        """Whether the customer has the history the model needs (always, without a rule)."""
        if self.history_index is None:
            return True
        value = row[self.history_index]
        return value == value and value > 0  # NaN: no history


def model_from_files(
    name: str,
    version: str,
    run_id: str,
    alias: str,
    model_file: Path,
    card: dict[str, Any],
    builder_features: Sequence[str] = FEATURE_NAMES,
    history_feature: str | None = None,
) -> LoadedModel:
    """Build a loaded model from a booster file and its card; ConfigurationError if it cannot
    score the builder's rows."""
    import lightgbm as lgb

    card_version = str(card.get("feature_version", ""))
    if card_version != FEATURE_VERSION:
        raise ConfigurationError(
            f"{name} v{version} was trained on features {card_version or '(unknown)'}, but the "
            f"service builds features {FEATURE_VERSION}: retrain it on the current definitions"
        )
    names = tuple(str(n) for n in card.get("features", ()))
    positions = {n: i for i, n in enumerate(builder_features)}
    unknown = [n for n in names if n not in positions]
    if not names or unknown:
        raise ConfigurationError(
            f"{name} v{version}: its card names features the service does not build: "
            f"{', '.join(unknown) or '(none listed)'}"
        )
    calibration = card.get("calibration") or {}
    try:
        slope = float(calibration.get("slope", 1.0))
        intercept = float(calibration.get("intercept", 0.0))
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} v{version}: calibration is not numeric") from None
    booster = lgb.Booster(model_file=str(model_file))
    if booster.num_feature() != len(names):
        raise ConfigurationError(
            f"{name} v{version}: the booster takes {booster.num_feature()} features, its card "
            f"lists {len(names)}"
        )
    indices = tuple(positions[n] for n in names)
    same = indices == tuple(range(len(builder_features)))
    explainer = None
    if "explainer" in card:
        explainer = ContributionTables.from_json(card["explainer"])
        if explainer.names != names:
            raise ConfigurationError(f"{name} v{version}: explainer features differ from the card")
    history_index = None
    if history_feature is not None:
        history = str(card.get("history_feature", history_feature))
        history_index = positions.get(history)
    cutoffs = card_cutoffs(card, f"{name} v{version}")
    return LoadedModel(
        name=name,
        version=version,
        run_id=run_id,
        alias=alias,
        feature_names=names,
        indices=None if same else indices,
        slope=slope,
        intercept=intercept,
        predictor=row_predictor(booster, len(names)),
        explainer=explainer,
        history_index=history_index,
        card=card,
        cutoffs=cutoffs,
    )


def tiers_in_force(tiers: Tiers, model: LoadedModel | None) -> Tiers:
    """The tiers file's tiers with the tier model's fitted cut-offs as their upper bounds.

    The file gives the tiers, their privileges and shares; the model, trained on the shop's
    customers, gives where each tier ends. Without a model, or a model that stored no cut-offs,
    the file's own bounds apply. Cut-offs for other tier names than the file's (the file was
    changed after training) cannot be placed: the file's bounds apply, with a warning to retrain.
    """
    if model is None or model.cutoffs is None:
        return tiers
    if tuple(model.cutoffs) != tiers.names:
        log.warning(
            "%s was fitted for tiers %s, the tiers file has %s: using the file's bounds; "
            "retrain the tier model on this file",
            model.label,
            list(model.cutoffs),
            list(tiers.names),
        )
        return tiers
    return with_bounds(tiers, model.cutoffs, source=f"{tiers.source} with {model.label} cut-offs")


@dataclass
class ModelSet:
    """The abuse and credit-tier models in use, and why any of them is missing."""

    abuse: LoadedModel | None
    tier: LoadedModel | None
    problems: dict[str, str]
    alias: str

    @property
    def degraded(self) -> bool:
        """No abuse model: decisions follow the rules-only policy."""
        return self.abuse is None


def _registry_exists(settings: Settings) -> bool:
    uri = settings.mlflow_tracking_uri or ""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


def load_models(settings: Settings, alias: str) -> ModelSet:
    """Load `refund-abuse@alias` and `credit-tier@alias` from the registry; never raises.

    A model that cannot be loaded is left out, with the reason in `problems`.
    """
    problems: dict[str, str] = {}
    loaded: dict[str, LoadedModel | None] = {ABUSE_MODEL: None, TIER_MODEL: None}
    if not _registry_exists(settings):
        reason = f"no model registry at {settings.mlflow_tracking_uri}"
        return ModelSet(None, None, {ABUSE_MODEL: reason, TIER_MODEL: reason}, alias)
    try:
        client = client_for(settings)
    except Exception as exc:
        reason = f"the model registry cannot be opened: {exc}"
        return ModelSet(None, None, {ABUSE_MODEL: reason, TIER_MODEL: reason}, alias)
    for name in loaded:
        try:
            loaded[name] = _load_one(client, name, alias)
        except (NotFoundError, ConfigurationError) as exc:
            problems[name] = str(exc)
        except Exception as exc:  # a broken store or card must not stop the service
            log.exception("loading %s@%s failed", name, alias)
            problems[name] = f"{name}@{alias} could not be loaded: {exc}"
    return ModelSet(loaded[ABUSE_MODEL], loaded[TIER_MODEL], problems, alias)


def _load_one(client: Any, name: str, alias: str) -> LoadedModel:
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        scoring = download_scoring(client, name, alias, into=Path(tmp))
        return model_from_files(
            name,
            scoring.version,
            scoring.run_id,
            alias,
            scoring.model_file,
            scoring.card,
            history_feature=DEFAULT_HISTORY_FEATURE if name == TIER_MODEL else None,
        )
