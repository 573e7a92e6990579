"""The product feature measured in `bench/product_feature.py` sees nothing after its request."""

from __future__ import annotations

import numpy as np

from bench.product_feature import product_feature
from data.generator import generate_world


def test_the_product_feature_sees_nothing_after_its_request() -> None:
    tables = generate_world(600, seed=3, months=6).tables
    refunds = tables["refund_requests"]
    rows = refunds[["refund_id", "requested_at"]]
    full = product_feature(tables, rows)
    cut = refunds["requested_at"].sort_values().iloc[len(refunds) // 2]
    # Everything from the cut on removed: the requests before it keep their values.
    before = rows[rows["requested_at"] < cut]
    past = {
        **tables,
        "orders": tables["orders"][tables["orders"]["ordered_at"] < cut],
        "refund_requests": refunds[refunds["requested_at"] < cut],
    }
    np.testing.assert_array_equal(product_feature(past, before), full[before.index.to_numpy()])
    # And it is a rate: between 0 and a few requests per order, set wherever a product is.
    assert np.nanmin(full) >= 0.0 and np.isfinite(full).mean() > 0.9
