"""Products in the owner's view, on a generated world in a real event store: the products the
world made stand out are found and no ordinary one is; a shop without product ids loses none
of the other figures."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from data.generator import PLANTED_PRODUCTS, catalogue, generate_world
from features.store import EVENT_TABLES, EventStore
from serving import owner
from serving.db import migrate

pytestmark = [pytest.mark.slow]

NOW = datetime(2030, 1, 1)


@pytest.fixture(scope="module")
def world_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-sized world (seed 7) in a SQLite event store, made once."""
    path = tmp_path_factory.mktemp("owner-products") / "events.db"
    store = EventStore.open(f"sqlite:///{path}")
    migrate(store.engine)
    store.write_frames(generate_world(20_000, seed=7).tables)
    store.dispose()
    return path


@pytest.fixture
def store(world_db: Path) -> Iterator[EventStore]:
    opened = EventStore.open(f"sqlite:///{world_db}")
    try:
        yield opened
    finally:
        opened.dispose()


def test_the_planted_products_stand_out_over_the_year_and_no_ordinary_one_does(
    store: EventStore,
) -> None:
    view = owner.build(store.engine, 365, NOW, 24.0)
    products = view.products
    assert {r.product_id for r in products.standing_out} == set(PLANTED_PRODUCTS)
    assert products.with_product == view.totals.orders  # every generated order names one
    assert products.tested > 200  # hundreds of ordinary products were tested, none flagged
    names = catalogue().set_index("product_id")
    for row in products.standing_out:
        assert row.name == names.loc[row.product_id, "product_name"]
        assert row.category == names.loc[row.product_id, "category"]
        assert row.totals.rate is not None and row.category_rate is not None
        assert row.totals.rate > 1.5 * row.category_rate
        # Its top reason is the one the world made it attract.
        assert row.top_details[0][0] in PLANTED_PRODUCTS[row.product_id][0]
        # Why it comes back: every request counted once, and the reason the world made it
        # attract marked as at least twice as common as on the rest of its category.
        assert sum(x.count for x in row.reasons) == row.totals.requests
        assert sum(x.share for x in row.reasons) == pytest.approx(1.0)
        planted = [x for x in row.reasons if x.detail in PLANTED_PRODUCTS[row.product_id][0]]
        assert planted[0] is row.reasons[0] and planted[0].above_category
    # An ordinary product's reasons are mostly its category's: few marked.
    ordinary = [x for r in products.rows if not r.stands_out for x in r.reasons if x.count >= 20]
    assert ordinary and sum(x.above_category for x in ordinary) <= len(ordinary) // 10
    # Listed first, and every product's counts add up to the shop's.
    assert [r.stands_out for r in products.rows[: len(PLANTED_PRODUCTS)]] == [True, True]
    assert sum(r.totals.requests for r in products.rows) == view.totals.requests


def test_a_shop_without_product_ids_loses_nothing_else(world_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "no-products.db"
    shutil.copy(world_db, copy)
    with_products = EventStore.open(f"sqlite:///{world_db}")
    without = EventStore.open(f"sqlite:///{copy}")
    try:
        orders = EVENT_TABLES["orders"]
        with without.engine.begin() as connection:
            connection.execute(sa.update(orders).values(product_id=None, product_name=None))
        a = owner.build(with_products.engine, 30, NOW, 24.0)
        b = owner.build(without.engine, 30, NOW, 24.0)
    finally:
        with_products.dispose()
        without.dispose()
    assert a.products.rows and b.products.rows == []
    assert (b.products.with_product, b.products.tested) == (0, 0)
    for f in dataclasses.fields(owner.OwnerView):
        if f.name != "products":
            assert getattr(a, f.name) == getattr(b, f.name), f.name
