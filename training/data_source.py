"""Where training reads from: the raw world and its feature rows, built as of each request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from data.storage import read_world
from data.world_io import load_oracle
from features.batch import build_refund_features
from features.definitions import FEATURE_VERSION
from refund_risk.settings import Settings


@dataclass
class TrainingInputs:
    """Feature rows with their final labels, the outcomes, and the oracle when there is one."""

    rows: pd.DataFrame
    outcomes: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    oracle_refunds: pd.DataFrame | None
    oracle_customers: pd.DataFrame | None
    manifest: dict[str, Any] = field(default_factory=dict)


def load_training_inputs(settings: Settings, refund_rows: bool = True) -> TrainingInputs:
    """Read the raw tables and build the refund feature rows from them.

    The rows are built here rather than read from an earlier `features build` so a model can
    never be trained on a feature table from other definitions or other raw data. With
    `refund_rows=False` (the tier model, which learns from monthly snapshots) they are not
    built and `rows` is empty; the manifest is the same.
    """
    tables = read_world(settings.raw_dir)
    requests = tables["refund_requests"]
    rows = build_refund_features(tables) if refund_rows else requests.iloc[:0]
    oracle = load_oracle(settings.oracle_dir)
    requested = requests["requested_at"]
    manifest = {
        "feature_version": FEATURE_VERSION,
        "raw_dir": str(settings.raw_dir),
        "rows": {name: len(frame) for name, frame in tables.items()},
        "refund_rows": len(requests),
        "time_range": [str(requested.min()), str(requested.max())],
    }
    return TrainingInputs(
        rows,
        tables["outcomes"],
        tables,
        oracle[0] if oracle else None,
        oracle[1] if oracle else None,
        manifest,
    )
