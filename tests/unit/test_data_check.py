"""`data check`: what the data can train, judged by the training code's own rules."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

from data import minimums
from data.check import check_data
from data.schema import TABLES, empty_frame
from refund_risk.errors import DataValidationError

Tables = dict[str, pd.DataFrame]


def test_minimums_are_the_training_defaults() -> None:
    from features.batch import CREDIT_TARGET_DAYS
    from training.cli import train_abuse_command, train_tier_command
    from training.dataset import plan_split
    from training.run_tier import run_tier_training
    from training.tier import default_cutoff, plan_tier_split, train_tier_model

    def default(func: object, name: str) -> object:
        return inspect.signature(func).parameters[name].default  # type: ignore[arg-type]

    assert default(plan_split, "test_months") == minimums.ABUSE_TEST_MONTHS
    assert default(train_abuse_command, "test_months") == minimums.ABUSE_TEST_MONTHS
    assert default(plan_split, "calibration_months") == minimums.ABUSE_CALIBRATION_MONTHS
    assert default(plan_split, "label_delay_days") == minimums.ABUSE_LABEL_DELAY_DAYS
    assert default(train_tier_command, "test_months") == minimums.TIER_TEST_MONTHS
    assert default(run_tier_training, "test_months") == minimums.TIER_TEST_MONTHS
    assert default(default_cutoff, "test_months") == minimums.TIER_TEST_MONTHS
    assert default(plan_tier_split, "calibration_months") == minimums.TIER_CALIBRATION_MONTHS
    assert default(train_tier_model, "calibration_months") == minimums.TIER_CALIBRATION_MONTHS
    assert CREDIT_TARGET_DAYS == minimums.CREDIT_TARGET_DAYS


def world(months: int, *, outcomes: bool = False, refund_only: bool = True) -> Tables:
    """A small shop: one order and one refund per customer-week over `months` months."""
    start = pd.Timestamp("2025-01-01")
    end = start + pd.DateOffset(months=months)
    days = pd.date_range(start, end - pd.Timedelta(days=1), freq="7D") + pd.Timedelta(hours=10)
    n = len(days)
    ids = [f"c{i % 40}" for i in range(n)]
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(40)],
            "signup_at": pd.Timestamp("2024-01-01"),
            "region": "north",
        }
    )
    orders = empty_frame(TABLES["orders"]).reindex(range(n))
    orders = orders.assign(
        order_id=[f"o{i}" for i in range(n)],
        customer_id=ids,
        ordered_at=days,
        category="apparel",
        amount=50.0,
    )
    refunds = empty_frame(TABLES["refund_requests"]).reindex(range(n))
    refunds = refunds.assign(
        refund_id=[f"r{i}" for i in range(n)],
        order_id=[f"o{i}" for i in range(n)],
        customer_id=ids,
        requested_at=days + pd.Timedelta(days=3),
        refund_type="refund_only" if refund_only else "return_and_refund",
        order_stage="delivered",
        amount_requested=50.0,
    )
    found = empty_frame(TABLES["outcomes"])
    if outcomes:
        found = pd.DataFrame(
            {
                "outcome_id": [f"x{i}" for i in range(n)],
                "refund_id": refunds["refund_id"],
                "is_abusive": np.arange(n) % 3 == 0,
                "known_at": refunds["requested_at"] + pd.Timedelta(days=5),
                "source": "warehouse_check",
            }
        )
    return {
        "customers": customers,
        "orders": orders,
        "refund_requests": refunds,
        "outcomes": found,
        "identity_links": empty_frame(TABLES["identity_links"]),
    }


def model(tables: Tables, name: str):  # type: ignore[no-untyped-def]
    return next(m for m in check_data(tables).models if m.model == name)


@pytest.mark.parametrize("months", [4, 5, 6, 7, 9])
def test_abuse_span_verdict_agrees_with_the_training_split(months: int) -> None:
    from training.dataset import plan_split

    tables = world(months, outcomes=True)
    verdict = model(tables, "abuse model")
    try:
        plan_split(tables["refund_requests"]["requested_at"])
        fits = True
    except DataValidationError:
        fits = False
    too_short = any("more than 5 months before the last one" in m for m in verdict.missing)
    assert too_short is not fits
    if fits:
        assert verdict.ready


def test_without_outcomes_the_abuse_model_says_what_is_missing() -> None:
    verdict = model(world(12), "abuse model")
    assert not verdict.ready
    assert verdict.missing[0].startswith(
        "the abuse model needs at least 1 labelled request in its train period (before "
    )
    assert verdict.missing[0].endswith("you have 0")
    assert "you have 0 abusive and 0 not abusive" in verdict.missing[1]
    assert "import outcomes.csv" in verdict.advice


@pytest.mark.parametrize("months", [5, 6, 7, 8, 12])
def test_tier_months_verdict_agrees_with_the_training_split(months: int) -> None:
    from features.batch import build_credit_snapshots
    from training.tier import choose_loss, default_cutoff, plan_tier_split

    tables = world(months)
    verdict = model(tables, "credit-tier model")
    snapshots = pd.concat(list(build_credit_snapshots(tables)), ignore_index=True)
    try:
        cutoff = default_cutoff(snapshots)
        split = plan_tier_split(snapshots, cutoff, cutoff)
        fit = snapshots[snapshots["snapshot_at"].isin(split.fit_dates)]
        choose_loss(fit, "auto", split.fit_dates)  # as `train tier` does by default
        fits = True
    except DataValidationError:
        fits = False
    assert verdict.ready is fits, verdict


def test_with_no_goods_kept_any_refund_counts_as_the_loss_as_training_does() -> None:
    verdict = model(world(12, refund_only=False), "credit-tier model")
    assert verdict.ready, verdict
    assert "any refund request" in verdict.detail


def test_no_refund_at_all_makes_the_tier_model_say_what_a_loss_is() -> None:
    tables = world(12, refund_only=False)
    tables["refund_requests"] = tables["refund_requests"].head(0)
    verdict = model(tables, "credit-tier model")
    assert not verdict.ready
    assert "with a refund loss in its fit months" in verdict.missing[0]
    assert "A loss is a refund found abusive by an outcome" in verdict.missing[0]


def test_no_orders_is_said_not_crashed() -> None:
    tables = {name: empty_frame(t) for name, t in TABLES.items()}
    check = check_data(tables)
    assert [m.ready for m in check.models] == [False, False]
    assert "needs orders: you have 0" in check.models[0].missing[0]
    assert "no dated rows" in check.format()


def test_product_coverage_is_counted_and_its_absence_said() -> None:
    tables = world(3)
    without = check_data(tables)
    assert (without.product_coverage, without.products) == (0.0, 0)
    assert "per-product figures need product_id on orders" in without.format()
    orders = tables["orders"]
    named = pd.Series([f"sku{(i // 2) % 4}" if i % 2 else None for i in range(len(orders))])
    tables["orders"] = orders.assign(product_id=named.to_numpy())
    check = check_data(tables)
    assert check.products == 4
    assert check.product_coverage == pytest.approx(named.notna().mean())
    assert f"{named.notna().mean():.1%} of orders name one of 4 products" in check.format()
