"""Replaying recorded history through the online builder, in the order it happened.

Every row of the raw tables is appended at its own time (a customer at signup, an order when
placed, a refund when requested, an outcome when known, a link when first seen). Refund requests
chosen for scoring are scored the way the service scores them: after everything recorded at or
before their time, and each is appended right after its row is made, before anything later.
This is how the parity test checks the online builder against the batch builder, and how a
backtest can see what the service would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
import pandas as pd

from data.schema import TABLES
from features.events import times_us
from features.online import OnlineFeatureBuilder
from features.store import records as store_records

TIME_COLUMNS: dict[str, str] = {
    "customers": "signup_at",
    "orders": "ordered_at",
    "refund_requests": "requested_at",
    "outcomes": "known_at",
    "identity_links": "seen_at",
}
"""When each raw table's rows happen."""


def replay(
    builder: OnlineFeatureBuilder,
    tables: Mapping[str, pd.DataFrame],
    score: Collection[str],
    progress: Callable[[str, float], None] | None = None,
) -> pd.DataFrame:
    """Append all rows in time order, scoring the refund requests whose ids are in `score`.

    Returns one row per scored request (index `refund_id`, columns the builder's features).
    """
    wanted = set(score)
    times: list[np.ndarray] = []
    ranks: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    scored: list[np.ndarray] = []
    for rank, name in enumerate(TABLES):
        frame = tables[name]
        times.append(times_us(frame[TIME_COLUMNS[name]]))
        ranks.append(np.full(len(frame), rank))
        positions.append(np.arange(len(frame)))
        is_scored = (
            frame["refund_id"].isin(wanted).to_numpy(dtype=bool)
            if name == "refund_requests"
            else np.zeros(len(frame), dtype=bool)
        )
        scored.append(is_scored)
    t = np.concatenate(times)
    s = np.concatenate(scored)
    r = np.concatenate(ranks)
    pos = np.concatenate(positions)
    # Within one instant: ordinary rows first (parents before children), scored requests last.
    order = np.lexsort((pos, r, s, t))
    names = list(TABLES)
    records = {name: store_records(tables[name], TABLES[name].column_names) for name in TABLES}
    rows: dict[str, dict[str, Any]] = {}
    buffer: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    pending = 0
    total = max(int(s.sum()), 1)
    for i in order:
        name = names[r[i]]
        record = records[name][pos[i]]
        if not s[i]:
            buffer[name].append(record)
            pending += 1
            continue
        if pending:
            builder.append_many(buffer)
            buffer = {n: [] for n in TABLES}
            pending = 0
        rows[record["refund_id"]] = builder.row(record)
        # Recorded with the rows that follow it, in one transaction: still before anything
        # later is scored, as `score_and_record` would, at half the commits.
        buffer[name].append(record)
        pending += 1
        if progress is not None:
            progress("replay", len(rows) / total)
    if pending:
        builder.append_many(buffer)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(builder.feature_names))
    frame.index.name = "refund_id"
    return frame
