"""Parity: the online builder, fed history in time order through a real event store, gives the
same rows as the batch builder (exactly for whole numbers, within 1e-9 for the rest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from features.batch import BatchBuilder, snapshot_dates
from features.definitions import CUSTOMER_FEATURES, FEATURES
from features.online import OnlineFeatureBuilder
from features.replay import replay
from features.store import EventStore

Tables = dict[str, pd.DataFrame]


def mismatches(online: pd.DataFrame, batch: pd.DataFrame) -> list[str]:
    """Features whose values differ between the two builders, with an example each."""
    batch = batch.loc[online.index]
    found = []
    for f in FEATURES:
        got = online[f.name].to_numpy(dtype=np.float64)
        want = batch[f.name].to_numpy(dtype=np.float64)
        both_missing = np.isnan(got) & np.isnan(want)
        if f.integer:
            bad = ~((got == want) | both_missing)
        else:
            close = np.abs(got - want) <= 1e-9 * np.maximum(1.0, np.abs(want))
            bad = ~(close | both_missing)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            found.append(
                f"{f.name}: {online.index[i]} online {got[i]!r} batch {want[i]!r} "
                f"({int(bad.sum())} rows)"
            )
    return found


def _fresh_rows(store: EventStore, tables: Tables, refund_ids: list[str]) -> pd.DataFrame:
    """Rows from a new builder that has only the store: what a restarted service computes."""
    builder = OnlineFeatureBuilder(store)
    refunds = tables["refund_requests"].set_index("refund_id", drop=False)
    rows = {rid: builder.row(refunds.loc[rid].to_dict()) for rid in refund_ids}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_parity_on_a_generated_world(fast_tmp_path: Path) -> None:
    from data.generator import generate_world

    tables = generate_world(n_customers=20_000, seed=7).tables
    batch = BatchBuilder(tables).refund_rows().set_index("refund_id")
    rng = np.random.default_rng(2025)
    chosen = list(rng.choice(batch.index.to_numpy(), size=2_000, replace=False))
    store = EventStore.open(f"sqlite:///{fast_tmp_path / 'events.db'}")
    builder = OnlineFeatureBuilder(store)
    builder.preload()  # an empty store: from here on memory follows the appends
    online = replay(builder, tables, chosen)
    assert len(online) == 2_000
    assert mismatches(online, batch) == []
    # The store alone (no memory of the replay) gives the same rows.
    assert mismatches(_fresh_rows(store, tables, chosen[:200]), batch) == []
    store.dispose()


def test_parity_on_random_worlds(
    random_world: Callable[..., Tables], store_url: tuple[str, str | None]
) -> None:
    url, schema = store_url
    tables = random_world(seed=21, n_customers=70)
    batch = BatchBuilder(tables).refund_rows().set_index("refund_id")
    store = EventStore.open(url, schema=schema)
    online = replay(OnlineFeatureBuilder(store), tables, list(batch.index))
    assert len(online) == len(batch) > 100
    assert mismatches(online, batch) == []
    assert mismatches(_fresh_rows(store, tables, list(batch.index[:60])), batch) == []
    store.dispose()


def _snapshot_mismatches(online: pd.DataFrame, batch: pd.DataFrame) -> list[str]:
    """`mismatches` over the customer-level features only (a credit snapshot's columns)."""
    found = []
    batch = batch.loc[online.index]
    for f in CUSTOMER_FEATURES:
        got = online[f.name].to_numpy(dtype=np.float64)
        want = batch[f.name].to_numpy(dtype=np.float64)
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        if not f.integer:
            same |= np.abs(got - want) <= 1e-9 * np.maximum(1.0, np.abs(want))
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            found.append(f"{f.name}: {online.index[i]} online {got[i]!r} batch {want[i]!r}")
    return found


def test_customer_rows_as_of_a_month_start_equal_the_credit_snapshots(
    fast_tmp_path: Path,
) -> None:
    """The online builder's customer-level row as of a snapshot date is the batch builder's
    credit snapshot row, for customers with and without history, preloaded or read lazily."""
    from data.generator import generate_world

    tables = generate_world(n_customers=3_000, seed=5).tables
    batch = BatchBuilder(tables)
    dates = snapshot_dates(tables)
    store = EventStore.open(f"sqlite:///{fast_tmp_path / 'events.db'}")
    store.write_frames(tables)
    preloaded = OnlineFeatureBuilder(store)
    preloaded.preload()
    lazy = OnlineFeatureBuilder(store)  # reads each customer's history when first asked
    rng = np.random.default_rng(3)
    names = [f.name for f in FEATURES]
    for at in (dates[len(dates) // 2], dates[-1]):
        snapshot = batch.snapshot_rows(at).set_index("customer_id")
        chosen = list(rng.choice(snapshot.index.to_numpy(), size=300, replace=False))
        for builder in (preloaded, lazy):
            rows = {cid: builder.customer_vector(cid, at.to_pydatetime()) for cid in chosen}
            assert all(row is not None for row in rows.values())
            online = pd.DataFrame.from_dict(rows, orient="index", columns=names)
            assert _snapshot_mismatches(online, snapshot) == []
        # Customers who had not signed up by then have no snapshot.
        later = tables["customers"].loc[tables["customers"]["signup_at"] >= at, "customer_id"]
        for cid in later.head(20):
            assert preloaded.customer_vector(cid, at.to_pydatetime()) is None
    assert preloaded.customer_vector("nobody", dates[-1].to_pydatetime()) is None
    store.dispose()


def test_parity_when_the_shop_records_no_address_or_card(
    random_world: Callable[..., Tables], sqlite_url: str
) -> None:
    """Fingerprints a shop does not record make the linked-account features missing, not 0,
    in both builders alike; the kinds it does record still count."""
    tables = random_world(seed=22, n_customers=70)
    links = tables["identity_links"]
    tables["identity_links"] = links[links["kind"] == "device"].reset_index(drop=True)
    orders = tables["orders"].copy()
    orders["address_id"] = None
    orders["payment_fingerprint"] = None
    tables["orders"] = orders
    batch = BatchBuilder(tables).refund_rows().set_index("refund_id")
    store = EventStore.open(sqlite_url)
    online = replay(OnlineFeatureBuilder(store), tables, list(batch.index))

    assert mismatches(online, batch) == []
    for kind in ("address", "payment"):
        assert batch[f"linked_accounts_by_{kind}"].isna().all()
        assert batch[f"linked_accounts_confirmed_abusive_refunds_by_{kind}"].isna().all()
    assert batch["linked_accounts_by_device"].notna().any()
    assert (batch["linked_accounts_by_device"].fillna(0) > 0).any()
    store.dispose()
