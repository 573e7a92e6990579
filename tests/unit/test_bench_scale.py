"""The start-and-memory benchmark's own arithmetic: memory read from /proc, the paced schedule,
and request templates drawn from a raw world without loading every order."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.scale import (
    TABLE_ROWS,
    World,
    format_table,
    paced_schedule,
    parse_world,
    pick_templates,
    rss_bytes_from_status,
    service_total_ms,
    target_met,
)

STATUS = """Name:\tpython
VmPeak:\t  900000 kB
VmSize:\t  800000 kB
VmHWM:\t  700000 kB
VmRSS:\t  123456 kB
RssAnon:\t  100000 kB
"""


def test_resident_memory_is_vmrss_not_the_peak_or_size() -> None:
    assert rss_bytes_from_status(STATUS) == 123456 * 1024


def test_a_status_without_vmrss_is_no_memory() -> None:
    assert rss_bytes_from_status("Name:\tzombie\nState:\tZ (zombie)\n") == 0


def test_an_unknown_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="VmRSS"):
        rss_bytes_from_status("VmRSS:\t 12 MB\n")


@given(
    rate=st.floats(min_value=0.5, max_value=500.0),
    seconds=st.floats(min_value=0.5, max_value=60.0),
)
@settings(max_examples=200, deadline=None)
def test_the_paced_schedule_keeps_the_rate_and_the_time(rate: float, seconds: float) -> None:
    schedule = paced_schedule(rate, seconds)
    assert len(schedule) == int(rate * seconds)
    assert all(0 <= t < seconds for t in schedule)
    gaps = [b - a for a, b in itertools.pairwise(schedule)]
    assert all(g == pytest.approx(1 / rate) for g in gaps)


@pytest.mark.parametrize(("rate", "seconds"), [(0, 10), (10, 0), (-1, 5)])
def test_a_paced_load_needs_a_positive_rate_and_time(rate: float, seconds: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        paced_schedule(rate, seconds)


def _world(raw: Path) -> None:
    t = pd.Timestamp("2026-01-01")
    customers = pd.DataFrame({"customer_id": [f"c{i}" for i in range(30)]})
    orders = pd.DataFrame(
        {
            "order_id": [f"o{i}-{j}" for i in range(30) for j in range(2)],
            "customer_id": [f"c{i}" for i in range(30) for _ in range(2)],
            "ordered_at": [t + pd.Timedelta(days=j + i) for i in range(30) for j in range(2)],
            "category": "apparel",
            "amount": 50.0,
            "item_count": 1,
            "payment_method": "card",
            "device_id": "d",
            "address_id": "a",
            "payment_fingerprint": "p",
            "shipped_at": [t + pd.Timedelta(days=j + i + 1) for i in range(30) for j in range(2)],
            # customers c0-c9 never had an order delivered: they cannot be templates
            "delivered_at": [
                pd.NaT if i < 10 else t + pd.Timedelta(days=j + i + 2)
                for i in range(30)
                for j in range(2)
            ],
            "delivery_evidence": "signed",
        }
    )
    refunds = pd.DataFrame(
        {
            "order_id": ["o10-0"],
            "requested_at": [t + pd.Timedelta(days=20)],
            "refund_type": ["return_and_refund"],
            "reason": ["changed_mind"],
            "reason_detail": [""],
            "amount_requested": [25.0],
            "photo_count": [0],
        }
    )
    customers.to_parquet(raw / "customers.parquet")
    orders.to_parquet(raw / "orders.parquet")
    refunds.to_parquet(raw / "refund_requests.parquet")


def test_templates_are_distinct_customers_on_their_latest_delivered_order(tmp_path: Path) -> None:
    _world(tmp_path)
    bodies, after = pick_templates(tmp_path, 8, seed=3)
    customers = [b["customer_id"] for b in bodies]
    assert len(customers) == len(set(customers)) == 8
    for body in bodies:
        n = int(body["customer_id"][1:])
        assert n >= 10
        assert body["order"]["order_id"] == f"o{n}-1"
        assert body["amount_requested"] == 25.0
    # the history ends at the last delivery (c29, day 32), after the last refund request
    assert after == pd.Timestamp("2026-01-01") + pd.Timedelta(days=32)


def test_a_world_is_a_label_a_raw_folder_and_perhaps_a_schema(tmp_path: Path) -> None:
    _world(tmp_path)
    assert parse_world(f"1M={tmp_path}@w1m") == World("1M", tmp_path, "w1m")
    assert parse_world(f"20k={tmp_path}") == World("20k", tmp_path, None)


@pytest.mark.parametrize("text", ["nolabel", "=somewhere", "x=", "x=/nowhere/at/all"])
def test_a_world_without_a_label_or_raw_tables_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_world(text)


def test_the_in_service_time_is_read_from_a_decision_and_nothing_else() -> None:
    assert service_total_ms(b'{"action":"x","timing":{"total_ms":3.25}}') == 3.25
    assert service_total_ms(b'{"error":{"code":"starting"}}') is None
    assert service_total_ms(b"not json") is None
    assert service_total_ms(b"[1, 2]") is None


@pytest.mark.parametrize(
    ("key", "value", "met"),
    [
        ("readyz_s", 4.99, True),
        ("readyz_s", 5.0, False),
        ("healthz_s", 0.5, True),
        ("healthz_s", 1.0, False),
        ("first_service_p99_ms", 4.9, True),
        ("first_service_p99_ms", 5.1, False),
        ("rss_peak_mib", 1023.0, True),
        ("rss_peak_mib", 1024.0, False),
        ("capacity_rps", 1.0, None),
    ],
)
def test_each_target_is_the_issues(key: str, value: float, met: bool | None) -> None:
    assert target_met(key, value) is met


def test_one_table_has_a_column_per_world_and_says_which_targets_every_world_met() -> None:
    good = {key: 1.0 for _, key, _ in TABLE_ROWS} | {"healthz_s": 0.5}
    results = {"20k": good, "1M": {**good, "readyz_s": 7.5}}
    table = format_table(results).splitlines()
    assert table[0].split()[-3:] == ["20k", "1M", "target"]
    assert len(table) == 1 + len(TABLE_ROWS)
    ready = next(line for line in table if line.startswith("seconds to first /readyz"))
    assert ready.split()[-7:-4] == ["1.00", "7.50", "<"]
    assert ready.endswith("NOT met")
    live = next(line for line in table if line.startswith("seconds to first /healthz"))
    assert live.endswith(" met") and not live.endswith("NOT met")


def test_a_connection_the_server_closed_while_idle_is_opened_again() -> None:
    """A server closes a keep-alive connection after each answer (as uvicorn does one left
    idle past its keep-alive): every request is still sent and answered."""
    import asyncio

    from bench.scale import _send_all

    answered: list[bytes] = []

    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answered.append(await reader.readexactly(length))
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\n{"timing": {"total_ms": 2.5}}')
        await writer.drain()
        writer.close()

    async def run() -> Any:
        server = await asyncio.start_server(one_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        requests = [
            f"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nr{i:02d}".encode()
            for i in range(5)
        ]
        async with server:
            return await _send_all(port, requests, 1, read_timing=True)

    timed = asyncio.run(run())
    assert sorted(answered) == [f"r{i:02d}".encode() for i in range(5)]
    assert timed.statuses == {200: 5}
    assert timed.service_ms(0.5) == 2.5
