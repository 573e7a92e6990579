"""A shop's messy export taken all the way: import, check, event store, tier training with no
outcomes, the service, and a decision on one of the shop's own orders.

The export's customers behave alike by construction (its refunds are drawn at random), so no
model can rank them: the tier model trains and is registered, but the gate keeps it out of
use and says why, and the service decides with the rules and the new customer's middle tier,
saying so. That is the honest answer for such data; the generated world's cold start
(`test_cold_start.py`) shows the same path with a tier model that earns its place.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serving_world import return_request
from typer.testing import CliRunner

from features.store import create_store_engine
from refund_risk.cli import app
from refund_risk.settings import load_settings
from serving import db
from serving.app import create_app
from serving.auth import Role, create_key
from tests.shop_export import write_shop_export

pytestmark = [pytest.mark.slow]


def test_a_messy_export_becomes_tiers_and_a_decision_on_day_one(tmp_path: Path) -> None:
    export = write_shop_export(tmp_path / "export")
    settings = load_settings(
        data_dir=tmp_path / "shop",
        mlruns_dir=tmp_path / "mlruns",
        database_url=f"sqlite:///{tmp_path / 'service.db'}",
        mlflow_tracking_uri=None,
        api_key_cache_seconds=0.0,
    )
    env: dict[str, str | None] = {
        "REFUND_RISK_DATA_DIR": str(settings.data_dir),
        "REFUND_RISK_MLRUNS_DIR": str(settings.mlruns_dir),
        "REFUND_RISK_DATABASE_URL": settings.database_url,
        "REFUND_RISK_MLFLOW_TRACKING_URI": None,
    }
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, (args, result.output)
        return result.output

    run("data", "import", str(export.folder), "--mapping", str(export.mapping))
    assert "credit-tier model: can be trained now" in run("data", "check")
    run("features", "ingest", str(settings.raw_dir))
    trained = run("train", "tier", "--promote")
    assert "realised loss rises strictly from best tier to worst" in trained
    assert "Created version '1' of model 'credit-tier'" in trained
    refused = runner.invoke(app, ["train", "abuse"], env=env)
    assert refused.exit_code != 0 and "outcome" in refused.output  # says what is missing

    engine = create_store_engine(settings.database_url or "")
    db.migrate(engine)
    headers = {"X-API-Key": create_key(engine, Role.SCORER, "shop")[1]}
    engine.dispose()
    orders = pd.read_parquet(settings.raw_dir / "orders.parquet")
    order = orders[orders["delivered_at"].notna()].sort_values("ordered_at").iloc[-1]
    when = pd.Timestamp(order["delivered_at"]) + pd.Timedelta(days=2)
    body = return_request(
        order,
        "shop-first-day-1",
        when,
        reason="not_as_described",
        reason_detail="damaged",
    )
    with TestClient(create_app(settings, freeze_gc=False)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["degraded"] is True, ready.text
        r = client.post("/v1/refund-decisions", json=body, headers=headers)
        assert r.status_code == 200, r.text
        decision = r.json()
    assert decision["versions"]["abuse_model"] is None
    # Kept out of use, and said why; the service falls back to the new customer's tier.
    assert "gate: no champion yet, but the new version is kept as challenger" in trained
    assert "Try:" in trained
    assert decision["versions"]["tier_model"] is None and decision["tier"] == "standard"
    assert decision["action"] in {"standard_return", "manual_review", "auto_approve"}
    assert decision["reasons"]
