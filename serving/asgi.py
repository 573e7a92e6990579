"""The ASGI entry point: `app`, the service built from the environment's settings.

    uvicorn serving.asgi:app --host 0.0.0.0 --port 8000 --workers 2 --no-access-log
    gunicorn serving.asgi:app -k uvicorn.workers.UvicornWorker -w 2 -b 0.0.0.0:8000

Every worker process reads the `REFUND_RISK_*` variables and builds its own service, as
`refund-risk serve --workers N` does. Several workers need PostgreSQL: on SQLite the second
process refuses to start, naming the one that serves the file. `app` is built when it is first
asked for, so importing this module builds nothing.
"""

from __future__ import annotations

import os
from typing import Any

# One OpenMP thread, set before LightGBM is first imported: single-row predictions on more
# threads are slower and, under load, collapse.
os.environ.setdefault("OMP_NUM_THREADS", "1")

_built: dict[str, Any] = {}


def create_served_app() -> Any:
    """The API as a served process runs it (see `serving.app.create_app`, `served=True`)."""
    from refund_risk.settings import load_settings
    from serving.app import create_app

    return create_app(load_settings(), served=True)


def __getattr__(name: str) -> Any:
    if name == "app":
        if "app" not in _built:
            _built["app"] = create_served_app()
        return _built["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
