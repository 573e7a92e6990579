"""Start time, memory and a customer's first decision, for worlds already in the event store.

    python -m bench.scale --world 20k=RAW_20K@SCHEMA_20K --world 200k=RAW_200K@SCHEMA_200K \
        --world 1M=RAW_1M@SCHEMA_1M [--first 500] [--concurrency 8] [--load-seconds 600]
    python -m bench.scale --raw DIR      # one world, in REFUND_RISK_DATABASE_SCHEMA

The service is configured as `refund-risk serve` is, from the environment
(`REFUND_RISK_DATABASE_URL`, `REFUND_RISK_DATABASE_SCHEMA`, `REFUND_RISK_MLRUNS_DIR`, ...); a
world's `@SCHEMA` replaces the schema for that world. Each world's history must already be
ingested there (`refund-risk features ingest RAW --replace`) and models promoted in the MLflow
store. A world's raw folder is where request templates are drawn from: distinct customers with
history, each on their latest delivered order. The worlds are measured one after the other and
printed as one table, a column per world, with the machine's load average around the runs.

1. `refund-risk serve` is started; the seconds to its first `/healthz` 200 (liveness) and first
   `/readyz` 200 (readiness) are taken from the moment the process is launched, and its resident
   memory (the process and its children) when ready.
2. Each customer's first decision since start: `--first` distinct customers sent one at a time,
   then `--first` other customers over `--concurrency` connections; p50 and p99 latency of each,
   and of the time the decisions took inside the service (their `timing.total_ms`: the
   customer's history read, features, scores and policy, without the HTTP round trip).
3. Capacity: a closed loop over `--concurrency` connections for `--capacity-seconds`.
4. A paced load at `--load-share` of that capacity for `--load-seconds` over
   `--load-customers` customers; resident memory after it (and its peak while it ran).

Figures are printed, not asserted; the targets are printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.load import LoadResult, run_load
from bench.run import _create_key, _descendants, _free_port, _requests, request_bodies

TARGET_READY_SECONDS = 5.0
TARGET_RSS_BYTES = 1 << 30
TARGET_FIRST_P99_MS = 5.0


def rss_bytes_from_status(text: str) -> int:
    """Resident memory in bytes from the text of a /proc/PID/status file (0 if absent)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit.lower() != "kb":
                raise ValueError(f"VmRSS: unexpected unit {unit!r}")
            return int(value) * 1024
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, bytes (processes gone: 0)."""
    total = 0
    for each in (pid, *_descendants(pid)):
        try:
            total += rss_bytes_from_status(Path(f"/proc/{each}/status").read_text())
        except OSError:
            continue
    return total


def paced_schedule(rate: float, seconds: float) -> list[float]:
    """Send times (seconds from the start) of a load at `rate` requests/s for `seconds`."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive, not {rate} and {seconds}")
    count = int(rate * seconds)
    return [i / rate for i in range(count)]


