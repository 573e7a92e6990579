"""The credit-tier model's parts on small hand-made data: inputs, split, estimator, tiers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from features.batch import CREDIT_TARGET_COLUMNS, CREDIT_TARGET_DAYS
from features.definitions import CUSTOMER_FEATURES, FEATURES, Entity
from policy.documents import PolicyError
from policy.tiers import Tiers, parse_tiers
from refund_risk.errors import DataValidationError
from training.registry import GateResult
from training.run_tier import held_back_if_disordered
from training.tier import (
    HISTORY_FEATURE,
    MONOTONE,
    NOT_TIER_INPUTS,
    CreditTierModel,
    choose_loss,
    customer_tiers,
    default_cutoff,
    fit_cutoffs,
    monotone_constraints,
    ordering_problem,
    plan_tier_split,
    rises_strictly,
    score_customers,
    suggest_thresholds,
    tier_feature_names,
    tier_for,
    tier_table,
    tiers_for,
    train_tier_model,
    with_thresholds,
)

FEATURE_NAMES = tier_feature_names()


def ladder(
    bounds: tuple[float, float, float] = (0.02, 0.05, 1.0),
    shares: tuple[float, float, float] | None = None,
) -> Tiers:
    """Three tiers, best first; the middle one is the default."""
    privileges = [(True, 200.0, 500.0), (False, 0.0, 0.0), (False, 0.0, 0.0)]
    return parse_tiers(
        {
            "version": 1,
            "default_tier": "middle",
            "tiers": [
                {
                    "name": name,
                    "max_loss_probability": bound,
                    "refund_before_return_allowed": rbr,
                    "auto_approve_limit": limit,
                    "max_outstanding_unreturned": outstanding,
                    **({} if shares is None else {"share": shares[i]}),
                }
                for i, (name, bound, (rbr, limit, outstanding)) in enumerate(
                    zip(("best", "middle", "worst"), bounds, privileges, strict=True)
                )
            ],
        }
    )


def customers(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Snapshot-like rows whose loss depends on confirmed abuse and order count."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        rng.poisson(1.0, size=(n, len(FEATURE_NAMES))).astype(float), columns=FEATURE_NAMES
    )
    frame[HISTORY_FEATURE] = rng.integers(1, 20, n).astype(float)
    frame["customer_tenure_days"] = rng.uniform(1.0, 900.0, n)
    logit = -3.5 + 1.2 * frame["customer_confirmed_abusive_refunds"] + 0.05 * frame[HISTORY_FEATURE]
    loss = rng.random(n) < 1.0 / (1.0 + np.exp(-logit.to_numpy()))
    frame.insert(0, "customer_id", [f"c{i:05d}" for i in range(n)])
    return frame, loss


@pytest.fixture(scope="module")
def small_model() -> CreditTierModel:
    frame, loss = customers(3_000, seed=1)
    return CreditTierModel(n_estimators=20, min_child_samples=50, random_state=3).fit(frame, loss)


# --- inputs ----------------------------------------------------------------------------------


def test_features_are_the_customer_and_linked_account_definitions() -> None:
    expected = [
        f.name
        for f in FEATURES
        if f.entity in (Entity.CUSTOMER, Entity.LINKED_ACCOUNTS) and f.name not in NOT_TIER_INPUTS
    ]
    assert list(FEATURE_NAMES) == expected
    assert set(FEATURE_NAMES) | set(NOT_TIER_INPUTS) == {f.name for f in CUSTOMER_FEATURES}
    assert all(len(reason) > 20 for reason in NOT_TIER_INPUTS.values())
    request_or_order = {f.name for f in FEATURES if f.entity in (Entity.REQUEST, Entity.ORDER)}
    assert not set(FEATURE_NAMES) & request_or_order


def test_features_follow_the_definitions_they_are_given() -> None:
    subset = [f for f in FEATURES if f.name in ("request_amount", "customer_tenure_days")]
    assert tier_feature_names(subset) == ("customer_tenure_days",)


def test_no_target_or_oracle_column_is_a_feature() -> None:
    forbidden = set(CREDIT_TARGET_COLUMNS) | {"latent_type", "ring_id", "snapshot_at"}
    assert not forbidden & set(FEATURE_NAMES)
    assert not any(name.startswith(("target_", "label_")) for name in FEATURE_NAMES)


def test_every_monotone_direction_names_a_tier_feature_with_a_reason() -> None:
    for name, (direction, reason) in MONOTONE.items():
        assert name in FEATURE_NAMES, name
        assert direction in (-1, 1)
        assert len(reason) > 20
    assert MONOTONE["customer_tenure_days"][0] == -1
    for name in FEATURE_NAMES:
        if "confirmed_abus" in name:
            assert MONOTONE[name][0] == 1, name


def test_every_tier_input_that_risk_evidence_moves_is_constrained_upwards() -> None:
    # A refund request, an outcome or a new link arriving as events moves exactly the inputs
    # computed from those tables: each must be constrained never to lower the loss score, and
    # must have a number, not "missing", before the first such event (LightGBM's constraints
    # order values, not missing against present).
    evidence = {"refund_requests", "outcome_changes", "identity_links"}
    moved = [f for f in FEATURES if f.name in FEATURE_NAMES and f.source in evidence]
    assert len(moved) > 30
    for feature in moved:
        assert MONOTONE.get(feature.name, (0, ""))[0] == 1, feature.name
        if feature.entity == Entity.CUSTOMER:
            assert not math.isnan(feature.empty), feature.name


def test_constraints_line_up_with_the_feature_order() -> None:
    constraints = monotone_constraints(FEATURE_NAMES)
    assert len(constraints) == len(FEATURE_NAMES)
    for name, value in zip(FEATURE_NAMES, constraints, strict=True):
        assert value == MONOTONE.get(name, (0, ""))[0]


# --- split -----------------------------------------------------------------------------------


def snapshot_frame(months: int = 11, complete_until: int = 9) -> pd.DataFrame:
    dates = pd.date_range("2025-02-01", periods=months, freq="MS")
    return pd.DataFrame(
        {
            "snapshot_at": np.repeat(dates, 3),
            "customer_id": np.tile(["a", "b", "c"], months),
            "target_window_complete": np.repeat(np.arange(months) < complete_until, 3),
        }
    )


def test_training_snapshots_had_their_window_closed_at_the_cutoff() -> None:
    frame = snapshot_frame()
    cutoff = pd.Timestamp("2025-09-01")
    split = plan_tier_split(frame, cutoff, cutoff, calibration_months=1)
    horizon = pd.Timedelta(days=CREDIT_TARGET_DAYS)
    assert split.fit_dates and split.calibration_dates
    for d in (*split.fit_dates, *split.calibration_dates):
        assert d + horizon <= cutoff
    # The window is judged at the cutoff, not at the end of the data: July's window was
    # complete in the data but still open on 1 September.
    assert pd.Timestamp("2025-07-01") not in (*split.fit_dates, *split.calibration_dates)
    assert max(split.fit_dates) < min(split.calibration_dates)
    assert split.test_dates == (pd.Timestamp("2025-09-01"), pd.Timestamp("2025-10-01"))


def test_test_months_need_a_complete_window_and_must_follow_the_cutoff() -> None:
    frame = snapshot_frame()
    with pytest.raises(DataValidationError, match="at or after"):
        plan_tier_split(frame, pd.Timestamp("2025-09-01"), pd.Timestamp("2025-08-01"))
    with pytest.raises(DataValidationError, match="complete"):
        plan_tier_split(frame, pd.Timestamp("2025-09-01"), pd.Timestamp("2025-11-01"))
    with pytest.raises(DataValidationError, match="closed"):
        plan_tier_split(frame, pd.Timestamp("2025-04-01"), pd.Timestamp("2025-09-01"))


def test_default_cutoff_leaves_the_last_complete_months_for_test() -> None:
    assert default_cutoff(snapshot_frame(), test_months=2) == pd.Timestamp("2025-09-01")
    with pytest.raises(DataValidationError):
        default_cutoff(snapshot_frame(complete_until=1), test_months=2)


# --- the estimator ---------------------------------------------------------------------------


def test_estimator_follows_the_scikit_learn_contract() -> None:
    model = CreditTierModel(num_leaves=9, random_state=5)
    assert model.get_params()["num_leaves"] == 9
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(model, "booster_")


def test_fit_is_reproducible_bit_for_bit() -> None:
    frame, loss = customers(2_000, seed=2)
    fits = [
        CreditTierModel(n_estimators=15, min_child_samples=40, random_state=4).fit(frame, loss)
        for _ in range(2)
    ]
    assert fits[0].model_string() == fits[1].model_string()
    np.testing.assert_array_equal(fits[0].predict_proba(frame), fits[1].predict_proba(frame))


def test_probabilities_are_two_columns_and_frames_match_arrays(
    small_model: CreditTierModel,
) -> None:
    frame, _ = customers(200, seed=3)
    proba = small_model.predict_proba(frame)
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # Columns are matched by name: a shuffled frame and a bare array give the same scores.
    shuffled = frame[list(reversed(frame.columns))]
    np.testing.assert_array_equal(small_model.predict_proba(shuffled), proba)
    matrix = frame[list(FEATURE_NAMES)].to_numpy()
    np.testing.assert_array_equal(small_model.predict_proba(matrix), proba)


def test_missing_feature_columns_are_refused(small_model: CreditTierModel) -> None:
    frame, _ = customers(10, seed=4)
    with pytest.raises(DataValidationError, match="customer_tenure_days"):
        small_model.predict_proba(frame.drop(columns="customer_tenure_days"))


def test_calibration_that_would_reverse_the_ranking_is_not_applied() -> None:
    frame, loss = customers(3_000, seed=5)
    model = CreditTierModel(n_estimators=20, min_child_samples=50).fit(frame, loss)
    margin = model.predict_raw(frame)
    model.calibrate(frame, margin < np.median(margin))  # later months saying the opposite
    assert not model.calibrated_
    assert model.calibration_ == (1.0, 0.0)
    model.calibrate(frame, loss)
    assert model.calibrated_ and model.calibration_[0] > 0


# --- scores and tiers ------------------------------------------------------------------------


def test_customers_without_history_get_no_score_and_the_default_tier(
    small_model: CreditTierModel,
) -> None:
    frame, _ = customers(50, seed=6)
    frame.loc[:9, HISTORY_FEATURE] = 0.0
    scores = score_customers(small_model, frame)
    assert np.isnan(scores[:10]).all() and not np.isnan(scores[10:]).any()
    tiers = ladder()
    assert set(tiers_for(scores[:10], tiers)) == {"middle"}


def test_customers_absent_from_the_snapshot_get_the_default_tier(
    small_model: CreditTierModel,
) -> None:
    frame, _ = customers(20, seed=7)
    tiers = ladder((0.2, 0.5, 1.0))
    out = customer_tiers(small_model, frame, tiers, ["c00003", "someone_new", "c00001"])
    assert list(out["customer_id"]) == ["c00003", "someone_new", "c00001"]
    assert math.isnan(out["score"].iloc[1]) and out["tier"].iloc[1] == "middle"
    for i, cid in ((0, "c00003"), (2, "c00001")):
        expected = score_customers(small_model, frame[frame["customer_id"] == cid])[0]
        assert out["score"].iloc[i] == expected
        assert out["tier"].iloc[i] == tier_for(expected, tiers)


def test_tier_for_uses_the_upper_bounds_best_first() -> None:
    tiers = ladder()
    assert tier_for(None, tiers) == "middle"
    assert tier_for(float("nan"), tiers) == "middle"
    assert tier_for(0.0, tiers) == "best"
    assert tier_for(0.02, tiers) == "best"  # a bound belongs to its tier
    assert tier_for(0.0201, tiers) == "middle"
    assert tier_for(0.7, tiers) == "worst"
    scores = np.array([0.01, np.nan, 0.02, 0.05, 0.051, 1.0, 0.01])
    assert list(tiers_for(scores, tiers)) == [tier_for(float(s), tiers) for s in scores]


def test_suggested_bounds_rise_and_end_at_one() -> None:
    tiers = ladder()
    scores = np.concatenate([np.full(50, 0.01), np.linspace(0.0, 0.3, 50), [np.nan]])
    bounds = suggest_thresholds(scores, tiers, [0.3, 0.9])
    values = list(bounds.values())
    assert list(bounds) == ["best", "middle", "worst"]
    assert values[-1] == 1.0 and values[0] < values[1] < values[2]
    assert with_thresholds(tiers, bounds).get("middle").max_loss_probability == bounds["middle"]
    with pytest.raises(ValueError, match="quantiles"):
        suggest_thresholds(scores, tiers, [0.5])
    with pytest.raises(PolicyError):
        with_thresholds(tiers, {"best": 0.5, "middle": 0.1})  # bounds must rise


def test_tier_table_and_strict_rise() -> None:
    tiers = ladder()
    tier = np.array(["best"] * 4 + ["middle"] * 4 + ["worst"] * 2)
    loss = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1], dtype=bool)
    score = np.array([0.01] * 4 + [np.nan, 0.03, 0.03, 0.04] + [0.5, 0.6])
    table = tier_table(tiers, tier, loss, score, np.array(["honest"] * 8 + ["swapper"] * 2))
    assert list(table["tier"]) == ["best", "middle", "worst"]
    np.testing.assert_allclose(table["share"], [0.4, 0.4, 0.2])
    np.testing.assert_allclose(table["loss_rate"], [0.25, 0.5, 1.0])
    np.testing.assert_allclose(table["new_share"], [0.0, 0.25, 0.0])
    assert list(table["scored"]) == [4, 3, 2]
    np.testing.assert_allclose(table["scored_loss_rate"], [0.25, 2 / 3, 1.0])
    np.testing.assert_allclose(table["type_swapper"], [0.0, 0.0, 1.0])
    assert rises_strictly(table)
    flat = tier_table(tiers, tier, np.array([0, 1] * 5, dtype=bool), score)
    assert not rises_strictly(flat)
    empty = tier_table(tiers, np.array(["best", "worst"]), np.array([False, True]), score[:2])
    assert not rises_strictly(empty)


def test_the_order_of_tiers_is_judged_on_the_customers_the_cutoffs_placed() -> None:
    # New customers without a loss dilute the default tier's rate below the best tier's; the
    # scored customers the cut-offs put there still lose more than the best tier's.
    tiers = ladder()
    tier = np.array(["best"] * 4 + ["middle"] * 5 + ["worst"] * 2)
    score = np.array([0.01] * 4 + [np.nan] * 3 + [0.03, 0.04] + [0.5, 0.6])
    loss = np.array([0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1], dtype=bool)
    table = tier_table(tiers, tier, loss, score)
    assert table["loss_rate"].iloc[1] < table["loss_rate"].iloc[0]
    assert rises_strictly(table)
    assert not rises_strictly(table.drop(columns=["scored", "scored_loss_rate"]))
    # Equal rates in two tiers are no rise: the worse tier would be no riskier.
    even = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 1], dtype=bool)
    tied = tier_table(tiers, tier, even, score)
    assert tied["scored_loss_rate"].iloc[0] == tied["scored_loss_rate"].iloc[1]
    assert not rises_strictly(tied)
    assert "not more than the better tier 'best'" in str(ordering_problem(tied))


def test_a_target_column_cannot_be_made_a_feature() -> None:
    frame, loss = customers(100, seed=8)
    frame["snapshot_at"] = pd.Timestamp("2025-02-01")
    frame["target_has_loss_90d"] = loss
    frame["target_refund_requests_90d"] = loss.astype(np.int64)
    frame["target_window_complete"] = True
    leaky = CreditTierModel(features=[*FEATURE_NAMES, "target_has_loss_90d"])
    with pytest.raises(DataValidationError, match="targets or oracle columns among features"):
        train_tier_model(
            frame,
            train_end=pd.Timestamp("2025-06-01"),
            test_start=pd.Timestamp("2025-06-01"),
            seed=0,
            tiers=ladder(),
            model=leaky,
        )


# --- tiers as shares of the shop's customers -------------------------------------------------


@st.composite
def shares_and_scores(draw: st.DrawFn) -> tuple[tuple[float, float, float], np.ndarray]:
    """Three tier shares adding up to 1 and a population of scores (ties and NaN included)."""
    first = draw(st.integers(1, 98))
    second = draw(st.integers(1, 99 - first))
    shares = (first / 100, second / 100, (100 - first - second) / 100)
    n = draw(st.integers(1, 400))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scores = rng.beta(0.5, 20.0, n)
    if draw(st.booleans()):  # many customers with one score, as few-leaf trees give
        scores = np.round(scores, draw(st.integers(1, 3)))
    scores[rng.random(n) < 0.1] = np.nan  # new customers
    return shares, np.clip(scores, 1e-6, 1.0)


@settings(max_examples=200, deadline=None)
@given(shares_and_scores())
def test_cutoffs_give_every_tier_its_share_of_the_training_customers(
    drawn: tuple[tuple[float, float, float], np.ndarray],
) -> None:
    shares, scores = drawn
    tiers = ladder(shares=shares)
    known = scores[~np.isnan(scores)]
    if not len(known):
        with pytest.raises(DataValidationError, match="no customer"):
            fit_cutoffs(scores, tiers)
        return
    cutoffs = fit_cutoffs(scores, tiers)
    bounds = list(cutoffs.values())
    assert list(cutoffs) == list(tiers.names)
    assert all(b > a for a, b in itertools.pairwise(bounds)) and bounds[-1] == 1.0
    fitted = with_thresholds(tiers, cutoffs)  # valid as a tiers file
    names = tiers_for(known, fitted)
    below = np.cumsum([np.mean(names == name) for name in fitted.names])
    n, distinct = len(known), len(np.unique(known)) == len(known)
    values = np.unique(known)
    reached = np.array([np.mean(known <= v) for v in values])
    for k, target in enumerate(np.cumsum(shares)[:-1]):
        # Customers sharing a score share a tier, so the share at or below a bound is the
        # nearest to the tier's that any bound above the better tier's reaches (or the better
        # tier's own, when this tier is left empty); with distinct scores, within a customer.
        previous = bounds[k - 1] if k else -np.inf
        candidates = reached[values > previous]
        if k:
            candidates = np.append(candidates, below[k - 1])
        assert abs(below[k] - target) <= np.min(np.abs(candidates - target)) + 1e-9
        if distinct:
            assert abs(below[k] - target) <= 1.0 / n + 1e-9
    assert set(tiers_for(scores[np.isnan(scores)], fitted)) <= {"middle"}


def test_without_shares_the_files_own_bounds_are_kept() -> None:
    tiers = ladder()
    assert fit_cutoffs(np.array([0.1, 0.2]), tiers) == {"best": 0.02, "middle": 0.05, "worst": 1.0}


def test_shares_must_be_given_for_every_tier_and_add_up_to_one() -> None:
    with pytest.raises(PolicyError, match="add up to 1"):
        ladder(shares=(0.5, 0.4, 0.2))
    raw = {
        "version": 1,
        "default_tier": "b",
        "tiers": [
            {
                "name": "a",
                "max_loss_probability": 0.1,
                "share": 0.5,
                "refund_before_return_allowed": False,
                "auto_approve_limit": 0.0,
                "max_outstanding_unreturned": 0.0,
            },
            {
                "name": "b",
                "max_loss_probability": 1.0,
                "refund_before_return_allowed": False,
                "auto_approve_limit": 0.0,
                "max_outstanding_unreturned": 0.0,
            },
        ],
    }
    with pytest.raises(PolicyError, match=r"missing for \['b'\]"):
        parse_tiers(raw)


def loss_frame(kept: list[bool], refunds: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"target_has_loss_90d": kept, "target_refund_requests_90d": refunds})


def test_auto_loss_takes_kept_goods_first_then_any_refund() -> None:
    dates = [pd.Timestamp("2025-02-01")]
    assert choose_loss(loss_frame([False, True], [0, 1]), "auto", dates) == "kept"
    assert choose_loss(loss_frame([False, False], [0, 2]), "auto", dates) == "refunds"
    with pytest.raises(DataValidationError) as caught:
        choose_loss(loss_frame([False, False], [0, 0]), "auto", dates)
    message = str(caught.value)
    assert "no customer with a refund loss" in message
    assert "refund-only claim on delivered goods" in message  # what a loss is
    assert "returns and cancellations" in message
    assert "import the shop's refund requests" in message  # what to do
    with pytest.raises(DataValidationError, match="--loss refunds"):
        choose_loss(loss_frame([False, False], [0, 2]), "kept", dates)
    with pytest.raises(DataValidationError, match="unknown loss definition"):
        choose_loss(loss_frame([True], [1]), "money", dates)


def test_a_tier_order_problem_names_the_tiers_and_what_to_try() -> None:
    tiers = ladder()
    tier = np.array(["best"] * 4 + ["middle"] * 4 + ["worst"] * 2)
    score = np.array([0.01] * 4 + [0.03] * 4 + [0.5, 0.6])
    rising = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1], dtype=bool)
    assert ordering_problem(tier_table(tiers, tier, rising, score)) is None
    falling = np.array([0, 1, 1, 1, 0, 0, 0, 1, 1, 1], dtype=bool)
    problem = ordering_problem(tier_table(tiers, tier, falling, score), "kept")
    assert problem is not None
    assert "tier 'middle' lost 25.00% of its scored" in problem and "'best' (75.00%)" in problem
    assert "Try:" in problem and "--loss refunds" in problem
    empty = tier_table(tiers, np.array(["best", "worst"]), np.array([False, True]), score[:2])
    assert "middle hold no scored test customer" in str(ordering_problem(empty, "refunds"))


def test_too_short_a_history_says_how_much_is_needed() -> None:
    six_months = snapshot_frame(months=5, complete_until=2)
    with pytest.raises(DataValidationError) as caught:
        plan_tier_split(six_months, pd.Timestamp("2025-03-01"), pd.Timestamp("2025-03-01"))
    message = str(caught.value)
    assert "no snapshot's 90-day window had closed" in message
    assert "needs about" in message and "months of orders" in message
    assert "5 snapshot month(s), 2025-02-01 to 2025-06-01" in message
    with pytest.raises(DataValidationError, match="months of orders"):
        default_cutoff(snapshot_frame(months=5, complete_until=1), test_months=2)


def test_a_model_whose_tiers_do_not_order_loss_is_not_promoted() -> None:
    first = GateResult("roc_auc", 0.7, None, None, True, "first version")
    problem = "realised loss does not rise strictly: tier 'silver' lost less than 'gold'"
    held = held_back_if_disordered(first, problem)
    assert held is not None and not held.promoted
    assert "kept as challenger" in held.describe() and problem in held.describe()
    assert held_back_if_disordered(first, None) is first
    assert held_back_if_disordered(None, problem) is None
