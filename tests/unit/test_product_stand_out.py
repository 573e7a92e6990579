"""The test that flags a product refunded more than its category explains."""

from __future__ import annotations

# The service imports scipy and statsmodels on first use, not when it starts; import them
# here so that no example pays for it against Hypothesis's deadline.
import scipy.stats  # noqa: F401
import statsmodels.stats.multitest  # noqa: F401
from hypothesis import given
from hypothesis import strategies as st

from serving.owner import PRODUCT_MIN_ORDERS, ProductCounts, stand_out

counts = st.builds(
    lambda orders, rate, cat_orders, cat_rate: ProductCounts(
        orders, round(orders * rate), cat_orders, max(round(cat_orders * cat_rate), 1)
    ),
    st.integers(min_value=0, max_value=5_000),
    st.floats(min_value=0.0, max_value=0.5),
    st.integers(min_value=1, max_value=50_000),
    st.floats(min_value=0.001, max_value=0.3),
)


@given(st.lists(counts, min_size=1, max_size=40))
def test_a_product_at_or_below_its_categorys_rate_never_stands_out(
    products: list[ProductCounts],
) -> None:
    for c, (p, q, flag) in zip(products, stand_out(products), strict=True):
        if c.requests * c.category_orders <= c.orders * c.category_requests:
            assert not flag, c
        if c.orders < PRODUCT_MIN_ORDERS:
            assert (p, q, flag) == (None, None, False)
        if p is not None and q is not None:
            assert 0.0 <= p <= q <= 1.0


@given(st.lists(counts, min_size=1, max_size=40), st.integers(min_value=1, max_value=50))
def test_more_requests_never_unflag_a_product(products: list[ProductCounts], more: int) -> None:
    before = stand_out(products)[0]
    first = products[0]
    raised = [ProductCounts(first.orders, first.requests + more, *_rest(first)), *products[1:]]
    after = stand_out(raised)[0]
    if before[2]:
        assert after[2]
    if before[0] is not None and after[0] is not None:
        assert after[0] <= before[0]


def _rest(c: ProductCounts) -> tuple[int, int]:
    return c.category_orders, c.category_requests


def test_a_product_refunded_three_times_its_category_on_many_orders_stands_out() -> None:
    ordinary = [ProductCounts(400, 16, 40_000, 1_600) for _ in range(100)]
    flags = [flag for _, _, flag in stand_out([ProductCounts(400, 48, 40_000, 1_600), *ordinary])]
    assert flags == [True] + [False] * 100
