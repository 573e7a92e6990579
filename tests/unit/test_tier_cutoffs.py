"""A tier model's fitted cut-offs, as the registry stores them and the service uses them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.tiers import DEFAULT_TIERS_PATH, assign_tier, load_tiers
from refund_risk.errors import ConfigurationError
from refund_risk.model_contract.card import card_cutoffs
from serving.models import LoadedModel, ModelSet, tiers_in_force
from serving.scoring import Snapshot, load_policy_set
from training.scorer import tiers_by_cutoffs

CUTOFFS = {"gold": 0.02, "silver": 0.03, "standard": 0.06, "watch": 0.13, "restricted": 1.0}


def tier_model(cutoffs: dict[str, float] | None) -> LoadedModel:
    """A loaded tier model whose scores are never asked for: only its cut-offs matter here."""
    predictor: Any = None
    return LoadedModel(
        name="credit-tier",
        version="4",
        run_id="run",
        alias="champion",
        feature_names=("customer_orders_all_time",),
        indices=None,
        slope=1.0,
        intercept=0.0,
        predictor=predictor,
        cutoffs=cutoffs,
    )


def test_a_card_without_cutoffs_keeps_the_files_bounds() -> None:
    assert card_cutoffs({"features": []}) is None
    assert card_cutoffs({"cutoffs": CUTOFFS}) == CUTOFFS


@pytest.mark.parametrize(
    "bad",
    [
        {"gold": 0.2, "silver": 0.1, "restricted": 1.0},  # falls
        {"gold": 0.2, "restricted": 0.9},  # the worst tier does not take everyone
        {"gold": 0.0, "restricted": 1.0},  # a bound of nothing
        {"gold": "high", "restricted": 1.0},
        {},
    ],
)
def test_malformed_cutoffs_are_refused_naming_the_model(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="credit-tier v4"):
        card_cutoffs({"cutoffs": bad}, "credit-tier v4")


def test_the_service_decides_tiers_by_the_models_cutoffs() -> None:
    tiers = load_tiers(DEFAULT_TIERS_PATH)
    in_force = tiers_in_force(tiers, tier_model(CUTOFFS))
    assert {t.name: t.max_loss_probability for t in in_force.tiers} == CUTOFFS
    # Privileges and the default tier are the file's.
    assert [t.auto_approve_limit for t in in_force.tiers] == [
        t.auto_approve_limit for t in tiers.tiers
    ]
    assert in_force.default.name == tiers.default.name
    # 0.025 is silver by the model's cut-offs, watch by the file's own bounds.
    assert assign_tier(0.025, in_force).name == "silver"
    assert assign_tier(0.025, tiers).name == "watch"

    policies = load_policy_set()
    models = ModelSet(abuse=None, tier=tier_model(CUTOFFS), problems={}, alias="champion")
    assert Snapshot(models, policies).tiers.get("silver").max_loss_probability == 0.03


def test_cutoffs_for_other_tiers_or_none_leave_the_file_in_force() -> None:
    tiers = load_tiers(DEFAULT_TIERS_PATH)
    assert tiers_in_force(tiers, None) is tiers
    assert tiers_in_force(tiers, tier_model(None)) is tiers
    other = {"best": 0.1, "worst": 1.0}
    assert tiers_in_force(tiers, tier_model(other)) is tiers


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(0.0, 1.0), st.sampled_from(list(CUTOFFS.values())), st.just(math.nan)),
        max_size=50,
    )
)
def test_replayed_requests_get_the_tier_the_service_would_give(scores: list[float]) -> None:
    in_force = tiers_in_force(load_tiers(DEFAULT_TIERS_PATH), tier_model(CUTOFFS))
    replayed = tiers_by_cutoffs(np.array(scores, dtype=np.float64), CUTOFFS)
    for score, name in zip(scores, replayed, strict=True):
        if math.isnan(score):
            assert name is None  # the simulator then uses the default tier
        else:
            assert name == assign_tier(score, in_force).name
