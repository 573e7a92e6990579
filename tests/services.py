"""What tests need from the machine: a database server, a browser, a tool."""

from __future__ import annotations

import os

import pytest


def services_required(environ: dict[str, str] | None = None) -> bool:
    """Whether a missing service is a failure: REFUND_RISK_REQUIRE_SERVICES=1 says so, =0 says
    not; unset, a CI run (CI=true, as CI systems set it) requires every service."""
    env = os.environ if environ is None else environ
    explicit = env.get("REFUND_RISK_REQUIRE_SERVICES")
    if explicit is not None and explicit != "":
        return explicit == "1"
    return env.get("CI", "").lower() in ("true", "1")


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service (database, browser, tool) is missing; fail instead where every
    service must be there (see `services_required`), so a broken set-up cannot pass as a run
    of skips."""
    if services_required():
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)