def pick_templates(raw: Path, count: int, seed: int) -> tuple[list[dict[str, Any]], pd.Timestamp]:
    """`count` request templates on distinct customers, read from a raw world's Parquet files
    without loading every order: a sample of customers first, then only their orders."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ids = pq.read_table(raw / "customers.parquet", columns=["customer_id"]).column(0)
    chosen = ids.take(rng.permutation(len(ids))[: count * 3])
    orders = pq.read_table(raw / "orders.parquet")
    orders = orders.filter(pc.is_in(orders["customer_id"], value_set=chosen)).to_pandas()
    refunds = pq.read_table(raw / "refund_requests.parquet")
    refunds = refunds.take(rng.integers(0, len(refunds), min(len(refunds), 50_000))).to_pandas()
    end_table = pq.read_table(raw / "orders.parquet", columns=["ordered_at", "delivered_at"])
    ends = [pc.max(end_table[c]).as_py() for c in ("ordered_at", "delivered_at")]
    ends.append(
        pc.max(pq.read_table(raw / "refund_requests.parquet", columns=["requested_at"])[0]).as_py()
    )
    tables = {"orders": orders, "refund_requests": refunds}
    bodies, _ = request_bodies(tables, count, seed)
    return bodies, pd.Timestamp(max(e for e in ends if e is not None))


@dataclass
class Started:
    """When a launched server first answered each health path, and its memory when ready."""

    healthz_seconds: float
    readyz_seconds: float
    rss_bytes: int


def _get_status(port: int, path: str) -> int | None:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            head = s.recv(64)
        return int(head[9:12])
    except (OSError, ValueError):
        return None


def wait_started(
    process: subprocess.Popen[bytes], port: int, launched: float, timeout: float
) -> Started:
    """Poll both health paths every 10 ms until both have answered 200."""
    seen: dict[str, float] = {}
    while len(seen) < 2:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        if time.monotonic() - launched > timeout:
            raise RuntimeError(f"the server was not ready after {timeout:g} s: {seen}")
        for path in ("/healthz", "/readyz"):
            if path not in seen and _get_status(port, path) == 200:
                seen[path] = time.monotonic() - launched
        time.sleep(0.01)
    return Started(seen["/healthz"], seen["/readyz"], tree_rss_bytes(process.pid))


@dataclass
class Timed:
    """Latencies (seconds) and answers by status of a set of requests."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    service: list[float] = field(default_factory=list)
    """Seconds each decision took inside the service (its `timing.total_ms`), when read."""

    def add(self, latency: float, status: int, service_ms: float | None = None) -> None:
        """Count one answered request."""
        self.latencies.append(latency)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if service_ms is not None:
            self.service.append(service_ms / 1000.0)

    def ms(self, q: float) -> float:
        """Latency at quantile `q`, milliseconds."""
        return LoadResult(len(self.latencies), 0, 1.0, self.latencies, {}).percentile(q)

    def service_ms(self, q: float) -> float:
        """In-service time at quantile `q`, milliseconds (NaN if none was read)."""
        return LoadResult(len(self.service), 0, 1.0, self.service, {}).percentile(q)


def service_total_ms(body: bytes) -> float | None:
    """`timing.total_ms` of a decision's JSON body (None for another answer)."""
    try:
        found = json.loads(body).get("timing", {}).get("total_ms")
    except (ValueError, AttributeError):
        return None
    return float(found) if isinstance(found, int | float) else None


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), body


async def _send_all(
    port: int,
    requests: list[bytes],
    connections: int,
    at: list[float] | None = None,
    read_timing: bool = False,
) -> Timed:
    """Send `requests` over `connections` keep-alive connections, each taking the next one;
    with `at` (seconds from the start, one per request), not before that time, and latency is
    counted from it (so a late send counts against the server, not the load). `read_timing`:
    also keep each decision's time inside the service."""
    timed = Timed()
    queue = list(enumerate(requests))
    queue.reverse()
    began = time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                index, request = queue.pop()
                start = time.perf_counter()
                if at is not None:
                    due = began + at[index]
                    if due > start:
                        await asyncio.sleep(due - start)
                    start = due
                try:
                    status, body = await _exchange(reader, writer, request)
                except (asyncio.IncompleteReadError, ConnectionError):
                    # The server closed a connection left idle past its keep-alive (a slow
                    # paced load): send again on a new one. A request it did decide is
                    # answered from the stored decision (same refund id).
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    status, body = await _exchange(reader, writer, request)
                inside = service_total_ms(body) if read_timing and status == 200 else None
                timed.add(time.perf_counter() - start, status, inside)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return timed


@dataclass(frozen=True)
class World:
    """A world to measure: its label, raw folder, and the schema its history was ingested
    into (None: the environment's)."""

    label: str
    raw: Path
    schema: str | None = None


