"""A served world for the service's tests: generated, stored, with a trained model and keys.

`build_world` generates a small world, loads its history into the event store (all but the
last refund requests, which tests send), trains and registers a refund-abuse model in a local
MLflow store, and creates one key per role. The session fixture `serving_world` (see
`tests/conftest.py`) builds it once per test run and gives each test worker a copy of it.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refund_risk.settings import Settings, load_settings
from serving import db

HELD = 40
"""Refund requests kept out of the stored history, for tests to send."""


@dataclass
class World:
    """What `build_world` made."""

    settings: Settings
    tables: dict[str, pd.DataFrame]
    held: pd.DataFrame
    keys: dict[str, str]
    db_path: Path


def iso(value: Any) -> str | None:
    """A timestamp as ISO text; None when empty."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    return pd.Timestamp(value).isoformat()


def decision_body(world: World, refund: Any, **changes: Any) -> dict[str, Any]:
    """A decision request for a refund request row of the world, with its order."""
    orders = world.tables["orders"].set_index("order_id")
    o = orders.loc[refund["order_id"]]
    body = {
        "refund_id": refund["refund_id"],
        "customer_id": refund["customer_id"],
        "requested_at": iso(refund["requested_at"]),
        "refund_type": refund["refund_type"],
        "reason": refund["reason"],
        "reason_detail": refund["reason_detail"],
        "amount_requested": float(refund["amount_requested"]),
        "photo_count": int(refund["photo_count"]),
        "order_stage": refund["order_stage"],
        "order": {
            "order_id": refund["order_id"],
            "ordered_at": iso(o["ordered_at"]),
            "category": o["category"],
            "amount": float(o["amount"]),
            "item_count": int(o["item_count"]),
            "payment_method": o["payment_method"],
            "device_id": o["device_id"],
            "address_id": o["address_id"],
            "payment_fingerprint": o["payment_fingerprint"],
            "shipped_at": iso(o["shipped_at"]),
            "delivered_at": iso(o["delivered_at"]),
            "delivery_evidence": o["delivery_evidence"],
        },
    }
    body.update(changes)
    return body


def settings_for(tmp: Path, **overrides: Any) -> Settings:
    """Settings of a world under `tmp`."""
    return load_settings(
        data_dir=tmp / "data",
        mlruns_dir=tmp / "mlruns",
        database_url=f"sqlite:///{tmp / 'data' / 'service.db'}",
        mlflow_tracking_uri=None,
        api_key_cache_seconds=0.0,
        **overrides,
    )


def make_keys(settings: Settings) -> dict[str, str]:
    """One key per role, by role name."""
    from features.store import create_store_engine
    from serving import db
    from serving.auth import Role, create_key

    assert settings.database_url is not None
    engine = create_store_engine(settings.database_url)
    db.migrate(engine)
    keys = {role.value: create_key(engine, role, f"test {role.value}")[1] for role in Role}
    engine.dispose()
    return keys


def build_world(tmp: Path) -> World:
    """Generate a world, load its history into the event store, train a model, make keys."""
    from data.generator import generate_world
    from data.world_io import save_world
    from features.store import EventStore
    from training.data_source import load_training_inputs
    from training.dataset import build_abuse_dataset, plan_split
    from training.run_abuse import run_abuse_training

    settings = settings_for(tmp)
    generated = generate_world(8000, seed=11)
    save_world(generated, settings.raw_dir, settings.oracle_dir)
    refunds = generated.tables["refund_requests"].sort_values("requested_at")
    held = refunds.tail(HELD)
    history = dict(generated.tables)
    history["refund_requests"] = refunds.iloc[:-HELD]
    kept = set(history["refund_requests"]["refund_id"])
    history["outcomes"] = history["outcomes"][history["outcomes"]["refund_id"].isin(kept)]
    assert settings.database_url is not None
    store = EventStore.open(settings.database_url)
    store.write_frames(history)
    store.dispose()

    inputs = load_training_inputs(settings)
    split = plan_split(inputs.rows["requested_at"], test_months=3)
    dataset = build_abuse_dataset(inputs.rows, inputs.outcomes, split, inputs.oracle_refunds)
    run_abuse_training(settings, inputs.rows, inputs.outcomes, dataset, inputs.manifest, True)
    return World(settings, generated.tables, held, make_keys(settings), tmp / "data" / "service.db")


