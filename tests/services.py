"""What tests need from the machine: a database server, a browser."""

from __future__ import annotations

import os

import pytest


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service (database, browser) is missing; fail instead where CI said
    every service is there (REFUND_RISK_REQUIRE_SERVICES=1), so a broken set-up cannot pass
    as a run of skips."""
    if os.environ.get("REFUND_RISK_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)
