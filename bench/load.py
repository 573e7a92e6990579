"""A closed-loop HTTP/1.1 load generator on raw asyncio streams.

Each of `connections` keep-alive connections sends one request, waits for the whole answer, and
sends the next, for a fixed time; latencies are taken per request. It writes pre-built request
bytes and reads answers by Content-Length, with no HTTP client library in the way: on one core
it drives several times the request rate a one-worker FastAPI server answers, so the server is
what is measured. It runs in its own process (see `bench.run`), never in the server's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """What one run measured."""

    requests: int
    errors: int
    seconds: float
    latencies: list[float] = field(repr=False)
    statuses: dict[int, int]

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency at quantile `q` (0-1), in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index] * 1000.0

    def summary(self) -> dict[str, float]:
        """Throughput, p50, p99 and mean latency (ms), errors."""
        return {
            "requests": float(self.requests),
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile(0.50), 3),
            "p99_ms": round(self.percentile(0.99), 3),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000.0, 3)
            if self.latencies
            else float("nan"),
            "errors": float(self.errors),
        }


def http_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 POST request with a JSON body, as bytes."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


async def _connection(
    host: str,
    port: int,
    next_request: Callable[[], bytes],
    warm_until: float,
    stop_at: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    errors = 0
    clock = time.perf_counter
    try:
        while True:
            started = clock()
            if started >= stop_at:
                break
            writer.write(next_request())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length:
                await reader.readexactly(length)
            done = clock()
            if started >= warm_until:
                latencies.append(done - started)
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 400:
                    errors += 1
    finally:
        writer.close()
    return errors


async def _run(
    host: str,
    port: int,
    next_request: Callable[[], bytes],
    connections: int,
    seconds: float,
    warmup: float,
) -> LoadResult:
    begin = time.perf_counter()
    warm_until = begin + warmup
    stop_at = warm_until + seconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = await asyncio.gather(
        *(
            _connection(host, port, next_request, warm_until, stop_at, latencies, statuses)
            for _ in range(connections)
        )
    )
    measured = max(time.perf_counter(), stop_at) - warm_until
    return LoadResult(len(latencies), sum(errors), measured, latencies, statuses)


def run_load(
    host: str,
    port: int,
    next_request: Callable[[], bytes],
    connections: int = 32,
    seconds: float = 15.0,
    warmup: float = 3.0,
) -> LoadResult:
    """Drive the server for `warmup` + `seconds`; measure only after the warm-up."""
    try:
        import uvloop

        runner: Callable[..., LoadResult] = uvloop.run
    except ImportError:  # plain asyncio: slower, still several times the server's rate
        runner = asyncio.run
    return runner(_run(host, port, next_request, connections, seconds, warmup))
