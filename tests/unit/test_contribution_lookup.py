"""The service's contribution look-up gives the training tables' reasons, in their order."""

from __future__ import annotations

import numpy as np

from refund_risk.model_contract.explain import ContributionTables, fit_contribution_tables
from serving.models import ContributionLookup


def _tables(seed: int) -> ContributionTables:
    rng = np.random.default_rng(seed)
    n, k = 400, 12
    X = rng.normal(size=(n, k)).round(1)  # repeated values: some features get one bin per value
    X[:, 3] = rng.integers(0, 4, n)  # a code
    X[rng.random((n, k)) < 0.1] = np.nan
    exact = rng.normal(size=(n, k))
    exact[:, 5] = -np.abs(exact[:, 5])  # a feature that never pushes a score up
    tables = fit_contribution_tables(tuple(f"f{j}" for j in range(k)), X, exact)
    return ContributionTables.from_json(tables.to_json())


def _reference(tables: ContributionTables, x: np.ndarray, top: int) -> list[tuple[int, float]]:
    amounts = tables.explain(x)
    order = np.argsort(amounts, kind="stable")[::-1]
    return [(int(i), float(amounts[i])) for i in order[:top] if amounts[i] > 0]


def test_top_reasons_match_the_tables_for_any_value() -> None:
    rng = np.random.default_rng(3)
    for seed in range(5):
        tables = _tables(seed)
        lookup = ContributionLookup(tables)
        finite = tables.edges[np.isfinite(tables.edges)]
        specials = np.array([np.nan, np.inf, -np.inf, *finite[:20]])  # on the edges themselves
        for _ in range(300):
            x = rng.normal(size=len(tables.names)).round(1)
            pick = rng.random(len(x)) < 0.3
            x[pick] = rng.choice(specials, pick.sum())
            for top in (1, 3, 20):
                assert lookup.top(x.tolist(), top) == _reference(tables, x, top)
            np.testing.assert_array_equal(lookup.explain(x), tables.explain(x))


def test_equal_amounts_put_the_later_feature_first() -> None:
    names = ("a", "b", "c")
    tables = ContributionTables(
        names,
        edges=np.full((3, 1), np.inf),
        contributions=np.array([[0.5, 0.5], [0.2, 0.2], [0.5, 0.5]]),
        missing=np.zeros(3),
    )
    assert ContributionLookup(tables).top([0.0, 0.0, 0.0], 2) == [(2, 0.5), (0, 0.5)]
