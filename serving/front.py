"""The port of a served process, open from its first second.

Importing the service (FastAPI, pandas, LightGBM, MLflow, ...) takes seconds, and uvicorn opens
its port only once the app is imported and its start-up has run. `refund-risk serve` binds the
port first and answers on it with `HealthFront` while it imports: `/healthz` 200 (the process is
alive), `/readyz` and every other path 503 `starting`, with a `Retry-After`. Then the front
stops and hands the same listening socket to uvicorn: a connection made in between waits in the
socket's backlog and is answered by the service, never refused.

Only the standard library is imported here (`http.server`), so that the port opens before
anything heavy is imported.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

RETRY_AFTER_SECONDS = 1


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on `host`:`port`, as uvicorn binds one (IPv6 if `host` has a
    colon; the address reusable at once after a restart)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def starting_readiness() -> dict[str, Any]:
    """The `/readyz` body while the service is imported (the shape the service answers)."""
    return {
        "status": "starting",
        "ready": False,
        "degraded": False,
        "models": [],
        "policy": "not loaded yet",
        "checks": {"start": {"ok": False, "detail": "starting: loading the service"}},
    }


def starting_error() -> dict[str, Any]:
    """The error body of every other path while the service is imported."""
    return {
        "error": {
            "code": "starting",
            "message": "the service is starting; retry shortly",
            "fields": [],
        }
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 2.0  # a client that sends nothing does not hold the front

    def _answer(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            status, body = 200, {"status": "ok"}
        elif path == "/readyz":
            status, body = 503, starting_readiness()
        else:
            status, body = 503, starting_error()
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", str(RETRY_AFTER_SECONDS))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a probe every second would flood the log."""


class _Server(HTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up before the answer is sent is no error (a probe may read the
        status line and close)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class HealthFront:
    """Answers on an already listening socket, in a thread, until `stop`; the socket stays open
    (and listening) for whoever serves it next."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._server = _Server(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self._server.socket = sock
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> HealthFront:
        """Answer from now on."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering (a request being answered is finished first); new connections wait
        in the socket's backlog."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()

    def __enter__(self) -> HealthFront:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
