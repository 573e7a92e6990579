"""Snapshot months cut down to what tier training reads from them, so months can be streamed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.batch import CREDIT_TARGET_COLUMNS
from features.definitions import FEATURES
from refund_risk.errors import DataValidationError
from training.tier.loss import REFUND_REQUESTS, TARGET
from training.tier.tiers import has_history


def check_snapshot_columns(snapshots: pd.DataFrame, features: Sequence[str]) -> None:
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


def compact(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each number column in the narrowest of float32 / int32 that holds every one of
    its values exactly, else as it was.

    Memory only: a column converted back to float64 (as the model's input matrix is) gives the
    same values bit for bit, so the model and its scores do not change. Most tier inputs are
    counts, which fit; money sums and rates mostly do not, and stay float64.
    """
    narrowed: dict[str, np.ndarray] = {}
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype == np.float64:
            with np.errstate(over="ignore"):  # too large for float32: inf, so not exact
                narrow = values.astype(np.float32)
            if np.array_equal(narrow.astype(np.float64), values, equal_nan=True):
                narrowed[name] = narrow
        elif values.dtype == np.int64 and len(values):
            info = np.iinfo(np.int32)
            if info.min <= values.min() and values.max() <= info.max:
                narrowed[name] = values.astype(np.int32)
    return frame.assign(**narrowed) if narrowed else frame


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
        rows=compact(frame.loc[known, list(columns)].reset_index(drop=True)),
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
