"""A history's last days run through the service (`refund-risk events replay`): each request
decided at its own time on what was known then, review cases resolved when their outcome
became known, and the store left as an ingest of the same history leaves it (with the
reviewers' resolutions beside)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from serving_world import settings_for

from data.generator import generate_world, moved_to_end_by
from features.batch import BatchBuilder
from features.definitions import FEATURES
from features.store import EventStore
from serving.db import DECISIONS, REVIEW_CASES, REVIEW_RESOLUTIONS
from serving.replay import REVIEWER, replay_history

DAYS = 21


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, pd.DataFrame], Path]:
    """A small world ending today, its last `DAYS` days replayed with no model (the rules-only
    policy sends refund-only claims to review)."""
    tmp = tmp_path_factory.mktemp("replay")
    today = datetime.now(UTC).date()
    tables = moved_to_end_by(generate_world(4000, seed=3), today).tables
    settings = settings_for(tmp)
    report = replay_history(settings, tables, DAYS)
    assert report.refused == {}  # the history keeps its own rules: nothing refused
    assert report.resolved > 0 and report.still_open > 0
    return tables, tmp / "data" / "service.db"


def _read(db: Path, query: sa.Select) -> pd.DataFrame:  # type: ignore[type-arg]
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as connection:
            return pd.DataFrame(connection.execute(query).mappings().all())
    finally:
        engine.dispose()


def test_each_request_of_the_last_days_is_decided_at_its_own_time(
    replayed: tuple[dict[str, pd.DataFrame], Path],
) -> None:
    tables, db = replayed
    requests = tables["refund_requests"].set_index("refund_id")
    end = requests["requested_at"].max()
    start = end.normalize() - pd.Timedelta(days=DAYS - 1)
    window = requests[requests["requested_at"] >= start]
    decided = _read(db, sa.select(DECISIONS.c.refund_id, DECISIONS.c.decided_at)).set_index(
        "refund_id"
    )
    assert sorted(decided.index) == sorted(window.index)
    assert (decided["decided_at"] == window.loc[decided.index, "requested_at"]).all()
    # Over several days, as the dashboard's days show them.
    assert decided["decided_at"].dt.date.nunique() >= DAYS - 1


def test_each_decision_saw_only_what_was_known_at_its_time(
    replayed: tuple[dict[str, pd.DataFrame], Path],
) -> None:
    """The features each replayed decision recorded are the point-in-time features of the
    batch builder on the whole history: nothing later (the request's own outcome, a delivery
    after it, later orders) leaked into them."""
    tables, db = replayed
    batch = BatchBuilder(tables).refund_rows().set_index("refund_id")
    recorded = _read(db, sa.select(DECISIONS.c.refund_id, DECISIONS.c.features))
    names = [f.name for f in FEATURES]
    got = np.array(
        [[np.nan if v is None else v for v in json.loads(x)] for x in recorded["features"]],
        dtype=np.float64,
    )
    want = batch.loc[recorded["refund_id"], names].to_numpy(dtype=np.float64)
    same = np.isclose(got, want, rtol=1e-9, atol=1e-9) | (np.isnan(got) & np.isnan(want))
    wrong = {names[j]: int((~same[:, j]).sum()) for j in range(len(names)) if not same[:, j].all()}
    assert wrong == {}


def test_review_cases_are_resolved_when_their_outcome_became_known_as_it_says(
    replayed: tuple[dict[str, pd.DataFrame], Path],
) -> None:
    tables, db = replayed
    cases = _read(
        db,
        sa.select(
            REVIEW_CASES.c.refund_id,
            REVIEW_CASES.c.opened_at,
            REVIEW_CASES.c.status,
            REVIEW_CASES.c.resolved_at,
        ),
    ).set_index("refund_id")
    resolved = _read(
        db,
        sa.select(
            REVIEW_RESOLUTIONS.c.refund_id,
            REVIEW_RESOLUTIONS.c.decision,
            REVIEW_RESOLUTIONS.c.reviewer,
        ),
    ).set_index("refund_id")
    outcomes = tables["outcomes"].sort_values("known_at").drop_duplicates("refund_id")
    first = outcomes.set_index("refund_id")
    end = tables["refund_requests"]["requested_at"].max()
    for refund_id, case in cases.iterrows():
        known = first.loc[refund_id] if refund_id in first.index else None
        if known is None or known["known_at"] > end or known["known_at"] < case["opened_at"]:
            assert case["status"] == "open", refund_id
            continue
        assert case["status"] == "resolved", refund_id
        assert case["resolved_at"] == known["known_at"]
        expected = "reject_abuse" if known["is_abusive"] else "approve"
        assert tuple(resolved.loc[refund_id]) == (expected, REVIEWER)


def test_the_store_ends_as_an_ingest_of_the_same_history_leaves_it(
    replayed: tuple[dict[str, pd.DataFrame], Path], tmp_path: Path
) -> None:
    tables, db = replayed
    ingested = EventStore.open(f"sqlite:///{tmp_path / 'ingested.db'}")
    after = EventStore.open(f"sqlite:///{db}")
    try:
        ingested.write_frames(tables)
        resolutions = len(_read(db, sa.select(REVIEW_RESOLUTIONS.c.case_id)))
        # The same rows, and the reviewers' resolutions as outcomes of their own.
        want = ingested.counts()
        want["outcomes"] += resolutions
        assert after.counts() == want
        sources = pd.DataFrame([r for batch in after.scan("outcomes") for r in batch])["source"]
        assert (sources == "reviewer").sum() == resolutions > 0
        for name in ("orders", "refund_requests"):
            a = pd.DataFrame([r for batch in after.scan(name) for r in batch])
            b = pd.DataFrame([r for batch in ingested.scan(name) for r in batch])
            key = b.columns[0]
            pd.testing.assert_frame_equal(
                a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
            )
    finally:
        ingested.dispose()
        after.dispose()