def key(world: World, role: str) -> dict[str, str]:
    """The header of the world's key of `role`."""
    return {"X-API-Key": world.keys[role]}


def held(world: World, i: int) -> pd.Series:
    """The i-th refund request kept out of the history."""
    return world.held.iloc[i]


def rows_for(world: World, refund_id: str) -> int:
    """Decisions recorded for a refund id."""
    with sqlite3.connect(world.db_path) as con:
        return int(
            con.execute(
                "SELECT count(*) FROM serving_decisions WHERE refund_id = ?", (refund_id,)
            ).fetchone()[0]
        )


REVIEW_AMOUNT = 1500.0
"""At or above the shipped policy's review limit: a shipped order's request goes to review."""


def shipped(world: World) -> list[pd.Series]:
    """The held refund requests whose order had shipped (the policy may send them to review)."""
    return [r for _, r in world.held.iterrows() if r["order_stage"] != "not_shipped"]


def review_body(world: World, refund: Any, refund_id: str, **changes: Any) -> dict[str, Any]:
    """A request the shipped policy sends to review: a held request asking back a large amount,
    under a refund id of the test's own (so tests sharing the world never meet)."""
    body = decision_body(world, refund, refund_id=refund_id)
    order = body["order"]
    if order["amount"] < REVIEW_AMOUNT or "customer_id" in changes:
        # A recorded order's amount and customer are fixed: a larger amount, or another
        # customer, is another order (of the test's own, so other tests' orders stay theirs).
        amount = max(float(order["amount"]), REVIEW_AMOUNT)
        order = {**order, "order_id": f"{refund_id}-order", "amount": amount}
    body["order"] = order
    body["amount_requested"] = REVIEW_AMOUNT
    body.update(changes)
    return body


def a_decision_row(refund_id: str, **changes: Any) -> dict[str, Any]:
    """A decision-log row with plain values (a new decision id); `changes` replaces any."""
    values: dict[str, Any] = {
        "decision_id": db.new_decision_id(),
        "refund_id": refund_id,
        "customer_id": "c1",
        "decided_at": datetime(2026, 1, 1),
        "action": "standard_return",
        "rule_id": "default",
        "degraded": False,
        "abuse_score": 0.1,
        "tier": "standard",
        "amount_requested": 10.0,
        "abuse_model_version": None,
        "tier_model_version": None,
        "policy_hash": "h",
        "feature_version": "v",
        "response": "{}",
        "request": "{}",
        "features": "[]",
    }
    return db.decision_row(**{**values, **changes})


def return_request(order: Any, refund_id: str, when: Any, **changes: Any) -> dict[str, Any]:
    """A return request for half of a delivered `order` (a raw orders row), made `when`;
    `changes` replaces any top-level field. Missing values are sent as null."""

    def iso(value: Any) -> str | None:
        return None if pd.isna(value) else pd.Timestamp(value).isoformat()

    def text(value: Any) -> Any:
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value

    body: dict[str, Any] = {
        "refund_id": refund_id,
        "customer_id": order["customer_id"],
        "requested_at": pd.Timestamp(when).isoformat(),
        "refund_type": "return_and_refund",
        "reason": "changed_mind",
        "reason_detail": "changed_mind",
        "amount_requested": round(float(order["amount"]) / 2, 2),
        "photo_count": 0,
        "order_stage": "delivered",
        "order": {
            "order_id": order["order_id"],
            "ordered_at": iso(order["ordered_at"]),
            "category": order["category"],
            "amount": float(order["amount"]),
            "item_count": int(order["item_count"]),
            "payment_method": order["payment_method"],
            "device_id": text(order["device_id"]),
            "address_id": text(order["address_id"]),
            "payment_fingerprint": text(order["payment_fingerprint"]),
            "shipped_at": iso(order["shipped_at"]),
            "delivered_at": iso(order["delivered_at"]),
            "delivery_evidence": order["delivery_evidence"],
        },
    }
    body.update(changes)
    return body


@contextmanager
def running_app(settings: Settings, name: str) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, in a thread named `name`; its base
    URL while the block runs, stopped after."""
    import uvicorn

    from serving.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(
        create_app(settings, freeze_gc=False),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180  # start-up reads the event store; slow on a busy machine
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
