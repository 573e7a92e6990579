"""`refund-risk serve` answers liveness while the service is still being imported.

The served process is started through a wrapper that holds the import of `serving.app` until
the test lets it go: what answers meanwhile is the port the command opened first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from serving.schemas import DECISION_REQUEST_EXAMPLE

HOLD_IMPORT = """
import importlib.abc, os, sys, time
release = os.environ["HOLD_SERVING_APP_UNTIL"]
class Hold(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "serving.app":
            while not os.path.exists(release):
                time.sleep(0.05)
        return None
sys.meta_path.insert(0, Hold())
from refund_risk.cli import app
sys.argv[0] = "refund-risk"
app()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


def test_serve_answers_liveness_before_the_service_is_imported(tmp_path: Path) -> None:
    release = tmp_path / "release"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_RISK_")}
    env.update(
        {
            "REFUND_RISK_DATA_DIR": str(tmp_path / "data"),
            "REFUND_RISK_MLRUNS_DIR": str(tmp_path / "no-registry"),
            "REFUND_RISK_REQUIRE_HISTORY": "false",
            "REFUND_RISK_ALERT_INTERVAL_SECONDS": "0",
            "HOLD_SERVING_APP_UNTIL": str(release),
        }
    )
    command = [sys.executable, "-c", HOLD_IMPORT, "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, cwd=tmp_path)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            live = _until(lambda: (r := client.get("/healthz")).status_code == 200 and r, 90)
            assert live.json() == {"status": "ok"}
            assert not release.exists() and process.poll() is None
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "starting"
            refused = client.post("/v1/refund-decisions", json=DECISION_REQUEST_EXAMPLE)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "starting"
            assert refused.headers["Retry-After"]

            release.touch()
            ready = _until(lambda: (r := client.get("/readyz")).status_code == 200 and r, 120)
            assert ready.json()["ready"] is True
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/openapi.json").status_code == 200  # the service, not the front
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    # uvicorn shuts down cleanly, then ends by the signal it was sent.
    assert code in (0, -signal.SIGTERM), code
