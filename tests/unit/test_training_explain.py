"""The fast contribution tables agree with the model's exact contributions where it matters."""

from __future__ import annotations

import numpy as np

from data.generator import generate_world
from features.batch import build_refund_features
from refund_risk.model_contract.explain import ContributionTables, fit_contribution_tables
from training.abuse import AbuseRiskModel
from training.dataset import FEATURE_NAMES, build_abuse_dataset, feature_matrix, plan_split


def test_tables_pick_the_same_top_reasons_as_treeshap() -> None:
    world = generate_world(8_000, seed=2)
    rows = build_refund_features(world.tables)
    data = build_abuse_dataset(rows, world.tables["outcomes"], plan_split(rows["requested_at"]))
    X = feature_matrix(data.train)
    model = AbuseRiskModel(random_state=0).fit(X, data.train["label"].to_numpy(bool))
    tables = fit_contribution_tables(FEATURE_NAMES, X, model.contributions(X))
    tables = ContributionTables.from_json(tables.to_json())  # as the service loads it

    X_test = feature_matrix(data.test)
    exact = model.contributions(X_test)
    approx = np.vstack([tables.explain(x) for x in X_test])
    risky = np.argsort(exact.sum(axis=1))[-100:]  # the requests whose reasons get read
    hits = [np.argmax(approx[i]) in np.argsort(exact[i])[-3:] for i in risky]
    assert np.mean(hits) >= 0.7
    correlation = np.corrcoef(approx.sum(axis=1), exact.sum(axis=1))[0, 1]
    assert correlation > 0.8


def test_missing_and_unseen_values_have_defined_contributions() -> None:
    X = np.array([[0.0, np.nan], [1.0, 2.0], [2.0, 3.0]])
    exact = np.array([[0.1, -0.5], [0.2, 0.3], [0.3, 0.4]])
    tables = fit_contribution_tables(("a", "b"), X, exact)
    out = tables.explain(np.array([np.nan, 100.0]))
    assert out[0] == 0.0  # never missing in training: neutral
    assert out[1] == 0.4  # beyond the last edge: the last bin
    assert tables.explain(np.array([1.0, np.nan]))[1] == -0.5
