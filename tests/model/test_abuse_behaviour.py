"""Behavioural checks on a trained abuse model: directions it must respect, whatever the data."""

from __future__ import annotations

import numpy as np
import pytest

from data.generator import generate_world
from data.schema import ORDER_STAGES
from features.batch import build_refund_features
from training.abuse import AbuseRiskModel
from training.dataset import FEATURE_NAMES, build_abuse_dataset, feature_matrix, plan_split


@pytest.fixture(scope="module")
def trained() -> tuple[AbuseRiskModel, np.ndarray]:
    world = generate_world(8_000, seed=9)
    rows = build_refund_features(world.tables)
    data = build_abuse_dataset(rows, world.tables["outcomes"], plan_split(rows["requested_at"]))
    model = AbuseRiskModel(random_state=1).fit(
        feature_matrix(data.train),
        data.train["label"].to_numpy(bool),
        feature_matrix(data.calibration),
        data.calibration["label"].to_numpy(bool),
    )
    return model, feature_matrix(data.test)


def column(name: str) -> int:
    return FEATURE_NAMES.index(name)


def test_more_confirmed_abuse_never_lowers_the_score(
    trained: tuple[AbuseRiskModel, np.ndarray],
) -> None:
    model, X = trained
    for name in (
        "customer_confirmed_abusive_refunds",
        "customer_confirmed_abuse_rate",
        "linked_accounts_confirmed_abusive_refunds_by_any",
    ):
        more = X.copy()
        more[:, column(name)] = np.nan_to_num(more[:, column(name)]) + 1.0
        before = model.predict_proba(X)[:, 1]
        after = model.predict_proba(more)[:, 1]
        assert (after >= before - 1e-12).all(), name


def test_unshipped_never_scores_higher_than_the_same_order_shipped(
    trained: tuple[AbuseRiskModel, np.ndarray],
) -> None:
    model, X = trained
    unshipped, shipped = X.copy(), X.copy()
    unshipped[:, column("request_order_stage")] = ORDER_STAGES.index("not_shipped")
    unshipped[:, column("order_shipped_before_request")] = 0
    unshipped[:, column("order_delivered_before_request")] = 0
    shipped[:, column("request_order_stage")] = ORDER_STAGES.index("in_transit")
    shipped[:, column("order_shipped_before_request")] = 1
    shipped[:, column("order_delivered_before_request")] = 0
    low = model.predict_proba(unshipped)[:, 1]
    high = model.predict_proba(shipped)[:, 1]
    assert (low <= high + 1e-12).all()


def test_score_does_not_depend_on_ids_or_row_order(
    trained: tuple[AbuseRiskModel, np.ndarray],
) -> None:
    model, X = trained
    assert not [n for n in FEATURE_NAMES if n.endswith("_id")], "ids are never features"
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_array_equal(
        model.predict_proba(X)[order, 1], model.predict_proba(X[order])[:, 1]
    )