def parse_world(text: str) -> World:
    """`LABEL=RAW_DIR` or `LABEL=RAW_DIR@SCHEMA` (argparse type)."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"expected LABEL=RAW_DIR[@SCHEMA], not {text!r}")
    raw, _, schema = rest.partition("@")
    if not (Path(raw) / "orders.parquet").exists():
        raise argparse.ArgumentTypeError(f"no orders.parquet in {raw}")
    return World(label, Path(raw), schema or None)


TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("seconds to first /healthz 200", "healthz_s", "< 1 s"),
    ("seconds to first /readyz 200", "readyz_s", "< 5 s"),
    ("resident memory when ready (MiB)", "rss_ready_mib", "< 1024"),
    ("first decision in service p50 (ms)", "first_service_p50_ms", ""),
    ("first decision in service p99 (ms)", "first_service_p99_ms", "< 5"),
    ("first decision, one at a time, p50 (ms)", "first_1_p50_ms", ""),
    ("first decision, one at a time, p99 (ms)", "first_1_p99_ms", ""),
    ("first decision, N at once, p50 (ms)", "first_n_p50_ms", ""),
    ("first decision, N at once, p99 (ms)", "first_n_p99_ms", ""),
    ("capacity, closed loop (decisions/s)", "capacity_rps", ""),
    ("paced load (decisions/s)", "load_rps", ""),
    ("paced load latency p99 (ms)", "load_p99_ms", ""),
    ("resident memory after the load (MiB)", "rss_after_load_mib", "< 1024"),
    ("resident memory, peak during the load (MiB)", "rss_peak_mib", "< 1024"),
)


def target_met(key: str, value: float) -> bool | None:
    """Whether a figure meets the issue's target (None: the figure has none)."""
    limits = {
        "healthz_s": 1.0,
        "readyz_s": TARGET_READY_SECONDS,
        "rss_ready_mib": TARGET_RSS_BYTES / (1 << 20),
        "first_service_p99_ms": TARGET_FIRST_P99_MS,
        "rss_after_load_mib": TARGET_RSS_BYTES / (1 << 20),
        "rss_peak_mib": TARGET_RSS_BYTES / (1 << 20),
    }
    return None if key not in limits else value < limits[key]


def format_table(results: dict[str, dict[str, float]]) -> str:
    """One row per figure, one column per world, the target and whether every world met it."""
    labels = list(results)
    width = max(12, *(len(label) + 2 for label in labels))
    lines = [f"{'figure':<46}" + "".join(f"{label:>{width}}" for label in labels) + "  target"]
    for name, key, target in TABLE_ROWS:
        values = [results[label].get(key, float("nan")) for label in labels]
        cells = "".join(f"{value:>{width},.2f}" for value in values)
        verdicts = {target_met(key, v) for v in values}
        verdict = "" if None in verdicts else (" met" if verdicts == {True} else " NOT met")
        lines.append(f"{name:<46}{cells}  {target}{verdict if target else ''}")
    return "\n".join(lines)


