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


class _Window:
    """When measuring starts and stops, shared by the connections.

    Measuring starts once the warm-up time has passed and `warmup_requests` requests have been
    sent (whichever comes later, but no later than `max_warmup` seconds), and lasts `seconds`.
    """

    def __init__(
        self,
        begin: float,
        warmup: float,
        warmup_requests: int,
        seconds: float,
        max_warmup: float,
        on_start: Callable[[], None] | None,
    ) -> None:
        self.warm_until = begin + warmup
        self.give_up_warming = begin + max(warmup, max_warmup)
        self.warmup_requests = warmup_requests
        self.seconds = seconds
        self.on_start = on_start
        self.sent = 0
        self.start: float | None = None
        self.stop_at = float("inf")

    def tick(self, now: float) -> None:
        """Count a request about to be sent; start measuring when warm."""
        self.sent += 1
        warm = self.sent > self.warmup_requests or now >= self.give_up_warming
        if self.start is None and now >= self.warm_until and warm:
            self.start = now
            self.stop_at = now + self.seconds
            if self.on_start is not None:
                self.on_start()


async def _connection(
    host: str,
    port: int,
    next_request: Callable[[], bytes],
    window: _Window,
    latencies: list[float],
    statuses: dict[int, int],
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    errors = 0
    clock = time.perf_counter
    try:
        while True:
            started = clock()
            if started >= window.stop_at:
                break
            window.tick(started)
            measured = window.start is not None and started >= window.start
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
            if measured:
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
    warmup_requests: int,
    on_start: Callable[[], None] | None,
) -> LoadResult:
    window = _Window(
        time.perf_counter(), warmup, warmup_requests, seconds, MAX_WARMUP_SECONDS, on_start
    )
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = await asyncio.gather(
        *(
            _connection(host, port, next_request, window, latencies, statuses)
            for _ in range(connections)
        )
    )
    assert window.start is not None
    measured = max(time.perf_counter(), window.stop_at) - window.start
    return LoadResult(len(latencies), sum(errors), measured, latencies, statuses)


MAX_WARMUP_SECONDS = 120.0
"""A warm-up counted in requests ends after this long, however many were sent."""


def run_load(
    host: str,
    port: int,
    next_request: Callable[[], bytes],
    connections: int = 32,
    seconds: float = 15.0,
    warmup: float = 3.0,
    warmup_requests: int = 0,
    on_start: Callable[[], None] | None = None,
) -> LoadResult:
    """Drive the server through a warm-up (`warmup` seconds and at least `warmup_requests`
    requests), then for `seconds`, measured; `on_start` is called when measuring starts."""
    try:
        import uvloop

        runner: Callable[..., LoadResult] = uvloop.run
    except ImportError:  # plain asyncio: slower, still several times the server's rate
        runner = asyncio.run
    return runner(
        _run(host, port, next_request, connections, seconds, warmup, warmup_requests, on_start)
    )
