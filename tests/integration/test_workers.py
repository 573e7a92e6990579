"""Serving processes: liveness while the service starts, readiness that says what is missing,
several workers on PostgreSQL (through `refund-risk serve`, uvicorn and gunicorn), SQLite kept
to one process, and starts that fail with one sentence and a non-zero exit.

Runs without a model (the rules-only policy decides): what is tested is how processes start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from features.store import EventStore, settings_engine
from refund_risk.cli import app as cli
from refund_risk.errors import ConfigurationError
from refund_risk.settings import Settings, load_settings
from serving import db
from serving.app import create_app
from serving.auth import Role, create_key
from serving.schemas import DECISION_REQUEST_EXAMPLE, ORDER_EXAMPLE
from serving.service import Service
from serving.startup import SingleProcessLock, preflight

BIN = Path(sys.executable).parent
CUSTOMER = {"customer_id": "c0000042", "signup_at": datetime(2024, 3, 5, 14, 22, tzinfo=UTC)}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def write_history(settings: Settings) -> None:
    """One customer with one delivered order: a history, however small."""
    store = EventStore(settings_engine(settings))
    try:
        store.migrate()
        order = {
            **ORDER_EXAMPLE,
            "customer_id": CUSTOMER["customer_id"],
            "ordered_at": _time(ORDER_EXAMPLE["ordered_at"]),
            "shipped_at": _time(ORDER_EXAMPLE["shipped_at"]),
            "delivered_at": _time(ORDER_EXAMPLE["delivered_at"]),
        }
        store.write({"customers": [{**CUSTOMER, "region": "north"}], "orders": [order]})
    finally:
        store.dispose()


def sqlite_settings(tmp_path: Path, **overrides: Any) -> Settings:
    chosen: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "mlruns_dir": tmp_path / "no-registry",
        "mlflow_tracking_uri": None,
        "database_url": None,
        "database_schema": None,
        "alert_interval_seconds": 0.0,
    }
    return load_settings(**{**chosen, **overrides})


@pytest.fixture
def pg_settings(
    postgres_schema: tuple[str, str], new_schema: Callable[[], str], tmp_path: Path
) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        mlruns_dir=tmp_path / "no-registry",
        mlflow_tracking_uri=None,
        database_url=postgres_schema[0],
        database_schema=new_schema(),
        alert_interval_seconds=0.0,
    )


def _until(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


# --- starting in the background ------------------------------------------------------------


@pytest.fixture
def held_start(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Service.start waits until the returned event is set."""
    release = threading.Event()
    real = Service.start

    def start(settings: Settings, metrics: Any = None) -> Service:
        assert release.wait(60), "the test never let the start finish"
        return real(settings, metrics)

    monkeypatch.setattr(Service, "start", start)
    return release


