"""Where training reads from: the raw world and its feature rows, built as of each request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from data.storage import read_world
from data.world_io import load_oracle
from features.batch import build_refund_features, filter_columns
from features.definitions import FEATURE_VERSION, SOURCES
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


def snapshot_order_columns() -> list[str]:
    """The columns of the orders table that monthly customer snapshots read: the orders event
    source's id, time, customer and numbers, any column a feature filters orders on, and what a
    refund request reads of its order (the id, the delivery time)."""
    spec = SOURCES["orders"]
    wanted = {spec.id_column, spec.time_column, *(c for _, c in spec.entity_columns)}
    wanted |= {*spec.columns, *filter_columns("orders"), "order_id", "delivered_at"}
    return sorted(wanted)


def load_training_inputs(settings: Settings, refund_rows: bool = True) -> TrainingInputs:
    """Read the raw tables and build the refund feature rows from them.

    The rows are built here rather than read from an earlier `features build` so a model can
    never be trained on a feature table from other definitions or other raw data. With
    `refund_rows=False` (the tier model, which learns from monthly snapshots) they are not
    built and `rows` is empty, and of the orders table, by far the largest, only the columns
    snapshots read are loaded; the manifest is the same.
    """
    columns = None if refund_rows else {"orders": snapshot_order_columns()}
    tables = read_world(settings.raw_dir, columns)
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
