"""The load generator's measuring window, and the benchmark's turns added up into one run."""

from __future__ import annotations

from bench.load import LoadResult, _Window
from bench.run import Measured


def test_measuring_starts_after_the_warm_up_time_and_requests() -> None:
    started: list[int] = []
    window = _Window(
        100.0,
        warmup=2.0,
        warmup_requests=3,
        seconds=10.0,
        max_warmup=60.0,
        on_start=lambda: started.append(window.sent),
    )
    window.tick(100.5)
    window.tick(101.0)
    assert window.start is None  # 2 of the 3 warm-up requests, and before the 2 s
    window.tick(102.5)
    assert window.start is None  # the 2 s have passed, but this is the 3rd warm-up request
    window.tick(103.0)  # the first request after both: measuring starts here
    assert window.start == 103.0 and window.stop_at == 113.0
    window.tick(104.0)
    assert window.start == 103.0 and started == [4]  # started once


def test_a_warm_up_in_requests_gives_up_after_the_longest_warm_up() -> None:
    window = _Window(
        0.0, warmup=1.0, warmup_requests=1_000_000, seconds=5.0, max_warmup=30.0, on_start=None
    )
    window.tick(29.0)
    assert window.start is None
    window.tick(30.0)
    assert window.start == 30.0 and window.stop_at == 35.0


def test_without_a_request_count_the_warm_up_is_time_alone() -> None:
    window = _Window(
        0.0, warmup=3.0, warmup_requests=0, seconds=5.0, max_warmup=30.0, on_start=None
    )
    window.tick(2.9)
    assert window.start is None
    window.tick(3.0)
    assert window.start == 3.0


def test_turns_of_one_endpoint_combine_into_one_run() -> None:
    first = Measured(LoadResult(10, 1, 2.0, [0.1] * 10, {200: 9, 503: 1}), (0.5, 0.25))
    second = Measured(LoadResult(30, 0, 2.0, [0.3] * 30, {200: 30}), (1.5, 0.75))
    both = Measured.combined([first, second])
    assert (both.load.requests, both.load.errors, both.load.seconds) == (40, 1, 4.0)
    assert both.load.throughput == 10.0
    assert both.load.statuses == {200: 39, 503: 1}
    assert sorted(both.load.latencies) == [0.1] * 10 + [0.3] * 30
    assert both.loop_cpu_us_per_request == 2.0 / 40 * 1e6
    assert both.cpu_us_per_request == 3.0 / 40 * 1e6
    assert Measured.combined([first, Measured(second.load, None)]).cpu_seconds is None
