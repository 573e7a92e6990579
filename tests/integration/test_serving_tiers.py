"""The credit tier a decision uses is the customer's latest monthly snapshot's, end to end.

A small generated world in a real SQLite event store, served by the real app without an abuse
model (decisions are then degraded, which changes nothing about tiers) and with a credit-tier
model built from a booster file: the tier score in a decision and from the tier endpoint is the
model's score of the batch builder's credit snapshot at the start of the request's month.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serving_world import return_request

from features.batch import BatchBuilder
from features.definitions import CUSTOMER_FEATURES, FEATURE_VERSION
from features.store import EventStore, create_store_engine
from policy.tiers import assign_tier
from refund_risk.settings import load_settings
from serving import db
from serving.app import create_app
from serving.auth import Role, create_key
from serving.models import model_from_files
from serving.scoring import Snapshot
from serving.tiers import snapshot_at

pytestmark = pytest.mark.slow


def _tier_model(tmp_path: Path) -> Any:
    names = [f.name for f in CUSTOMER_FEATURES]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(names)))
    y = (x[:, 0] + rng.normal(0, 0.5, 400) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 7},
        lgb.Dataset(x, y, feature_name=names),
        num_boost_round=20,
    )
    path = tmp_path / "tier.txt"
    booster.save_model(str(path))
    card = {
        "features": names,
        "feature_version": FEATURE_VERSION,
        "calibration": {"slope": 1.0, "intercept": 0.0},
    }
    return model_from_files(
        "credit-tier",
        "1",
        "run",
        "champion",
        path,
        card,
        history_feature="customer_orders_all_time",
    )


def test_a_decision_uses_the_tier_of_the_customers_latest_monthly_snapshot(
    tmp_path: Path,
) -> None:
    from data.generator import generate_world

    tables = generate_world(2_000, seed=13).tables
    settings = load_settings(
        data_dir=tmp_path / "data",
        mlruns_dir=tmp_path / "no-registry",
        database_url=f"sqlite:///{tmp_path / 'service.db'}",
        mlflow_tracking_uri=None,
        api_key_cache_seconds=0.0,
    )
    assert settings.database_url is not None
    store = EventStore.open(settings.database_url)
    store.write_frames(tables)
    store.dispose()
    engine = create_store_engine(settings.database_url)
    db.migrate(engine)
    headers = {"X-API-Key": create_key(engine, Role.SCORER, "tiers")[1]}
    engine.dispose()

    # Requests come ten days into the month after the history ends, about delivered orders
    # of customers who ordered before that month began.
    orders = tables["orders"]
    end = max(orders["ordered_at"].max(), tables["refund_requests"]["requested_at"].max())
    month = (pd.Timestamp(end) + pd.offsets.MonthBegin(1)).normalize()
    when = (month + pd.Timedelta(days=10, hours=7)).to_pydatetime()
    assert snapshot_at(when) == month.to_pydatetime()
    delivered = orders[orders["delivered_at"].notna()].sort_values("ordered_at")
    latest = delivered.groupby("customer_id").tail(1).head(25)
    snapshot = BatchBuilder(tables).snapshot_rows(month).set_index("customer_id")

    model = _tier_model(tmp_path)
    names = list(model.feature_names)
    with TestClient(create_app(settings, freeze_gc=False)) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        # The registry has no tier model here: use one built from a booster file.
        models = replace(service.snapshot.models, tier=model)
        service.snapshot = Snapshot(models, service.snapshot.policies)
        tiers = service.snapshot.policies.tiers
        scored = 0
        for i, (_, order) in enumerate(latest.iterrows()):
            customer_id = order["customer_id"]
            r = client.post(
                "/v1/refund-decisions",
                json=return_request(order, f"tier-{i}", when),
                headers=headers,
            )
            assert r.status_code == 200, r.text
            decision = r.json()
            features = snapshot.loc[customer_id]
            if features["customer_orders_all_time"] > 0:
                expected = model.probability_of(features[names].to_numpy(dtype=np.float64))
                assert decision["tier_score"] == pytest.approx(round(expected, 6), abs=1e-6)
                assert decision["tier"] == assign_tier(expected, tiers).name
                scored += 1
            else:
                assert decision["tier_score"] is None
                assert decision["tier"] == tiers.default.name
            # The endpoint reads the same snapshot.
            tier = client.get(
                f"/v1/customers/{customer_id}/tier",
                params={"as_of": when.isoformat()},
                headers=headers,
            ).json()
            assert (tier["tier"], tier["score"]) == (decision["tier"], decision["tier_score"])
        assert scored >= 10

        # A second request of a customer in the same month reads the remembered score.
        first = latest.iloc[0]
        hits, misses = service.tiers.hits, service.tiers.misses
        r = client.post(
            "/v1/refund-decisions",
            json=return_request(first, "tier-again", when + pd.Timedelta(days=2)),
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert (service.tiers.hits, service.tiers.misses) == (hits + 1, misses)
        again = client.get(
            f"/v1/customers/{first['customer_id']}/tier",
            params={"as_of": when.isoformat()},
            headers=headers,
        ).json()
        assert r.json()["tier_score"] == again["score"]
