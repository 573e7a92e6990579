"""`refund-risk keys`: a revocation says when a running service stops taking the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from refund_risk.cli import app


def test_revoking_a_key_states_how_long_a_running_service_may_still_take_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUND_RISK_DATABASE_URL", f"sqlite:///{tmp_path / 'keys.db'}")
    monkeypatch.setenv("REFUND_RISK_API_KEY_CACHE_SECONDS", "7")
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--role", "scorer", "--name", "shop"])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(app, ["keys", "list"])
    key_id = next(line.split()[0] for line in listed.output.splitlines() if "shop" in line)
    revoked = runner.invoke(app, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked {key_id}" in revoked.output
    assert "refuses it within 7 s" in revoked.output
    assert "REFUND_RISK_API_KEY_CACHE_SECONDS" in revoked.output.replace("\n", "")
