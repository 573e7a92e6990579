"""The baseline: a bare FastAPI endpoint that parses a refund decision request and echoes it.

It parses the same body with the same model as the scoring endpoint and is served the same way
(`serving.cli.run_server`, with the garbage collector frozen after start-up), so the difference
between the two is the cost of deciding: features, models, policy and the decision log.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response

from serving.schemas import RefundDecisionRequest


def create_echo_app() -> FastAPI:
    """An app with one route, `POST /v1/refund-decisions`, that answers with what it parsed."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gc.collect()
        gc.freeze()
        yield

    app = FastAPI(title="echo", lifespan=lifespan)

    @app.post("/v1/refund-decisions")
    async def echo(body: RefundDecisionRequest) -> Response:
        return Response(body.model_dump_json(), media_type="application/json")

    return app


def main() -> None:
    """Serve the echo app: `python -m bench.echo_app --port 8001`."""
    from serving.cli import run_server

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers == 1:
        run_server(create_echo_app(), args.host, args.port, log_level="warning")
    else:
        run_server(
            "bench.echo_app:create_echo_app",
            args.host,
            args.port,
            log_level="warning",
            workers=args.workers,
            factory=True,
        )


if __name__ == "__main__":
    main()
