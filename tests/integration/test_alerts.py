"""Alerts on a generated world: quiet weeks fire nothing; a real spike fires the right alerts
once, delivered signed to a real local HTTP server, retried, every attempt recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from data.generator import generate_world
from features.store import EventStore
from refund_risk.errors import ConfigurationError
from serving import alerts
from serving.db import ALERT_DELIVERIES, ALERT_EVENTS, migrate

pytestmark = [pytest.mark.slow]

SECRET = "alert-signing-secret"


@pytest.fixture(scope="module")
def world_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    """A generated world's history in a SQLite event store, made once; tests copy the file."""
    tables = generate_world(4000, seed=5).tables
    path = tmp_path_factory.mktemp("alerts") / "events.db"
    store = EventStore.open(f"sqlite:///{path}")
    migrate(store.engine)
    store.write_frames(tables)
    store.dispose()
    return path, tables


@pytest.fixture
def store(world_db: tuple[Path, dict[str, pd.DataFrame]], tmp_path: Path) -> Iterator[EventStore]:
    copy = tmp_path / "events.db"
    shutil.copy(world_db[0], copy)
    opened = EventStore.open(f"sqlite:///{copy}")
    try:
        yield opened
    finally:
        opened.dispose()


class Receiver:
    """A local webhook endpoint that fails the first `fail_first` posts, then takes them."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                failing = len(receiver.received) <= receiver.fail_first
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _spike(
    tables: dict[str, pd.DataFrame], at: datetime, n: int
) -> dict[str, list[dict[str, Any]]]:
    """`n` "not received" claims on delivered electronics orders, in the 12 hours before `at`,
    from as many customers."""
    orders = tables["orders"]
    delivered = orders[(orders.category == "electronics") & orders.delivered_at.notna()]
    picked = delivered.drop_duplicates("customer_id").tail(n)
    assert len(picked) == n
    rows = []
    for i, o in enumerate(picked.itertuples()):
        rows.append(
            {
                "refund_id": f"spike{i:03d}",
                "order_id": o.order_id,
                "customer_id": o.customer_id,
                "requested_at": at - timedelta(hours=12) + timedelta(minutes=20 * i),
                "refund_type": "refund_only",
                "reason": "logistics",
                "reason_detail": "not_received",
                "amount_requested": float(o.amount),
                "photo_count": 0,
                "order_stage": "delivered",
            }
        )
    return {"refund_requests": rows}


def _end(tables: dict[str, pd.DataFrame]) -> datetime:
    end: datetime = tables["refund_requests"].requested_at.max().to_pydatetime()
    return end


def test_quiet_weeks_fire_no_alert(
    store: EventStore, world_db: tuple[Path, dict[str, pd.DataFrame]]
) -> None:
    shipped = alerts.load_alerts(None).rules
    # The same rules with a floor of 3 requests: quiet days then rest on the statistical test
    # alone, not on too few requests to count.
    rules = shipped + [
        r.model_copy(update={"id": f"{r.id}_low_floor", "min_count": 3})
        for r in shipped
        if r.test == "poisson"
    ]
    end = _end(world_db[1])
    fired = [
        (f.rule.id, f.subject)
        for day in range(0, 120, 2)
        for f in alerts.evaluate(store.engine, rules, end - timedelta(days=day))
    ]
    assert fired == []


def test_a_spike_fires_the_right_alerts_once_delivered_signed_and_retried(
    store: EventStore, world_db: tuple[Path, dict[str, pd.DataFrame]], tmp_path: Path
) -> None:
    tables = world_db[1]
    now = _end(tables) + timedelta(hours=1)
    store.write(_spike(tables, now, 25))
    receiver = Receiver(fail_first=1)
    try:
        config = tmp_path / "alerts.yaml"
        shipped = alerts.DEFAULT_ALERTS.read_text(encoding="utf-8")
        config.write_text(
            shipped.replace("webhooks: {}", f"webhooks:\n  ops: {{url: '{receiver.url}'}}").replace(
                "notify: []", "notify: [ops]"
            ),
            encoding="utf-8",
        )
        file = alerts.load_alerts(config)
        sender = alerts.Sender(SECRET, attempts=3, first_pause_seconds=0.01)
        sent = alerts.run(store.engine, file, sender, now)
        fired = {(e["rule_id"], e["subject"]) for e in sent}
        assert ("reason_spike", "not_received") in fired
        assert ("category_spike", "electronics") in fired
        assert all(rule != "reason_spike" or subject == "not_received" for rule, subject in fired)
        # Evaluated again while the spike lasts (by this process or another): nothing new.
        assert alerts.run(store.engine, file, sender, now + timedelta(minutes=5)) == []
        assert alerts.run(store.engine, file, sender, now + timedelta(minutes=10)) == []
    finally:
        receiver.close()
    # Each alert reached the receiver, signed; the first post failed and was retried.
    bodies = [json.loads(body) for _, body in receiver.received]
    assert len(receiver.received) == len(sent) + 1
    assert {b["event_id"] for b in bodies} == {e["event_id"] for e in sent}
    for headers, body in receiver.received:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers[alerts.SIGNATURE_HEADER] == expected
    with store.engine.connect() as connection:
        events = connection.execute(sa.select(ALERT_EVENTS)).all()
        attempts = connection.execute(sa.select(ALERT_DELIVERIES)).all()
    assert len(events) == len(sent) and all(e.delivered for e in events)
    assert len(attempts) == len(sent) + 1
    assert sorted(a.status_code for a in attempts) == [204] * len(sent) + [500]
    listed = alerts.recent(store.engine)
    assert {x["event_id"] for x in listed} == {e["event_id"] for e in sent}
    # Once the spike has left the window the alert clears, and a new spike fires it again.
    later = now + timedelta(days=3)
    assert alerts.run(store.engine, file, sender, later) == []
    again = _spike(tables, later, 25)
    for row in again["refund_requests"]:
        row["refund_id"] = "again-" + row["refund_id"]
    store.write(again)
    refired = alerts.run(store.engine, file, alerts.Sender(SECRET, attempts=1), later)
    assert ("reason_spike", "not_received") in {(e["rule_id"], e["subject"]) for e in refired}


def test_a_bad_alerts_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "rules:\n  - {id: x, description: d, window_hours: 24, notify: [nobody]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match="unknown webhook"):
        alerts.load_alerts(path)
    path.write_text(
        "rules:\n  - {id: x, description: d, window_hours: 24, measure: money}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigurationError, match="use test: factor"):
        alerts.load_alerts(path)
    path.write_text("rules:\n  - {id: x, description: d, window_hours: -1}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"rules\.0\.window_hours"):
        alerts.load_alerts(path)


def test_the_service_loop_evaluates_again_and_again_but_sends_each_alert_once(
    store: EventStore, world_db: tuple[Path, dict[str, pd.DataFrame]]
) -> None:
    import asyncio

    tables = world_db[1]
    now = _end(tables) + timedelta(hours=1)
    store.write(_spike(tables, now, 25))
    file = alerts.load_alerts(None)

    async def for_a_while() -> None:
        task = asyncio.create_task(
            alerts.evaluate_periodically(
                store.engine, file, alerts.Sender(SECRET), 0.05, lambda: now
            )
        )
        for _ in range(200):  # until a few evaluations have run (bounded: 10 s)
            await asyncio.sleep(0.05)
            if len(alerts.firing_now(store.engine)) >= 2:
                break
        await asyncio.sleep(0.3)  # several more evaluations
        task.cancel()

    asyncio.run(for_a_while())
    firing = {(rule, subject) for rule, subject, _ in alerts.firing_now(store.engine)}
    assert {("reason_spike", "not_received"), ("category_spike", "electronics")} <= firing
    events = alerts.recent(store.engine)
    assert len(events) == len(firing)  # one event per alert, however many evaluations ran
    assert all(e["attempts"] == 0 and not e["delivered"] for e in events)  # no webhook named


def test_a_burst_on_one_product_fires_its_alert_once_and_no_other_product(
    store: EventStore, world_db: tuple[Path, dict[str, pd.DataFrame]]
) -> None:
    tables = world_db[1]
    now = _end(tables) + timedelta(hours=1)
    product = "sku00132"
    orders = tables["orders"]
    picked = (
        orders[(orders.product_id == product) & (orders.delivered_at < now - timedelta(days=1))]
        .drop_duplicates("customer_id")
        .tail(8)
    )
    assert len(picked) == 8
    burst = [
        {
            "refund_id": f"vase{i:02d}",
            "order_id": o.order_id,
            "customer_id": o.customer_id,
            "requested_at": now - timedelta(hours=10) + timedelta(minutes=45 * i),
            "refund_type": "return_and_refund",
            "reason": "not_as_described",
            "reason_detail": "damaged",
            "amount_requested": float(o.amount),
            "photo_count": 1,
            "order_stage": "delivered",
        }
        for i, o in enumerate(picked.itertuples())
    ]
    file = alerts.load_alerts(None)
    sender = alerts.Sender(SECRET, attempts=1)
    assert [
        e for e in alerts.run(store.engine, file, sender, now) if e["rule_id"] == "product_spike"
    ] == []
    store.write({"refund_requests": burst})
    later = now + timedelta(minutes=5)
    sent = [
        e for e in alerts.run(store.engine, file, sender, later) if e["rule_id"] == "product_spike"
    ]
    assert [e["subject"] for e in sent] == [product]
    again = alerts.run(store.engine, file, sender, later + timedelta(minutes=5))
    assert [e for e in again if e["rule_id"] == "product_spike"] == []
