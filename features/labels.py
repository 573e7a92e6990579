"""Labels: what was known about each refund request, and when.

A refund may have several outcomes over time (a warehouse check, then a chargeback weeks later).
The label as of a moment is the latest outcome known strictly before that moment; ties in
`known_at` are broken by `outcome_id`, the same order the feature builders use.
"""

from __future__ import annotations

import pandas as pd

LABEL_COLUMNS: tuple[str, ...] = ("label_is_abusive_final", "label_known_at", "label_source")
"""Columns of the training table that carry the final label; never features."""


def _latest(outcomes: pd.DataFrame) -> pd.DataFrame:
    ordered = outcomes.sort_values(["refund_id", "known_at", "outcome_id"], kind="stable")
    latest = ordered.drop_duplicates("refund_id", keep="last")
    return latest[["refund_id", "is_abusive", "known_at", "source"]].reset_index(drop=True)


def labels_as_of(outcomes: pd.DataFrame, cutoff: pd.Timestamp | str) -> pd.DataFrame:
    """The latest outcome of each refund known strictly before `cutoff`.

    Returns one row per refund that had an outcome by then: `refund_id`, `is_abusive`,
    `known_at`, `source`. Refunds with no outcome known before `cutoff` are absent: their label
    is unknown at that moment, which is not the same as "not abusive".
    """
    known = outcomes[outcomes["known_at"] < pd.Timestamp(cutoff)]
    return _latest(known)


def final_labels(refunds: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per refund request, in `refunds` order: the latest outcome in the data, if any.

    Columns: `label_is_abusive_final` (nullable boolean), `label_known_at` (when that outcome
    became known; empty if none), `label_source`.
    """
    latest = _latest(outcomes).set_index("refund_id")
    pos = latest.index.get_indexer(pd.Index(refunds["refund_id"]))
    has = pos >= 0
    is_abusive = pd.array([pd.NA] * len(refunds), dtype="boolean")
    is_abusive[has] = latest["is_abusive"].to_numpy(dtype=bool)[pos[has]]
    known_at = pd.Series(pd.NaT, index=range(len(refunds)), dtype="datetime64[us]")
    known_at[has] = latest["known_at"].to_numpy(dtype="datetime64[us]")[pos[has]]
    source = pd.Series(pd.NA, index=range(len(refunds)), dtype="str")
    source[has] = latest["source"].to_numpy(dtype=object)[pos[has]]
    return pd.DataFrame(
        {
            "label_is_abusive_final": is_abusive,
            "label_known_at": known_at.to_numpy(),
            "label_source": source.to_numpy(),
        }
    )
