"""The definitions themselves: consistent, described, and versioned by their content."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from data.schema import TABLES
from features.definitions import (
    CATEGORICAL_FEATURES,
    CUSTOMER_FEATURES,
    FEATURE_VERSION,
    FEATURES,
    Aggregation,
    Entity,
    Feature,
    check_definitions,
    definitions_hash,
)


def test_every_feature_is_named_described_and_typed() -> None:
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names))
    for f in FEATURES:
        assert f.description.endswith("."), f.name
        assert f.name == f.name.lower() and " " not in f.name
        if f.categorical:
            assert f.integer and f.values, f.name
    assert len(FEATURES) >= 80
    assert {f.entity for f in FEATURES} == set(Entity)


def test_categorical_codes_follow_the_schema_enums() -> None:
    for f in FEATURES:
        if f.aggregation == Aggregation.CODE:
            table = TABLES[f.source]
            assert f.column is not None
            assert f.values == table.column(f.column).values, f.name
    assert "order_category" in CATEGORICAL_FEATURES
    assert "customer_orders_30d" not in CATEGORICAL_FEATURES


def test_snapshot_features_describe_only_the_customer() -> None:
    assert all(f.entity in (Entity.CUSTOMER, Entity.LINKED_ACCOUNTS) for f in CUSTOMER_FEATURES)
    assert "customer_refund_rate_by_amount_90d" in {f.name for f in CUSTOMER_FEATURES}


def test_the_version_is_a_hash_of_the_content() -> None:
    assert definitions_hash(FEATURES) == FEATURE_VERSION
    reworded = (dataclasses.replace(FEATURES[0], description="Something else."), *FEATURES[1:])
    assert definitions_hash(reworded) != FEATURE_VERSION
    rewindowed = tuple(
        dataclasses.replace(f, window_days=31) if f.name == "customer_orders_30d" else f
        for f in FEATURES
    )
    assert definitions_hash(rewindowed) != FEATURE_VERSION


def test_the_version_is_the_same_in_a_fresh_interpreter() -> None:
    code = "from features.definitions import FEATURE_VERSION; print(FEATURE_VERSION)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == FEATURE_VERSION


def test_inconsistent_definitions_are_refused() -> None:
    twice = (*FEATURES, FEATURES[0])
    with pytest.raises(ValueError, match="defined twice"):
        check_definitions(twice)
    ratio_first = (
        Feature(
            "ratio",
            Entity.CUSTOMER,
            Aggregation.RATIO,
            "orders",
            "A ratio.",
            numerator="a",
            denominator="b",
        ),
    )
    with pytest.raises(ValueError, match="defined before"):
        check_definitions(ratio_first)
    float_linked = (
        Feature(
            "x", Entity.LINKED_ACCOUNTS, Aggregation.LINKED_SUM, "orders", "X.", column="amount"
        ),
    )
    with pytest.raises(ValueError, match="whole-number"):
        check_definitions(float_linked)
