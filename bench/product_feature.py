"""Does a product feature help the refund-abuse model? The same world, split and seed, fitted
with and without it; the test months' figures printed side by side.

The feature is the product's refund requests per order placed before the request, shrunk
toward its category's rate over the same past (`SHRINK_ORDERS` orders' worth of it):
(product's requests + k * category rate) / (product's orders + k). Only events strictly before
the request count, so it sees nothing of the future. It is computed here, beside the project's
feature definitions, to measure it before deciding whether it earns a place among them.

    .venv/bin/python -m bench.product_feature --customers 20000 --seed 7 --seed 11
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

import training.abuse
import training.dataset
from data.generator import generate_world
from features.batch import build_refund_features
from features.definitions import FEATURE_NAMES
from training.abuse import train_abuse
from training.dataset import build_abuse_dataset, plan_split

FEATURE = "product_refund_rate_smoothed"
SHRINK_ORDERS = 50.0
FIGURES = (
    "roc_auc",
    "average_precision",
    "calibration_error",
    "roc_auc_true",
    "roc_auc_ratio_to_oracle",
    "at_capacity_money_recall_true",
)


def _counts_before(
    keys: pd.Series, times: pd.Series, at_keys: pd.Series, at_times: pd.Series
) -> np.ndarray:
    """For each (key, time) asked, how many (key, time) events have that key and an earlier
    time."""
    out = np.zeros(len(at_keys), dtype=np.int64)
    events = pd.DataFrame({"k": keys.to_numpy(), "t": times.to_numpy()}).dropna()
    sorted_times = {k: np.sort(g["t"].to_numpy()) for k, g in events.groupby("k")}
    asked = pd.DataFrame({"k": at_keys.to_numpy(), "t": at_times.to_numpy()})
    for k, group in asked.groupby("k"):
        past = sorted_times.get(k)
        if past is not None:
            out[group.index.to_numpy()] = np.searchsorted(past, group["t"].to_numpy(), "left")
    return out


def product_feature(tables: dict[str, pd.DataFrame], rows: pd.DataFrame) -> np.ndarray:
    """The smoothed past refund rate of each request's product, as of the request."""
    orders = tables["orders"]
    refunds = tables["refund_requests"].merge(
        orders[["order_id", "product_id", "category"]], on="order_id"
    )
    asked = rows[["refund_id", "requested_at"]].merge(
        refunds[["refund_id", "product_id", "category"]], on="refund_id", how="left"
    )
    at = asked["requested_at"]
    product_orders = _counts_before(
        orders["product_id"], orders["ordered_at"], asked["product_id"], at
    )
    product_requests = _counts_before(
        refunds["product_id"], refunds["requested_at"], asked["product_id"], at
    )
    category_orders = _counts_before(
        orders["category"], orders["ordered_at"], asked["category"], at
    )
    category_requests = _counts_before(
        refunds["category"], refunds["requested_at"], asked["category"], at
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = np.where(category_orders > 0, category_requests / category_orders, np.nan)
        value = (product_requests + SHRINK_ORDERS * prior) / (product_orders + SHRINK_ORDERS)
    return np.where(asked["product_id"].isna().to_numpy(), np.nan, value)


@contextmanager
def _with_feature() -> Iterator[None]:
    """Training reads the project's feature list; measure with the product feature added."""
    names = (*FEATURE_NAMES, FEATURE)
    saved = training.dataset.FEATURE_NAMES, training.abuse.FEATURE_NAMES
    training.dataset.FEATURE_NAMES = names
    training.abuse.FEATURE_NAMES = names
    try:
        yield
    finally:
        training.dataset.FEATURE_NAMES, training.abuse.FEATURE_NAMES = saved


def measure(customers: int, seed: int) -> pd.DataFrame:
    """The test months' figures of the abuse model without and with the product feature."""
    world = generate_world(customers, seed=seed)
    rows = build_refund_features(world.tables)
    outcomes = world.tables["outcomes"]
    split = plan_split(rows["requested_at"])
    base = train_abuse(build_abuse_dataset(rows, outcomes, split, world.oracle_refunds), seed)
    extended = rows.assign(**{FEATURE: product_feature(world.tables, rows)})
    with _with_feature():
        dataset = build_abuse_dataset(extended, outcomes, split, world.oracle_refunds)
        added = train_abuse(dataset, seed)
    a, b = base.evaluations[0].headline, added.evaluations[0].headline
    return pd.DataFrame(
        {"without": [a[f] for f in FIGURES], "with product feature": [b[f] for f in FIGURES]},
        index=list(FIGURES),
    )


def main() -> None:
    """Print the figures for each seed asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, action="append")
    args = parser.parse_args()
    for seed in args.seed or [7]:
        figures = measure(args.customers, seed)
        print(f"seed {seed}, {args.customers:,} customers, test months:")
        print(figures.round(4).to_string())
        print()


if __name__ == "__main__":
    main()