def measure_world(world: World, args: argparse.Namespace) -> dict[str, float]:
    """Start `refund-risk serve` over one world and take its figures."""
    if world.schema is not None:
        os.environ["REFUND_RISK_DATABASE_SCHEMA"] = world.schema
    began = time.perf_counter()
    bodies, after = pick_templates(world.raw, 2 * args.first + args.load_customers, args.seed)
    if len(bodies) < 2 * args.first + 1:
        raise SystemExit(f"only {len(bodies)} customers with a delivered order in {world.raw}")
    print(
        f"{world.label}: templates {len(bodies):,} ({time.perf_counter() - began:.1f} s)",
        file=sys.stderr,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    token = _create_key(env)
    headers = {"X-API-Key": token}
    port = _free_port()
    tag = f"scale-{int(time.time())}"
    serve = [str(Path(sys.executable).parent / "refund-risk"), "serve", "--port", str(port)]
    serve += ["--log-level", "warning"]
    load_before = os.getloadavg()[0]
    launched = time.monotonic()
    process = subprocess.Popen(serve, env=env)
    try:
        started = wait_started(process, port, launched, args.start_timeout)
        one_by_one = _first_decisions(bodies[: args.first], after, port, headers, tag + "a", 1)
        together = _first_decisions(
            bodies[args.first : 2 * args.first], after, port, headers, tag + "b", args.concurrency
        )
        loads = bodies[2 * args.first :] or bodies
        next_request = _requests(loads, after, port, headers, tag + "c")
        capacity = run_load(
            "127.0.0.1", port, next_request, args.concurrency, args.capacity_seconds, 2.0
        )
        rate = capacity.throughput * args.load_share
        schedule = paced_schedule(rate, args.load_seconds)
        peak = [0]
        paced = asyncio.run(
            _paced(port, [next_request() for _ in schedule], schedule, args, process.pid, peak)
        )
        rss_after = tree_rss_bytes(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    errors = {
        k: v for t in (one_by_one, together, paced) for k, v in t.statuses.items() if k != 200
    }
    if errors or capacity.errors:
        print(
            f"{world.label}: answers other than 200: {errors}, capacity errors: {capacity.errors}"
        )
    first = Timed(service=one_by_one.service + together.service)
    mib = float(1 << 20)
    return {
        "healthz_s": started.healthz_seconds,
        "readyz_s": started.readyz_seconds,
        "rss_ready_mib": started.rss_bytes / mib,
        "first_service_p50_ms": first.service_ms(0.5),
        "first_service_p99_ms": first.service_ms(0.99),
        "first_1_p50_ms": one_by_one.ms(0.5),
        "first_1_p99_ms": one_by_one.ms(0.99),
        "first_n_p50_ms": together.ms(0.5),
        "first_n_p99_ms": together.ms(0.99),
        "capacity_rps": capacity.throughput,
        "load_rps": len(paced.latencies) / args.load_seconds,
        "load_p99_ms": paced.ms(0.99),
        "rss_after_load_mib": rss_after / mib,
        "rss_peak_mib": peak[0] / mib,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> None:
    """Measure each world in turn and print one table of the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--world",
        type=parse_world,
        action="append",
        default=[],
        metavar="LABEL=RAW_DIR[@SCHEMA]",
        help="A world to measure (repeat for several): its raw folder, and the PostgreSQL "
        "schema its history was ingested into if not REFUND_RISK_DATABASE_SCHEMA.",
    )
    parser.add_argument(
        "--raw", type=Path, help="One world's raw folder (the environment's schema)."
    )
    parser.add_argument("--label", default="", help="A name for the --raw world in the table.")
    parser.add_argument("--first", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--capacity-seconds", type=float, default=15.0)
    parser.add_argument("--load-seconds", type=float, default=600.0)
    parser.add_argument("--load-share", type=float, default=0.5)
    parser.add_argument("--load-customers", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="Also print the figures as JSON.")
    args = parser.parse_args(argv)
    for name in ("first", "concurrency", "load_customers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more")
    if not 0 < args.load_share <= 1:
        parser.error(f"--load-share must be in (0, 1], not {args.load_share}")
    worlds: list[World] = list(args.world)
    if args.raw is not None:
        if not (args.raw / "orders.parquet").exists():
            parser.error(f"--raw: no orders.parquet in {args.raw}")
        worlds.append(World(args.label or str(args.raw), args.raw))
    if not worlds:
        parser.error("name a world: --world LABEL=RAW_DIR[@SCHEMA] or --raw RAW_DIR")
    if len({w.label for w in worlds}) < len(worlds):
        parser.error("each world needs its own label")

    results = {world.label: measure_world(world, args) for world in worlds}
    loads = [
        v for r in results.values() for v in (r["load_average_before"], r["load_average_after"])
    ]
    print(
        f"\nrefund-risk serve, 1 worker, configured from the environment; first decisions: "
        f"{args.first} distinct customers one at a time, then {args.first} others over "
        f"{args.concurrency} connections; load: {args.load_share:g} of the closed-loop capacity "
        f"({args.concurrency} connections, {args.capacity_seconds:g} s) for "
        f"{args.load_seconds:g} s. Machine load average {min(loads):.1f} to {max(loads):.1f} "
        f"on {os.cpu_count()} cores around the runs."
    )
    print(format_table(results))
    if args.json:
        print(json.dumps(results))


def _first_decisions(
    bodies: list[dict[str, Any]],
    after: pd.Timestamp,
    port: int,
    headers: dict[str, str],
    tag: str,
    connections: int,
) -> Timed:
    make = _requests(bodies, after, port, headers, tag)
    return asyncio.run(_send_all(port, [make() for _ in bodies], connections, read_timing=True))


async def _paced(
    port: int,
    requests: list[bytes],
    schedule: list[float],
    args: argparse.Namespace,
    pid: int,
    peak: list[int],
) -> Timed:
    """The paced load, with the server's memory sampled every second meanwhile."""
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_bytes(pid))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    # Enough connections that a slow answer does not hold the next send back.
    timed = await _send_all(port, requests, max(args.concurrency, 16), schedule)
    done.set()
    await sampler
    peak[0] = max(peak[0], tree_rss_bytes(pid))
    return timed


if __name__ == "__main__":
    main()