def test_liveness_answers_while_the_service_starts(
    tmp_path: Path, held_start: threading.Event
) -> None:
    settings = sqlite_settings(tmp_path)
    write_history(settings)
    with TestClient(create_app(settings, served=True, freeze_gc=False)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "starting" and ready.json()["ready"] is False
        assert "loading the event history" in ready.json()["checks"]["start"]["detail"]
        refused = client.post("/v1/refund-decisions", json=DECISION_REQUEST_EXAMPLE)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "starting"
        assert refused.headers["Retry-After"]
        assert client.get("/openapi.json").status_code == 200
        held_start.set()
        ready = _until(lambda: (r := client.get("/readyz")).status_code == 200 and r)
        assert ready.json()["ready"] is True
        assert client.get("/healthz").json() == {"status": "ok"}


def test_a_start_that_fails_turns_liveness_and_readiness_red(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(settings: Settings, metrics: Any = None) -> Service:
        raise ConfigurationError("the tiers file names no tiers")

    monkeypatch.setattr(Service, "start", fail)
    with TestClient(create_app(sqlite_settings(tmp_path), served=True)) as client:
        live = _until(lambda: (r := client.get("/healthz")).status_code == 503 and r)
        assert live.json() == {"status": "failed", "detail": "the tiers file names no tiers"}
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert "the tiers file names no tiers" in ready.json()["checks"]["start"]["detail"]
        refused = client.get("/v1/customers/c0000042/tier")
        assert refused.status_code == 503
        assert "failed to start" in refused.json()["error"]["message"]


def test_a_served_start_checks_the_database_before_it_listens(tmp_path: Path) -> None:
    settings = sqlite_settings(
        tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    with (
        pytest.raises(ConfigurationError, match=r"127\.0\.0\.1:1/none is not reachable"),
        TestClient(create_app(settings, served=True)),
    ):
        pass


# --- readiness and the event store -----------------------------------------------------------


@pytest.mark.parametrize("required", [True, False])
def test_readiness_names_an_empty_event_store(
    store_url: tuple[str, str | None], tmp_path: Path, required: bool
) -> None:
    url, schema = store_url
    settings = sqlite_settings(
        tmp_path, database_url=url, database_schema=schema, require_history=required
    )
    with TestClient(create_app(settings, freeze_gc=False)) as client:
        ready = client.get("/readyz")
        check = ready.json()["checks"]["event_store"]
        assert ready.status_code == (503 if required else 200)
        assert ready.json()["ready"] is not required
        assert check["ok"] is not required
        assert "holds no orders" in check["detail"]
        assert "refund-risk features ingest" in check["detail"]
        if schema is not None:
            assert f"(schema {schema})" in check["detail"]
        write_history(settings)
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["event_store"]["ok"] is True


# --- SQLite: one process ---------------------------------------------------------------------


def test_sqlite_is_served_by_one_process_only(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    first = preflight(settings)
    assert first is not None
    try:
        with pytest.raises(ConfigurationError, match="already served by process") as refused:
            preflight(settings)
        assert str(os.getpid()) in str(refused.value)
        assert "PostgreSQL" in str(refused.value)
        with pytest.raises(ConfigurationError, match="SQLite serves from one process only"):  # noqa: SIM117
            with TestClient(create_app(settings, served=True)):
                pass
    finally:
        first.release()
    again = SingleProcessLock.take(Path(str(settings.database_url).removeprefix("sqlite:///")))
    again.release()


def test_serve_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    env = {
        "REFUND_RISK_DATA_DIR": str(tmp_path / "data"),
        "REFUND_RISK_MLRUNS_DIR": str(tmp_path / "mlruns"),
        "REFUND_RISK_DATABASE_URL": None,
        "REFUND_RISK_DATABASE_SCHEMA": None,
    }
    result = CliRunner().invoke(cli, ["serve", "--workers", "2"], env=env)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "--workers 2 refused" in said and "SQLite serves from one process only" in said
    assert "REFUND_RISK_DATABASE_URL" in said


# --- real processes --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_RISK_")}
    env.update(
        {
            "REFUND_RISK_DATA_DIR": str(settings.data_dir),
            "REFUND_RISK_MLRUNS_DIR": str(settings.mlruns_dir),
            "REFUND_RISK_DATABASE_URL": str(settings.database_url),
            "REFUND_RISK_ALERT_INTERVAL_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.database_schema:
        env["REFUND_RISK_DATABASE_SCHEMA"] = settings.database_schema
    return env


COMMANDS = {
    "refund-risk serve": lambda port: [
        str(BIN / "refund-risk"),
        "serve",
        "--workers",
        "2",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ],
    "uvicorn": lambda port: [
        str(BIN / "uvicorn"),
        "serving.asgi:app",
        "--workers",
        "2",
        "--port",
        str(port),
        "--no-access-log",
    ],
    "gunicorn": lambda port: [
        str(BIN / "gunicorn"),
        "serving.asgi:app",
        "-k",
        "uvicorn.workers.UvicornWorker",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
    ],
}


@pytest.mark.postgres
@pytest.mark.parametrize("command", list(COMMANDS))
def test_two_workers_serve_one_postgresql_database(
    pg_settings: Settings, tmp_path: Path, command: str
) -> None:
    """Two worker processes on one port, started together on a fresh schema (they migrate it
    one after the other), decide; each answered some of the requests."""
    if command == "gunicorn" and not (BIN / "gunicorn").exists():
        pytest.skip("gunicorn is not installed")
    write_history(pg_settings)
    engine = settings_engine(pg_settings)
    db.migrate(engine)
    _, token = create_key(engine, Role.SCORER, "workers test")
    engine.dispose()
    port = _free_port()
    process = subprocess.Popen(
        COMMANDS[command](port),
        env=_environment(pg_settings),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        in_a_row = [0]

        def ready() -> bool:
            # Each worker answers for itself: ready once 20 new connections in a row,
            # handed to either worker, were answered ready.
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as one:
                    ok = one.get("/readyz").status_code == 200
            except httpx.TransportError:
                ok = False
            in_a_row[0] = in_a_row[0] + 1 if ok else 0
            return in_a_row[0] >= 20

        _until(ready, timeout=180)
        # A new connection for each request, so the kernel hands them to either worker;
        # the metrics asked on the same connection are that worker's own count.
        counts = []
        for n in range(40):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as one:
                body = {**DECISION_REQUEST_EXAMPLE, "refund_id": f"r-workers-{n}"}
                r = one.post("/v1/refund-decisions", json=body, headers={"X-API-Key": token})
                assert r.status_code == 200, r.text
                counts.append(_decisions(one.get("/metrics").text))
        # One process would have counted all 40; each of two counted only its share.
        assert max(counts) < 40, counts
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _decisions(metrics: str) -> float:
    """Decisions the answering process has counted."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("refund_risk_decisions_total{")
    )


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "refund-risk"), "serve", "--workers", "2", "--log-level", "warning"],
        [str(BIN / "uvicorn"), "serving.asgi:app"],
        [str(BIN / "uvicorn"), "serving.app:create_app", "--factory"],
        [str(BIN / "gunicorn"), "serving.asgi:app", "-k", "uvicorn.workers.UvicornWorker"],
    ],
    ids=[
        "refund-risk serve --workers 2",
        "uvicorn serving.asgi:app",
        "uvicorn --factory",
        "gunicorn",
    ],
)
def test_a_start_that_cannot_succeed_exits_non_zero_with_a_sentence(
    tmp_path: Path, command: list[str]
) -> None:
    settings = sqlite_settings(tmp_path)
    env = {
        **_environment(settings),
        "REFUND_RISK_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    port = str(_free_port())
    if "gunicorn" in command[0]:
        command = [*command, "-w", "2", "-b", f"127.0.0.1:{port}"]
    elif "--port" not in command:
        command = [*command, "--port", port]
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "the database at postgresql+psycopg://nobody@127.0.0.1:1/none is not reachable" in said


@pytest.mark.postgres
def test_processes_starting_together_migrate_one_after_the_other(pg_settings: Settings) -> None:
    """Workers start at the same moment on a fresh schema: each migrates, none fails."""
    engines = [settings_engine(pg_settings) for _ in range(4)]
    for engine in engines:
        # Racing migrations block one another on the catalogue: fail after 20 s, not hang.
        sa.event.listen(
            engine,
            "connect",
            lambda dbapi, _record: dbapi.execute("SET lock_timeout = '20s'"),
        )
    together = threading.Barrier(len(engines))
    failures: list[BaseException] = []

    def start(engine: sa.Engine) -> None:
        try:
            together.wait()
            EventStore(engine).migrate()
            db.migrate(engine)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(e,), daemon=True) for e in engines]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 90
    for thread in threads:
        thread.join(timeout=max(deadline - time.monotonic(), 0.1))
    assert not any(thread.is_alive() for thread in threads), "a migration is stuck"
    for engine in engines:
        engine.dispose()
    assert not failures, failures
    check = settings_engine(pg_settings)
    assert {"event_orders", "serving_decisions"} <= set(sa.inspect(check).get_table_names())
    check.dispose()
