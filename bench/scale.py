"""Start time, memory and a customer's first decision, for a world already in the event store.

    python -m bench.scale --raw DIR [--first 500] [--concurrency 8] [--load-seconds 600]

The service is configured as `refund-risk serve` is, from the environment
(`REFUND_RISK_DATABASE_URL`, `REFUND_RISK_DATABASE_SCHEMA`, `REFUND_RISK_MLRUNS_DIR`, ...): the
world's history must already be ingested there (`refund-risk features ingest RAW --replace`) and
models promoted in that MLflow store. `--raw` is the world's raw folder, from which request
templates are drawn: distinct customers with history, each on their latest delivered order.

1. `refund-risk serve` is started; the seconds to its first `/healthz` 200 (liveness) and first
   `/readyz` 200 (readiness) are taken from the moment the process is launched, and its resident
   memory (the process and its children) when ready.
2. Each customer's first decision since start: `--first` distinct customers sent one at a time,
   then `--first` other customers over `--concurrency` connections; p50 and p99 latency of each.
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

    def add(self, latency: float, status: int) -> None:
        """Count one answered request."""
        self.latencies.append(latency)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def ms(self, q: float) -> float:
        """Latency at quantile `q`, milliseconds."""
        return LoadResult(len(self.latencies), 0, 1.0, self.latencies, {}).percentile(q)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return int(head[9:12])


async def _send_all(
    port: int, requests: list[bytes], connections: int, at: list[float] | None = None
) -> Timed:
    """Send `requests` over `connections` keep-alive connections, each taking the next one;
    with `at` (seconds from the start, one per request), not before that time, and latency is
    counted from it (so a late send counts against the server, not the load)."""
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
                status = await _exchange(reader, writer, request)
                timed.add(time.perf_counter() - start, status)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return timed


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> None:
    """Run the four steps and print a table of the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw", type=Path, required=True, help="The world's raw folder.")
    parser.add_argument("--label", default="", help="A name for the world in the table.")
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
    if not (args.raw / "orders.parquet").exists():
        parser.error(f"--raw: no orders.parquet in {args.raw}")

    began = time.perf_counter()
    bodies, after = pick_templates(args.raw, 2 * args.first + args.load_customers, args.seed)
    if len(bodies) < 2 * args.first + 1:
        raise SystemExit(f"only {len(bodies)} customers with a delivered order in {args.raw}")
    print(f"templates: {len(bodies):,} ({time.perf_counter() - began:.1f} s)", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    token = _create_key(env)
    headers = {"X-API-Key": token}
    port = _free_port()
    tag = f"scale-{int(time.time())}"
    serve = [str(Path(sys.executable).parent / "refund-risk"), "serve", "--port", str(port)]
    serve += ["--log-level", "warning"]
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

    figures = {
        "healthz_s": started.healthz_seconds,
        "readyz_s": started.readyz_seconds,
        "rss_ready_bytes": started.rss_bytes,
        "first_1_p50_ms": one_by_one.ms(0.5),
        "first_1_p99_ms": one_by_one.ms(0.99),
        f"first_{args.concurrency}_p50_ms": together.ms(0.5),
        f"first_{args.concurrency}_p99_ms": together.ms(0.99),
        "capacity_rps": capacity.throughput,
        "load_rps": len(paced.latencies) / args.load_seconds,
        "load_p99_ms": paced.ms(0.99),
        "rss_after_load_bytes": rss_after,
        "rss_peak_bytes": peak[0],
    }
    load_avg = os.getloadavg()[0]
    print(
        f"\nworld {args.label or args.raw}: refund-risk serve, 1 worker, configured from env; "
        f"machine load average {load_avg:.1f} on {os.cpu_count()} cores at the end"
    )
    print(f"{'figure':<52} {'measured':>14}  target")
    rows = [
        (
            "seconds to first /healthz 200",
            f"{started.healthz_seconds:.2f} s",
            "< 1 s: " + _met(started.healthz_seconds < 1.0),
        ),
        (
            "seconds to first /readyz 200",
            f"{started.readyz_seconds:.2f} s",
            "< 5 s: " + _met(started.readyz_seconds < TARGET_READY_SECONDS),
        ),
        ("resident memory when ready", _mib(started.rss_bytes), ""),
        (
            f"first decision, one at a time, p50 / p99 ({args.first})",
            f"{one_by_one.ms(0.5):.2f} / {one_by_one.ms(0.99):.2f} ms",
            "p99 < 5 ms: " + _met(one_by_one.ms(0.99) < TARGET_FIRST_P99_MS),
        ),
        (
            f"first decision, {args.concurrency} at once, p50 / p99 ({args.first})",
            f"{together.ms(0.5):.2f} / {together.ms(0.99):.2f} ms",
            "",
        ),
        (
            f"capacity, {args.concurrency} connections, closed loop",
            f"{capacity.throughput:,.0f} /s",
            "",
        ),
        (
            f"load: {args.load_share:g} of capacity for {args.load_seconds:g} s",
            f"{figures['load_rps']:,.0f} /s",
            "",
        ),
        ("load latency p50 / p99", f"{paced.ms(0.5):.2f} / {paced.ms(0.99):.2f} ms", ""),
        (
            "resident memory after the load (peak)",
            f"{_mib(rss_after)} ({_mib(peak[0])})",
            "< 1 GiB: " + _met(peak[0] < TARGET_RSS_BYTES),
        ),
    ]
    for name, value, target in rows:
        print(f"{name:<52} {value:>14}  {target}")
    errors = {
        k: v for t in (one_by_one, together, paced) for k, v in t.statuses.items() if k != 200
    }
    if errors or capacity.errors:
        print(f"answers other than 200: {errors}, capacity run errors: {capacity.errors}")
    if args.json:
        print(json.dumps(figures))


def _first_decisions(
    bodies: list[dict[str, Any]],
    after: pd.Timestamp,
    port: int,
    headers: dict[str, str],
    tag: str,
    connections: int,
) -> Timed:
    make = _requests(bodies, after, port, headers, tag)
    return asyncio.run(_send_all(port, [make() for _ in bodies], connections))


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
