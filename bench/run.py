"""Benchmark the scoring endpoint against a bare echo endpoint, in one run.

    python -m bench.run [--customers 20000] [--seconds 15] [--connections 32]

1. A world is generated (seeded) in a temporary folder and its whole history loaded into a
   fresh SQLite event store; a refund-abuse model is trained on it and registered in a
   temporary MLflow store. The load is new refund requests, made after the history ends, by
   `--templates` customers with history, on their latest delivered order.
2. Two servers run side by side, served identically (`serving.cli.run_server`: uvicorn, one
   worker, no access log, GC frozen after start-up): the bare endpoint, which parses the same
   JSON body and echoes it, and the scoring service (`refund-risk serve`).
3. Each is driven from this process (a second process on loopback; `bench.load`) by
   `--connections` keep-alive connections for `--seconds` in all, in `--rounds` turns taken
   in alternation (bare, scoring, bare, scoring, ...), so that both are measured in the same
   spells of the machine, whose speed drifts by tens of percent over minutes. Each server's
   first turn follows a warm-up (at least `--warmup` seconds and, unless
   `--no-warm-customers`, one request about every customer of the load); later turns
   reconnect for a second first. Every request carries a new refund id and a later time than
   the one before, so each is a real decision (features from the customer's history, model,
   policy, reasons, the decision stored before the answer) and each customer's requests
   arrive in time order, as they do in life. The server's CPU time over the measured part is
   read from /proc: in all (its processes and threads), and its main process's own, whose
   event loop every request passes through: with one worker, that one bounds throughput.

With `--pin` (two or more cores) the server runs on one core and the load on the others; by
default the operating system places them, as it would in production. `--database-url` runs on
PostgreSQL instead of SQLite. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.load import LoadResult, http_request, run_load

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1/refund-decisions"

# Targets on a 2-core machine: scoring throughput at least half the bare endpoint's, and its
# p99 latency under four times the bare endpoint's.
TARGET_THROUGHPUT_SHARE = 0.5
TARGET_P99_RATIO = 4.0
# On PostgreSQL, two workers on two cores: at least 1.5 times one worker's decisions per second.
TARGET_WORKER_SCALING = 1.5


def _iso(value: Any) -> str | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    return pd.Timestamp(value).isoformat()


def request_bodies(
    tables: dict[str, pd.DataFrame], count: int, seed: int
) -> tuple[list[dict[str, Any]], pd.Timestamp]:
    """Templates of new refund requests on real customers' latest delivered orders.

    Each template takes a customer with history and their latest delivered order, and a refund
    drawn from the world's own refunds (type, reason, share of the price asked back, photos).
    Returns the templates and the end of the world's history; requests are made after it.
    """
    rng = np.random.default_rng(seed)
    orders = tables["orders"]
    delivered = orders[orders["delivered_at"].notna()].sort_values("ordered_at")
    latest = delivered.groupby("customer_id").tail(1)
    latest = latest.iloc[rng.permutation(len(latest))[:count]]
    refunds = tables["refund_requests"].merge(
        orders[["order_id", "amount"]], on="order_id", how="left"
    )
    picks = refunds.iloc[rng.integers(0, len(refunds), len(latest))]
    end = max(orders["ordered_at"].max(), tables["refund_requests"]["requested_at"].max())
    for column in ("shipped_at", "delivered_at"):
        end = max(end, orders[column].max())
    bodies = []
    rows: list[tuple[Any, Any]] = list(
        zip(latest.itertuples(index=False), picks.itertuples(index=False), strict=True)
    )
    for o, r in rows:
        share = min(1.0, float(r.amount_requested) / float(r.amount))
        bodies.append(
            {
                "refund_id": "",
                "customer_id": o.customer_id,
                "requested_at": "",
                "refund_type": r.refund_type,
                "reason": r.reason,
                "reason_detail": r.reason_detail,
                "amount_requested": round(max(0.01, float(o.amount) * share), 2),
                "photo_count": int(r.photo_count),
                "order_stage": "delivered",
                "order": {
                    "order_id": o.order_id,
                    "ordered_at": _iso(o.ordered_at),
                    "category": o.category,
                    "amount": float(o.amount),
                    "item_count": int(o.item_count),
                    "payment_method": o.payment_method,
                    "device_id": o.device_id,
                    "address_id": o.address_id,
                    "payment_fingerprint": o.payment_fingerprint,
                    "shipped_at": _iso(o.shipped_at),
                    "delivered_at": _iso(o.delivered_at),
                    "delivery_evidence": o.delivery_evidence,
                },
            }
        )
    return bodies, pd.Timestamp(end)


def prepare(customers: int, seed: int, templates: int) -> tuple[list[dict[str, Any]], pd.Timestamp]:
    """World, event store and trained model; return request templates and the history's end."""
    from data.generator import generate_world
    from data.world_io import save_world
    from features.store import EventStore
    from refund_risk.settings import load_settings
    from training.data_source import load_training_inputs
    from training.dataset import build_abuse_dataset, plan_split
    from training.run_abuse import run_abuse_training

    settings = load_settings()
    began = time.perf_counter()
    world = generate_world(customers, seed=seed)
    save_world(world, settings.raw_dir, settings.oracle_dir)
    assert settings.database_url is not None
    store = EventStore.open(settings.database_url, schema=settings.database_schema)
    store.write_frames(world.tables)
    store.dispose()
    print(
        f"world: {customers:,} customers, {world.row_count:,} rows in the event store "
        f"({time.perf_counter() - began:.1f} s)",
        file=sys.stderr,
    )

    began = time.perf_counter()
    inputs = load_training_inputs(settings)
    split = plan_split(inputs.rows["requested_at"], test_months=3)
    dataset = build_abuse_dataset(inputs.rows, inputs.outcomes, split, inputs.oracle_refunds)
    run = run_abuse_training(settings, inputs.rows, inputs.outcomes, dataset, inputs.manifest, True)
    print(
        f"model: refund-abuse v{run.version} ({time.perf_counter() - began:.1f} s)", file=sys.stderr
    )
    return request_bodies(world.tables, templates, seed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(
    port: int,
    process: subprocess.Popen[bytes],
    path: str = "/healthz",
    ready: bytes = b"HTTP/1.1 ",
    in_a_row: int = 1,
    timeout: float = 300.0,
) -> None:
    """Wait until `in_a_row` new connections in a row get an answer starting with `ready`
    (with several workers, each connection may reach another)."""
    deadline = time.monotonic() + timeout
    answered = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                answered = answered + 1 if s.recv(1024).startswith(ready) else 0
        except OSError:
            answered = 0
        if answered >= in_a_row:
            return
        time.sleep(0.05 if answered else 0.2)
    raise RuntimeError(f"the server did not answer {path} in time")


def _descendants(pid: int) -> list[int]:
    """The process's children, their children and so on (from /proc; empty where absent)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(children)
            todo.extend(children)
    return found


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """CPU time (user + system) used so far by a process, and by its descendants (the
    service's recorder process); None where /proc is not there."""
    times = [0.0, 0.0]
    for each in (pid, *_descendants(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if each == pid:
                return None
            continue  # ended meanwhile
        times[each != pid] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return times[0], times[1]


@dataclass
class Measured:
    """One endpoint's run and the server's CPU time during the measured part of it."""

    load: LoadResult
    cpu_seconds: tuple[float, float] | None
    """The server process's own (its event loop's), and its child processes'."""

    def _per_request(self, seconds: float) -> float | None:
        if not self.load.requests:
            return None
        return seconds / self.load.requests * 1e6

    @classmethod
    def combined(cls, parts: list[Measured]) -> Measured:
        """Several turns of one endpoint as one run: their requests, times and latencies
        together (CPU time unknown if it is unknown for any turn)."""
        load = LoadResult(
            requests=sum(p.load.requests for p in parts),
            errors=sum(p.load.errors for p in parts),
            seconds=sum(p.load.seconds for p in parts),
            latencies=[x for p in parts for x in p.load.latencies],
            statuses={},
        )
        for part in parts:
            for status, count in part.load.statuses.items():
                load.statuses[status] = load.statuses.get(status, 0) + count
        cpus = [p.cpu_seconds for p in parts]
        if any(c is None for c in cpus):
            return cls(load, None)
        own = sum(c[0] for c in cpus if c is not None)
        children = sum(c[1] for c in cpus if c is not None)
        return cls(load, (own, children))

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU per answered request, microseconds (all its processes and threads)."""
        return None if self.cpu_seconds is None else self._per_request(sum(self.cpu_seconds))

    @property
    def loop_cpu_us_per_request(self) -> float | None:
        """The server process's own CPU per answered request, microseconds: with one worker,
        throughput is at most one second of it per second."""
        return None if self.cpu_seconds is None else self._per_request(self.cpu_seconds[0])


def drive(
    process: subprocess.Popen[bytes],
    port: int,
    next_request: Callable[[], bytes],
    connections: int,
    seconds: float,
    warmup: float,
    warmup_requests: int,
) -> Measured:
    """Run the load against a started server, noting its CPU time while measuring."""
    began: list[tuple[float, float] | None] = []
    result = run_load(
        "127.0.0.1",
        port,
        next_request,
        connections,
        seconds,
        warmup,
        warmup_requests,
        on_start=lambda: began.append(cpu_seconds(process.pid)),
    )
    ended = cpu_seconds(process.pid)
    start = began[0] if began else None
    if start is None or ended is None:
        return Measured(result, None)
    return Measured(result, (ended[0] - start[0], ended[1] - start[1]))


@contextmanager
def server(
    command: list[str],
    port: int,
    env: dict[str, str],
    cpus: set[int] | None,
    workers: int = 1,
    readiness: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process until the block ends; with `readiness`, until that path answers
    200 on every worker (the scoring service answers /healthz while it still loads)."""

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    process = subprocess.Popen(command, env=env, cwd=ROOT, preexec_fn=pin)
    try:
        if readiness is None:
            _wait_ready(port, process)
        else:
            _wait_ready(port, process, readiness, b"HTTP/1.1 200", in_a_row=10 * workers)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _requests(
    bodies: list[dict[str, Any]],
    after: pd.Timestamp,
    port: int,
    headers: dict[str, str],
    tag: str,
) -> Callable[[], bytes]:
    """Request bytes, each a new refund request: a new refund id, and a time one second after
    the previous request's, so every customer's requests arrive in time order, as in life."""
    counter = itertools.count(1)
    templates = []
    for body in bodies:
        text = json.dumps({**body, "refund_id": "@@", "requested_at": "@@"}, separators=(",", ":"))
        templates.append(text.split('"@@"'))
    cycle = itertools.cycle(templates)
    start = after.to_pydatetime()

    def next_request() -> bytes:
        head, middle, tail = next(cycle)
        n = next(counter)
        when = (start + timedelta(seconds=n)).isoformat()
        text = f'{head}"{tag}-{n}"{middle}"{when}"{tail}'.encode()
        return http_request("127.0.0.1", port, PATH, text, headers)

    return next_request


def main(argv: list[str] | None = None) -> None:
    """Run both benchmarks and print the figures and the ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Turns per endpoint, taken in alternation; --seconds is shared among them.",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--templates", type=int, default=5_000, help="Distinct customers the requests are about."
    )
    parser.add_argument(
        "--warm-customers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Warm up until every customer of the load has been asked about once (default); "
        "--no-warm-customers measures from a fresh start, first requests included.",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder.")
    parser.add_argument(
        "--pin", action="store_true", help="Pin the server to one core and the load to the others."
    )
    parser.add_argument("--json", action="store_true", help="Also print the figures as JSON.")
    parser.add_argument(
        "--workers",
        type=int,
        action="append",
        help="Worker processes of both servers; give it several times (--workers 1 --workers "
        "2) to measure each in one run. More than one needs --database-url. Default: 1.",
    )
    parser.add_argument(
        "--database-url",
        help="A PostgreSQL database to run on instead of SQLite (a schema of its own is made "
        "there for the run and dropped after).",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be 1 or more, not {args.rounds}")
    args.workers = args.workers or [1]
    if min(args.workers) < 1:
        parser.error(f"--workers must be 1 or more, not {min(args.workers)}")
    if max(args.workers) > 1 and not args.database_url:
        parser.error("several workers need PostgreSQL (--database-url): SQLite serves one process")

    workdir = Path(tempfile.mkdtemp(prefix="refund-risk-bench-"))
    env = {
        **os.environ,
        "REFUND_RISK_DATA_DIR": str(workdir / "data"),
        "REFUND_RISK_MLRUNS_DIR": str(workdir / "mlruns"),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name in (
        "REFUND_RISK_DATABASE_URL",
        "REFUND_RISK_MLFLOW_TRACKING_URI",
        "REFUND_RISK_DATABASE_SCHEMA",
    ):
        env.pop(name, None)
    os.environ.update(
        {k: env[k] for k in ("REFUND_RISK_DATA_DIR", "REFUND_RISK_MLRUNS_DIR", "OMP_NUM_THREADS")}
    )
    for name in (
        "REFUND_RISK_DATABASE_URL",
        "REFUND_RISK_MLFLOW_TRACKING_URI",
        "REFUND_RISK_DATABASE_SCHEMA",
    ):
        os.environ.pop(name, None)
    schema = None
    try:
        if args.database_url:
            schema = _make_schema(args.database_url)
            database = {"REFUND_RISK_DATABASE_URL": args.database_url}
            database["REFUND_RISK_DATABASE_SCHEMA"] = schema
            env.update(database)
            os.environ.update(database)
        bodies, after = prepare(args.customers, args.seed, args.templates)
        token = _create_key(env)
        available = sorted(os.sched_getaffinity(0))
        server_cpus = {available[-1]} if args.pin and len(available) >= 2 else None
        if server_cpus:
            os.sched_setaffinity(0, set(available[:-1]))
        by_workers: dict[int, dict[str, Measured]] = {}
        for workers in args.workers:
            results, turns, batch = measure(workers, bodies, after, token, env, server_cpus, args)
            by_workers[workers] = results
            if len(args.workers) > 1:
                print(f"\n== {workers} worker{'s' if workers > 1 else ''} ==")
            report(results, args, workers)
            if args.rounds > 1:
                print(
                    "by round, bare / scoring req/s (share): "
                    + ", ".join(
                        f"{b.load.throughput:,.0f} / {s.load.throughput:,.0f} "
                        f"({s.load.throughput / b.load.throughput:.2f})"
                        for b, s in zip(turns["bare"], turns["scoring"], strict=True)
                    )
                )
            print(f"decisions per database transaction: {batch:.1f}")
        if len(by_workers) > 1:
            report_workers(by_workers)
        stages = _stage_times()
        print(
            "scoring, inside the decision (ms, mean over recorded decisions): "
            + ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
        )
    finally:
        if schema is not None:
            _drop_schema(args.database_url, schema)
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def measure(
    workers: int,
    bodies: list[dict[str, Any]],
    after: pd.Timestamp,
    token: str,
    env: dict[str, str],
    server_cpus: set[int] | None,
    args: argparse.Namespace,
) -> tuple[dict[str, Measured], dict[str, list[Measured]], float]:
    """Both servers with `workers` worker processes each, driven in alternating turns."""
    bin_dir = Path(sys.executable).parent
    # Each customer's features are built in memory on their first request after start-up;
    # by default the warm-up lasts until every customer the load is about has been asked
    # about once, so the figures are those of a service that has been running a while.
    warm = len(bodies) if args.warm_customers else 0
    echo_port, serve_port = _free_port(), _free_port()
    echo = [sys.executable, "-m", "bench.echo_app", "--port", str(echo_port)]
    echo += ["--workers", str(workers)]
    serve = [
        str(bin_dir / "refund-risk"),
        "serve",
        "--port",
        str(serve_port),
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    ]
    # Each run's refund ids are its own: a later run must decide anew, not replay.
    tag = f"w{workers}"
    with (
        server(echo, echo_port, env, server_cpus, workers) as echo_process,
        server(serve, serve_port, env, server_cpus, workers, "/readyz") as serve_process,
    ):
        endpoints = {
            "bare": (
                echo_process,
                echo_port,
                _requests(bodies, after, echo_port, {}, f"echo-{tag}"),
            ),
            "scoring": (
                serve_process,
                serve_port,
                _requests(bodies, after, serve_port, {"X-API-Key": token}, f"bench-{tag}"),
            ),
        }
        rounds = args.rounds
        turns: dict[str, list[Measured]] = {name: [] for name in endpoints}
        for turn in range(rounds):
            for name, (process, port, next_request) in endpoints.items():
                turns[name].append(
                    drive(
                        process,
                        port,
                        next_request,
                        args.connections,
                        args.seconds / rounds,
                        args.warmup if turn == 0 else 1.0,
                        warm if turn == 0 else 0,
                    )
                )
        batch = _write_batch(serve_port)
    results = {name: Measured.combined(parts) for name, parts in turns.items()}
    return results, turns, batch


def report_workers(by_workers: dict[int, dict[str, Measured]]) -> None:
    """Decisions per second for each number of workers, against one worker's."""
    print("\nworkers  decisions/s  bare req/s  scoring/bare  decisions/s vs 1 worker")
    base = by_workers.get(1, by_workers[min(by_workers)])["scoring"].load.throughput
    for workers, results in sorted(by_workers.items()):
        scoring = results["scoring"].load.throughput
        bare = results["bare"].load.throughput
        print(
            f"{workers:>7}  {scoring:>11,.0f}  {bare:>10,.0f}  {scoring / bare:>12.2f}  "
            f"{scoring / base:>23.2f}"
        )
    if 1 in by_workers and 2 in by_workers:
        ratio = by_workers[2]["scoring"].load.throughput / base
        met = "met" if ratio >= TARGET_WORKER_SCALING else "NOT met"
        print(
            f"2 workers / 1 worker, decisions/s: {ratio:.2f} "
            f"(target >= {TARGET_WORKER_SCALING:.1f}: {met})"
        )


def _write_batch(port: int) -> float:
    """Mean decisions per transaction, from the service's own metrics."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    text = b"".join(chunks).decode(errors="replace")
    figures = {}
    for line in text.splitlines():
        if line.startswith("refund_risk_decision_write_batch_size_"):
            name, value = line.split(" ", 1)
            figures[name.rsplit("_", 1)[-1]] = float(value)
    return figures.get("sum", 0.0) / max(figures.get("count", 0.0), 1.0)


def _stage_times() -> dict[str, float]:
    """Mean time per stage of the recorded decisions (their own `timing`)."""
    import sqlalchemy as sa

    from features.store import create_store_engine
    from refund_risk.settings import load_settings

    settings = load_settings()
    assert settings.database_url is not None
    engine = create_store_engine(settings.database_url, schema=settings.database_schema)
    with engine.connect() as connection:
        bodies = connection.execute(sa.text("SELECT response FROM serving_decisions")).scalars()
        timings = [json.loads(body)["timing"] for body in bodies]
    engine.dispose()
    if not timings:
        return {}
    return {k: float(np.mean([t[k] for t in timings])) for k in timings[0]}


def _make_schema(url: str) -> str:
    """A new, empty schema for this run in the PostgreSQL database at `url`."""
    import secrets

    import sqlalchemy as sa

    schema = f"refund_risk_bench_{secrets.token_hex(4)}"
    try:
        engine = sa.create_engine(url)
    except sa.exc.ArgumentError as exc:
        raise SystemExit(f"--database-url: not a database URL: {url!r} ({exc})") from None
    if engine.dialect.name != "postgresql":
        raise SystemExit(f"--database-url must name a PostgreSQL database, not {url!r}")
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        first = str(exc.orig or exc).strip().splitlines()[0]
        raise SystemExit(f"--database-url: the database is not reachable: {first}") from None
    finally:
        engine.dispose()
    return schema


def _drop_schema(url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def _create_key(env: dict[str, str]) -> str:
    from features.store import create_store_engine
    from refund_risk.settings import load_settings
    from serving import db
    from serving.auth import Role, create_key

    settings = load_settings()
    assert settings.database_url is not None
    engine = create_store_engine(settings.database_url, schema=settings.database_schema)
    db.migrate(engine)
    _, token = create_key(engine, Role.SCORER, "benchmark")
    engine.dispose()
    return token


def report(results: dict[str, Measured], args: argparse.Namespace, workers: int = 1) -> None:
    """Print both runs and the two ratios the targets are about."""
    bare, scoring = results["bare"].load.summary(), results["scoring"].load.summary()
    warm = "every customer asked about once first" if args.warm_customers else "fresh start"
    print(
        f"\nPOST {PATH}: {args.connections} connections, {args.seconds:g} s each in "
        f"{args.rounds} alternating turns, after a warm-up of {args.warmup:g} s or more "
        f"({warm}), {args.customers:,}-customer world, "
        f"{'PostgreSQL' if args.database_url else 'SQLite'}, {workers} worker(s) per server"
    )
    print(
        f"{'endpoint':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} "
        f"{'errors':>7} {'server CPU us/req':>18} {'of it, main process':>20}"
    )
    for name, figures in (("bare", bare), ("scoring", scoring)):
        cpu = results[name].cpu_us_per_request
        # With several workers the main process is uvicorn's supervisor, not an event loop.
        loop = results[name].loop_cpu_us_per_request if workers == 1 else None
        print(
            f"{name:<10} {figures['throughput_rps']:>9,.0f} {figures['p50_ms']:>8.2f} "
            f"{figures['p99_ms']:>8.2f} {figures['mean_ms']:>8.2f} {figures['errors']:>7.0f} "
            f"{'n/a' if cpu is None else f'{cpu:,.0f}':>18} "
            f"{'n/a' if loop is None else f'{loop:,.0f}':>20}"
        )
    share = scoring["throughput_rps"] / bare["throughput_rps"]
    p99 = scoring["p99_ms"] / bare["p99_ms"]
    print(
        f"scoring throughput / bare: {share:.2f} (target >= {TARGET_THROUGHPUT_SHARE:.2f}: "
        f"{'met' if share >= TARGET_THROUGHPUT_SHARE else 'NOT met'})"
    )
    print(
        f"scoring p99 / bare p99:    {p99:.2f} (target < {TARGET_P99_RATIO:.1f}: "
        f"{'met' if p99 < TARGET_P99_RATIO else 'NOT met'})"
    )
    cpus = [results[n].cpu_us_per_request for n in ("bare", "scoring")]
    if cpus[0] and cpus[1]:
        print(f"bare CPU / scoring CPU per request: {cpus[0] / cpus[1]:.2f}")
    loops = [results[n].loop_cpu_us_per_request for n in ("bare", "scoring")]
    if loops[0] and loops[1] and workers == 1:
        print(
            f"bare / scoring main-process CPU per request: {loops[0] / loops[1]:.2f} "
            "(the event loop's share of the work: throughput follows it)"
        )
    statuses = results["scoring"].load.statuses
    if set(statuses) - {200}:
        print(f"scoring answers by status: {statuses}")
    if args.json:
        for name in ("bare", "scoring"):
            figures = bare if name == "bare" else scoring
            figures["cpu_us_per_request"] = results[name].cpu_us_per_request or float("nan")
            figures["main_process_cpu_us_per_request"] = results[
                name
            ].loop_cpu_us_per_request or float("nan")
        print(
            json.dumps(
                {"bare": bare, "scoring": scoring, "throughput_share": share, "p99_ratio": p99}
            )
        )


if __name__ == "__main__":
    main()
