"""The front that answers on a served process's port while the service is imported."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from serving.front import HealthFront, bind


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


def test_the_front_says_alive_and_starting_on_a_bound_socket() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        with HealthFront(sock), httpx.Client(base_url=_url(sock), timeout=5) as client:
            live = client.get("/healthz")
            assert (live.status_code, live.json()) == (200, {"status": "ok"})
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "starting" and ready.json()["ready"] is False
            assert ready.json()["checks"]["start"]["ok"] is False
            refused = client.post("/v1/refund-decisions", json={"refund_id": "r1"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "starting"
            assert int(refused.headers["Retry-After"]) >= 1
    finally:
        sock.close()


def test_after_the_front_stops_a_connection_waits_for_the_next_server() -> None:
    """Stopping the front leaves the socket listening: a client that connects in between is
    queued, not refused, and answered by whoever serves the socket next."""
    sock = bind("127.0.0.1", 0)
    try:
        HealthFront(sock).start().stop()
        answered: list[int] = []

        def ask() -> None:
            with httpx.Client(base_url=_url(sock), timeout=10) as client:
                answered.append(client.get("/healthz").status_code)

        asking = threading.Thread(target=ask)
        asking.start()
        asking.join(0.3)
        assert asking.is_alive() and not answered  # queued in the backlog, no answer yet
        with HealthFront(sock):
            asking.join(10)
        assert answered == [200]
    finally:
        sock.close()


def test_a_client_hanging_up_early_is_not_logged_as_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A probe may read the status line and close: the front says nothing about it."""
    sock = bind("127.0.0.1", 0)
    try:
        with HealthFront(sock):
            for _ in range(20):
                with socket.create_connection(sock.getsockname()[:2], timeout=5) as client:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    client.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            with httpx.Client(base_url=_url(sock), timeout=5) as client:
                assert client.get("/healthz").status_code == 200
    finally:
        sock.close()
    assert "Traceback" not in capsys.readouterr().err
