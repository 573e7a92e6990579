"""Population stability: how far today's requests have moved from the ones a model learnt on.

At training time each feature's and the score's distribution over the training rows is kept
as bin edges and shares (in the model card). Later, the same bins over recent requests give
the population stability index, PSI = sum((now - then) * ln(now / then)). The usual reading:
under 0.1 stable, 0.1 to 0.25 worth a look, over 0.25 a real shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 10
WARN = 0.1
ALERT = 0.25
_FLOOR = 1e-4  # an empty bin would make the logarithm infinite


@dataclass(frozen=True)
class Reference:
    """One variable's training distribution: bin edges and the share in each bin."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    missing_share: float

    def to_json(self) -> dict[str, Any]:
        """Plain data for the model card."""
        return {
            "edges": list(self.edges),
            "shares": list(self.shares),
            "missing_share": self.missing_share,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Reference:
        """Inverse of `to_json`."""
        return cls(
            tuple(payload["edges"]), tuple(payload["shares"]), float(payload["missing_share"])
        )


def _counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    present = values[~np.isnan(values)]
    idx = np.searchsorted(edges, present, side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype(float)


def reference(values: np.ndarray) -> Reference:
    """The distribution of `values` over up to ten quantile bins (one per value if fewer)."""
    values = np.asarray(values, dtype=float)
    present = values[~np.isnan(values)]
    if len(present) == 0:
        return Reference((), (1.0,), 1.0)
    unique = np.unique(present)
    if len(unique) <= BINS:
        edges = unique[1:]
    else:
        edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = _counts(edges, values)
    return Reference(
        tuple(float(e) for e in edges),
        tuple(float(c) for c in counts / max(len(present), 1)),
        float(np.isnan(values).mean()),
    )


def psi(ref: Reference, values: np.ndarray) -> float:
    """Population stability index of `values` against the reference (NaN if no values)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan")
    counts = _counts(np.asarray(ref.edges, dtype=float), values)
    present = counts.sum()
    now = counts / present if present else np.zeros_like(counts)
    then = np.asarray(ref.shares, dtype=float)
    # The missing share is one more bin, so a feature that starts arriving empty shows up.
    now = np.append(now * (1 - np.isnan(values).mean()), np.isnan(values).mean())
    then = np.append(then * (1 - ref.missing_share), ref.missing_share)
    now, then = np.maximum(now, _FLOOR), np.maximum(then, _FLOOR)
    return float(np.sum((now - then) * np.log(now / then)))


def level(value: float) -> str:
    """`stable`, `watch` or `shifted` for a PSI value."""
    if np.isnan(value) or value < WARN:
        return "stable"
    return "watch" if value < ALERT else "shifted"


def references(names: tuple[str, ...], X: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Every feature's reference and the score's, as card data."""
    out = {name: reference(X[:, j]).to_json() for j, name in enumerate(names)}
    return {"features": out, "score": reference(scores).to_json()}
