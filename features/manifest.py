"""Writing the training tables (Parquet) and the manifest that describes them.

The manifest records the feature list, the definitions' version hash, row counts and time ranges.
A model trained on these tables records the hash; `require_feature_version` is how a service
refuses a model built on different features.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.storage import atomic_path
from features.batch import (
    CREDIT_TARGET_COLUMNS,
    BatchBuilder,
    snapshot_dates,
)
from features.definitions import (
    CATEGORICAL_FEATURES,
    CUSTOMER_FEATURES,
    FEATURE_VERSION,
    FEATURES,
    SEMANTICS_VERSION,
    definitions_payload,
)
from features.labels import LABEL_COLUMNS
from refund_risk.errors import ConfigurationError, NotFoundError

REFUND_FEATURES_FILE = "refund_features.parquet"
CREDIT_SNAPSHOTS_FILE = "credit_snapshots.parquet"
MANIFEST_FILE = "manifest.json"

Progress = Callable[[str, float], None]


def _no_progress(stage: str, fraction: float) -> None:
    """Default progress callback: silent."""


def _iso(value: Any) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).isoformat()


def feature_list() -> list[dict[str, Any]]:
    """The features as the manifest and `describe` show them."""
    return [
        {
            "name": f.name,
            "entity": str(f.entity),
            "aggregation": str(f.aggregation),
            "window_days": f.window_days,
            "categorical": f.categorical,
            "integer": f.integer,
            "description": f.description,
        }
        for f in FEATURES
    ]


def build_training_tables(
    tables: Mapping[str, pd.DataFrame],
    out_dir: Path,
    source: str = "",
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """Write the refund feature table, the credit snapshots and the manifest into `out_dir`.

    Each file is written atomically and the manifest last, so a manifest always describes
    complete tables. Returns the manifest.
    """
    builder = BatchBuilder(tables)
    progress("refund requests", 0.05)
    refunds = builder.refund_rows()
    with atomic_path(out_dir / REFUND_FEATURES_FILE) as tmp:
        refunds.to_parquet(tmp, index=False, compression="zstd")

    dates = snapshot_dates(tables)
    snapshot_rows = 0
    with atomic_path(out_dir / CREDIT_SNAPSHOTS_FILE) as tmp:
        # One month at a time: a million customers times twelve months would not fit at once.
        first = builder.snapshot_rows(pd.Timestamp.min if not dates else dates[0])
        schema = pa.Schema.from_pandas(first, preserve_index=False)
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for i, at in enumerate(dates):
                progress(f"credit snapshot {at.date()}", 0.3 + 0.65 * i / len(dates))
                frame = first if i == 0 else builder.snapshot_rows(at)
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                snapshot_rows += len(frame)
                del frame
            if not dates:
                writer.write_table(pa.Table.from_pandas(first, schema=schema, preserve_index=False))
        del first

    manifest: dict[str, Any] = {
        "feature_version": FEATURE_VERSION,
        "semantics_version": SEMANTICS_VERSION,
        "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        "source": source,
        "features": feature_list(),
        "categorical_features": list(CATEGORICAL_FEATURES),
        "tables": {
            "refund_features": {
                "file": REFUND_FEATURES_FILE,
                "rows": len(refunds),
                "key": "refund_id",
                "time_column": "requested_at",
                "time_range": [
                    _iso(refunds["requested_at"].min()),
                    _iso(refunds["requested_at"].max()),
                ],
                "feature_columns": [f.name for f in FEATURES],
                "label_columns": list(LABEL_COLUMNS),
            },
            "credit_snapshots": {
                "file": CREDIT_SNAPSHOTS_FILE,
                "rows": snapshot_rows,
                "key": ["customer_id", "snapshot_at"],
                "time_column": "snapshot_at",
                "time_range": [
                    _iso(dates[0]) if dates else None,
                    _iso(dates[-1]) if dates else None,
                ],
                "snapshot_dates": [_iso(d) for d in dates],
                "feature_columns": [f.name for f in CUSTOMER_FEATURES],
                "target_columns": list(CREDIT_TARGET_COLUMNS),
            },
        },
        "definitions": definitions_payload(),
    }
    with atomic_path(out_dir / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    progress("done", 1.0)
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the training tables in `directory`."""
    path = directory / MANIFEST_FILE
    if not path.exists():
        raise NotFoundError(f"no feature manifest at {path}; run `refund-risk features build`")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def require_feature_version(version: str) -> None:
    """Refuse anything (a model, a table) built on features other than these definitions."""
    if version != FEATURE_VERSION:
        raise ConfigurationError(
            f"built on feature definitions {version}, but this code computes {FEATURE_VERSION}; "
            "rebuild the features and retrain"
        )
