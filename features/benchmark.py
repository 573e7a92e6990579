"""How fast the feature builders are: figures to print, never assertions.

Batch: refund requests per second and peak memory, each world size measured in a fresh child
process so one size's peak does not hide another's. Online: time to build one request's row from
a warm event store, against one LightGBM single-row predict of a 300-tree model trained in the
same run (one thread), which is the cost the serving path is budgeted in.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.definitions import FEATURES


@dataclass
class BatchFigures:
    """One world size's batch build."""

    customers: int
    refund_requests: int
    orders: int
    generate_seconds: float
    refund_build_seconds: float
    requests_per_second: float
    snapshot_rows: int
    snapshot_build_seconds: float
    peak_rss_mb: float


@dataclass
class OnlineFigures:
    """The online builder on one world, against a LightGBM single-row predict."""

    customers: int
    requests_timed: int
    row_median_us: float
    row_p99_us: float
    score_and_record_median_us: float
    predict_median_us: float
    row_in_predicts: float


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_batch(customers: int, seed: int, snapshots: bool = True) -> BatchFigures:
    """Generate a world and build its refund rows (and credit snapshots), timing each step."""
    from data.generator import generate_world
    from features.batch import BatchBuilder, snapshot_dates

    start = time.perf_counter()
    world = generate_world(customers, seed)
    generated = time.perf_counter()
    builder = BatchBuilder(world.tables)
    rows = builder.refund_rows()
    built = time.perf_counter()
    snapshot_rows = 0
    if snapshots:
        for at in snapshot_dates(world.tables):
            snapshot_rows += len(builder.snapshot_rows(at))
    done = time.perf_counter()
    refund_seconds = built - generated
    return BatchFigures(
        customers=customers,
        refund_requests=len(rows),
        orders=len(world.tables["orders"]),
        generate_seconds=generated - start,
        refund_build_seconds=refund_seconds,
        requests_per_second=len(rows) / refund_seconds if refund_seconds > 0 else float("inf"),
        snapshot_rows=snapshot_rows,
        snapshot_build_seconds=done - built,
        peak_rss_mb=_peak_rss_mb(),
    )


def measure_batch_isolated(customers: int, seed: int, snapshots: bool = True) -> BatchFigures:
    """`measure_batch` in a fresh process, so its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure_batch, customers, seed, snapshots).result()


def lightgbm_predict_us(n_features: int, seed: int, repeats: int = 2000) -> float:
    """Median microseconds of one single-row `Booster.predict` of a 300-tree model."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    # Enough rows for every tree to grow its 31 leaves; a predict's cost does not depend on
    # what the trees learnt, only on their number and depth.
    x = rng.normal(size=(2000, n_features))
    y = (x[:, 0] + rng.normal(size=2000) > 0).astype(int)
    params = {
        "objective": "binary",
        "num_leaves": 31,
        "num_threads": 1,
        "verbose": -1,
        "seed": seed,
    }
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=300)
    row = x[:1].copy()
    for _ in range(50):
        booster.predict(row, num_threads=1)
    times = []
    for i in range(repeats):
        row = x[i % len(x) : i % len(x) + 1]
        t0 = time.perf_counter_ns()
        booster.predict(row, num_threads=1)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1_000


def measure_online(customers: int, seed: int, requests: int = 2000) -> OnlineFigures:
    """Ingest a world into a SQLite event store, then time rows of random refund requests."""
    from data.generator import generate_world
    from features.online import OnlineFeatureBuilder
    from features.store import EventStore

    world = generate_world(customers, seed)
    refunds = world.tables["refund_requests"]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(refunds), size=min(requests, len(refunds)), replace=False)
    records: list[dict[str, Any]] = refunds.iloc[chosen].to_dict("records")  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore.open(f"sqlite:///{Path(tmp) / 'events.db'}")
        others = {name: frame for name, frame in world.tables.items()}
        others["refund_requests"] = refunds.drop(refunds.index[chosen])
        store.write_frames(others)
        builder = OnlineFeatureBuilder(store)
        builder.preload()
        # Warm each customer's history once; the service keeps them warm between requests.
        for record in records:
            builder.row(record)
        row_times = []
        for record in records:
            t0 = time.perf_counter_ns()
            builder.row(record)
            row_times.append(time.perf_counter_ns() - t0)
        record_times = []
        for record in records:
            t0 = time.perf_counter_ns()
            builder.score_and_record(record)
            record_times.append(time.perf_counter_ns() - t0)
        store.dispose()
    predict_us = lightgbm_predict_us(len(FEATURES), seed)
    row_median = statistics.median(row_times) / 1_000
    return OnlineFigures(
        customers=customers,
        requests_timed=len(records),
        row_median_us=row_median,
        row_p99_us=float(np.percentile(row_times, 99)) / 1_000,
        score_and_record_median_us=statistics.median(record_times) / 1_000,
        predict_median_us=predict_us,
        row_in_predicts=row_median / predict_us,
    )


def as_dict(figures: BatchFigures | OnlineFigures) -> dict[str, Any]:
    """Figures as plain data (for JSON output)."""
    return asdict(figures)
