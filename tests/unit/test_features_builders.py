"""Every feature family on a small world built by hand, with values worked out by hand.

Each expectation is checked against both builders: the batch builder over the whole tables, and
the online builder reading a SQLite event store (lazily, and fully preloaded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from data.schema import CATEGORIES, PAYMENT_METHODS, REASON_DETAILS, REASONS
from features.batch import BatchBuilder, build_credit_snapshots, snapshot_dates
from features.definitions import CUSTOMER_FEATURES, FEATURE_NAMES, FEATURES
from features.labels import labels_as_of
from features.online import OnlineFeatureBuilder
from features.store import EventStore

Tables = dict[str, pd.DataFrame]
T = "2025-06-01 12:00:00"
"""The time of the main request, r_target."""


def _order(oid: str, cid: str, at: str, category: str, amount: float, **kw: Any) -> dict[str, Any]:
    row = {
        "order_id": oid,
        "customer_id": cid,
        "ordered_at": at,
        "category": category,
        "amount": amount,
        "item_count": 1,
        "payment_method": "card",
        "device_id": "d-x",
        "address_id": "a-x",
        "payment_fingerprint": "p-x",
        "shipped_at": None,
        "delivered_at": None,
        "delivery_evidence": "none",
    }
    row.update(kw)
    return row


def _refund(
    rid: str,
    oid: str,
    cid: str,
    at: str,
    kind: str,
    detail: str,
    amount: float,
    stage: str = "delivered",
    photos: int = 0,
) -> dict[str, Any]:
    return {
        "refund_id": rid,
        "order_id": oid,
        "customer_id": cid,
        "requested_at": at,
        "refund_type": kind,
        "reason": REASON_DETAILS[detail],
        "reason_detail": detail,
        "amount_requested": amount,
        "photo_count": photos,
        "order_stage": stage,
    }


def _outcome(xid: str, rid: str, abusive: bool, at: str) -> dict[str, Any]:
    return {
        "outcome_id": xid,
        "refund_id": rid,
        "is_abusive": abusive,
        "known_at": at,
        "source": "reviewer",
    }


def _link(cid: str, kind: str, fp: str, at: str) -> dict[str, Any]:
    return {"customer_id": cid, "kind": kind, "fingerprint": fp, "seen_at": at}


HAND_ROWS: dict[str, list[dict[str, Any]]] = {
    "customers": [
        {"customer_id": "cA", "signup_at": "2025-01-01 00:00:00", "region": "north"},
        {"customer_id": "cB", "signup_at": "2025-03-15 00:00:00", "region": "south"},
        {"customer_id": "cC", "signup_at": "2025-05-01 00:00:00", "region": "east"},
        {"customer_id": "cD", "signup_at": "2025-01-15 00:00:00", "region": "west"},
        {"customer_id": "cN", "signup_at": "2025-05-31 00:00:00", "region": "north"},
    ],
    "orders": [
        _order(
            "o0",
            "cA",
            "2025-02-01 12:00:00",
            "beauty",
            20.0,
            shipped_at="2025-02-02 12:00:00",
            delivered_at="2025-02-03 12:00:00",
            delivery_evidence="scan",
        ),
        _order(
            "o1",
            "cA",
            "2025-05-01 12:00:00",
            "apparel",
            100.0,
            shipped_at="2025-05-02 12:00:00",
            delivered_at="2025-05-03 12:00:00",
            delivery_evidence="photo",
        ),
        # Exactly 7 days before T: the first instant of the 7-day window.
        _order(
            "o2",
            "cA",
            "2025-05-25 12:00:00",
            "electronics",
            200.0,
            payment_method="paypal",
            shipped_at="2025-05-26 12:00:00",
            delivered_at="2025-05-28 12:00:00",
            delivery_evidence="signature",
        ),
        # The order of r_target: delivered exactly at T, so not yet delivered for r_target.
        _order(
            "o_target",
            "cA",
            "2025-05-30 12:00:00",
            "fresh_food",
            40.0,
            payment_method="bnpl",
            shipped_at="2025-05-30 18:00:00",
            delivered_at=T,
            delivery_evidence="scan",
        ),
        # Placed exactly at T: invisible to r_target.
        _order("o3", "cA", T, "home", 50.0),
        _order(
            "ob",
            "cB",
            "2025-04-02 12:00:00",
            "electronics",
            300.0,
            shipped_at="2025-04-03 12:00:00",
            delivered_at="2025-04-05 12:00:00",
            delivery_evidence="scan",
        ),
        _order(
            "od1",
            "cD",
            "2025-02-02 12:00:00",
            "home",
            80.0,
            shipped_at="2025-02-03 12:00:00",
            delivered_at="2025-02-05 12:00:00",
            delivery_evidence="scan",
        ),
        _order(
            "od2",
            "cD",
            "2025-05-01 12:00:00",
            "home",
            90.0,
            shipped_at="2025-05-02 12:00:00",
            delivered_at="2025-05-04 12:00:00",
            delivery_evidence="scan",
        ),
        _order("on", "cN", "2025-06-01 11:00:00", "virtual", 15.0),
    ],
    "refund_requests": [
        _refund(
            "r0", "o0", "cA", "2025-02-10 12:00:00", "return_and_refund", "ordered_by_mistake", 20.0
        ),
        _refund("r1", "o1", "cA", "2025-05-05 12:00:00", "return_and_refund", "wrong_size", 100.0),
        _refund("r2", "o2", "cA", "2025-05-29 12:00:00", "refund_only", "not_received", 150.0),
        _refund(
            "r_target",
            "o_target",
            "cA",
            T,
            "refund_only",
            "damaged",
            30.0,
            stage="in_transit",
            photos=2,
        ),
        # Same customer, same instant: neither request sees the other.
        _refund("r3", "o2", "cA", T, "return_and_refund", "changed_mind", 200.0),
        _refund("rz", "o1", "cA", "2025-06-05 12:00:00", "return_and_refund", "other", 10.0),
        _refund("rb", "ob", "cB", "2025-04-10 12:00:00", "refund_only", "not_received", 300.0),
        _refund("rd1", "od1", "cD", "2025-02-10 12:00:00", "refund_only", "damaged", 80.0),
        _refund("rd2", "od2", "cD", "2025-05-20 12:00:00", "refund_only", "damaged", 90.0),
        # A brand-new customer asking at the very moment of their first order.
        _refund(
            "rn",
            "on",
            "cN",
            "2025-06-01 11:00:00",
            "refund_only",
            "ordered_twice",
            15.0,
            stage="not_shipped",
        ),
    ],
    "outcomes": [
        _outcome("x0", "r0", True, "2025-02-20 12:00:00"),
        # r1 found abusive, then cleared: by T its latest known outcome is "not abusive".
        _outcome("x1", "r1", True, "2025-05-10 12:00:00"),
        _outcome("x2", "r1", False, "2025-05-20 12:00:00"),
        # Known exactly at T: not yet known to r_target, known to rz.
        _outcome("x3", "r2", True, T),
        _outcome("xb", "rb", True, "2025-05-15 12:00:00"),
        _outcome("xd1", "rd1", True, "2025-04-01 12:00:00"),
        _outcome("xd2", "rd2", True, "2025-06-02 12:00:00"),
    ],
    "identity_links": [
        _link("cA", "device", "dev-shared", "2025-03-01 00:00:00"),
        _link("cA", "address", "addr-shared", "2025-03-01 00:00:00"),
        _link("cA", "payment", "pay-shared", "2025-05-31 12:00:00"),
        _link("cB", "device", "dev-shared", "2025-04-01 00:00:00"),
        _link("cC", "address", "addr-shared", T),  # seen at T: linked only after T
        _link("cD", "payment", "pay-shared", "2025-02-01 00:00:00"),
        _link("cN", "device", "dev-new", "2025-05-31 00:00:00"),
    ],
}


@pytest.fixture
def hand_world(
    make_tables: Callable[[Mapping[str, Sequence[Mapping[str, Any]]]], Tables],
) -> Tables:
    """The hand-made world above, as raw tables."""
    return make_tables(HAND_ROWS)


def _batch_rows(tables: Tables, tmp_path: Path) -> dict[str, dict[str, Any]]:
    frame = BatchBuilder(tables).refund_rows()
    return {r["refund_id"]: r for r in frame.to_dict("records")}


def _online_rows(tables: Tables, tmp_path: Path, preload: bool) -> dict[str, dict[str, Any]]:
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    store.write_frames(tables)
    builder = OnlineFeatureBuilder(store)
    if preload:
        builder.preload()
    rows = {r["refund_id"]: builder.row(r) for r in tables["refund_requests"].to_dict("records")}
    store.dispose()
    return rows


BUILDERS: dict[str, Callable[[Tables, Path], dict[str, dict[str, Any]]]] = {
    "batch": _batch_rows,
    "online": lambda tables, tmp: _online_rows(tables, tmp, preload=False),
    "online_preloaded": lambda tables, tmp: _online_rows(tables, tmp, preload=True),
}


@pytest.fixture(params=list(BUILDERS))
def rows(
    request: pytest.FixtureRequest, hand_world: Tables, tmp_path: Path
) -> dict[str, dict[str, Any]]:
    """Feature rows of every refund of the hand-made world, per builder."""
    return BUILDERS[request.param](hand_world, tmp_path)


def _check(row: Mapping[str, Any], expected: Mapping[str, float]) -> None:
    for name, want in expected.items():
        got = row[name]
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got), f"{name}: {got} is not missing"
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), f"{name}: {got} != {want}"


NAN = float("nan")


def test_request_and_order_features(rows: dict[str, dict[str, Any]]) -> None:
    _check(
        rows["r_target"],
        {
            "request_type": 0,
            "request_reason": REASONS.index("not_as_described"),
            "request_reason_detail": list(REASON_DETAILS).index("damaged"),
            "request_order_stage": 1,
            "request_amount": 30.0,
            "request_photo_count": 2,
            "order_amount": 40.0,
            "request_share_of_order_amount": 0.75,
            "order_item_count": 1,
            "order_category": CATEGORIES.index("fresh_food"),
            "order_is_non_returnable": 1,
            "order_payment_method": PAYMENT_METHODS.index("bnpl"),
            "order_age_days": 2.0,
            "order_shipped_before_request": 1,
            # Delivered exactly at T: not yet known at T.
            "order_delivered_before_request": 0,
            "order_days_since_delivery": NAN,
            "order_delivery_evidence": -1,
            "order_earlier_refund_requests": 0,
        },
    )
    # rz: o1 was delivered 33 days before, with photo evidence, and r1 asked about it before.
    _check(
        rows["rz"],
        {
            "order_delivered_before_request": 1,
            "order_days_since_delivery": 33.0,
            "order_delivery_evidence": 2,
            "order_earlier_refund_requests": 1,
            "request_share_of_order_amount": 0.1,
        },
    )
    # r3 and r_target share an instant: r3 sees r2 on the same order, not r_target.
    _check(rows["r3"], {"order_earlier_refund_requests": 1})


def test_customer_history_over_windows(rows: dict[str, dict[str, Any]]) -> None:
    _check(
        rows["r_target"],
        {
            "customer_tenure_days": 151.5,
            "customer_days_since_last_order": 2.0,
            "customer_days_since_last_refund_request": 3.0,
            # 7 days: o2 (on the window's first instant) and o_target; r2.
            "customer_orders_7d": 2,
            "customer_spend_7d": 240.0,
            "customer_refund_requests_7d": 1,
            "customer_refund_amount_7d": 150.0,
            "customer_refund_rate_by_count_7d": 0.5,
            "customer_refund_rate_by_amount_7d": 150.0 / 240.0,
            "customer_refund_only_requests_7d": 1,
            "customer_not_received_claims_7d": 1,
            "customer_refund_reasons_used_7d": 1,
            "customer_mean_days_from_delivery_to_claim_7d": 1.0,
            # 30 days: o1 is 31 days back; r1 (27 days back) is in.
            "customer_orders_30d": 2,
            "customer_refund_requests_30d": 2,
            "customer_refund_amount_30d": 250.0,
            "customer_refund_rate_by_count_30d": 1.0,
            "customer_refund_rate_by_amount_30d": 250.0 / 240.0,
            "customer_refund_reasons_used_30d": 2,
            "customer_mean_days_from_delivery_to_claim_30d": 1.5,
            "customer_orders_90d": 3,
            "customer_spend_90d": 340.0,
            # All history: o0..o_target, r0..r2; o3 and r3 (at T) are not there.
            "customer_orders_365d": 4,
            "customer_orders_all_time": 4,
            "customer_spend_all_time": 360.0,
            "customer_refund_requests_all_time": 3,
            "customer_refund_amount_all_time": 270.0,
            "customer_refund_rate_by_count_all_time": 0.75,
            "customer_refund_only_requests_all_time": 1,
            "customer_not_received_claims_all_time": 1,
            "customer_refund_reasons_used_all_time": 3,
            "customer_mean_days_from_delivery_to_claim_all_time": 10.0 / 3.0,
        },
    )


def test_the_customers_habits_and_the_claims_own_kind(rows: dict[str, dict[str, Any]]) -> None:
    # Before T, cA ordered beauty, apparel, electronics and fresh food (paid by bnpl), 360 in
    # all, and claimed three times after delivery (a mistake, a wrong size, "not received").
    _check(
        rows["r_target"],
        {
            "customer_orders_apparel_all_time": 1,
            "customer_share_of_orders_apparel_all_time": 0.25,
            "customer_orders_electronics_all_time": 1,
            "customer_share_of_orders_electronics_all_time": 0.25,
            "customer_orders_paid_disputably_all_time": 1,
            "customer_share_of_orders_paid_disputably_all_time": 0.25,
            "customer_mean_order_amount_all_time": 90.0,
            "customer_damage_claims_all_time": 0,
            "customer_claims_after_delivery_all_time": 3,
            # Refund only, but in transit: a damage claim, not one on delivered goods.
            "request_refund_only_after_delivery": 0,
            "request_not_received_after_delivery": 0,
            "request_claims_a_fault": 1,
        },
    )
    _check(
        rows["r2"],
        {
            "request_refund_only_after_delivery": 1,
            "request_not_received_after_delivery": 1,
            "request_claims_a_fault": 0,
            "customer_claims_after_delivery_all_time": 2,
        },
    )
    # rz sees o3 (home, 50) and both requests at T: r_target's damage claim, made before its
    # parcel was delivered, and r3, made after o2's delivery.
    _check(
        rows["rz"],
        {
            "customer_share_of_orders_apparel_all_time": 0.2,
            "customer_share_of_orders_paid_disputably_all_time": 0.2,
            "customer_mean_order_amount_all_time": 82.0,
            "customer_damage_claims_all_time": 1,
            "customer_claims_after_delivery_all_time": 4,
            "request_refund_only_after_delivery": 0,
        },
    )
    # A new customer asking at the instant of the first order has no habits yet.
    _check(
        rows["rn"],
        {
            "customer_share_of_orders_electronics_all_time": 0.0,
            "customer_mean_order_amount_all_time": 0.0,
            "customer_claims_after_delivery_all_time": 0,
        },
    )


def test_events_at_the_request_time_are_not_visible(rows: dict[str, dict[str, Any]]) -> None:
    # r_target and r3 are at the same instant T as o3, x3, o_target's delivery and cC's link:
    # none of those is visible to either, and the two requests do not see each other.
    for rid in ("r_target", "r3"):
        _check(
            rows[rid],
            {
                "customer_orders_all_time": 4,
                "customer_refund_requests_all_time": 3,
                "customer_confirmed_abusive_refunds": 1,
                "linked_accounts_by_address": 0,
            },
        )


def test_outcomes_count_only_once_known_and_as_last_known(rows: dict[str, dict[str, Any]]) -> None:
    # At T: r0 abusive; r1 flagged then cleared; x3 (r2) arrives exactly at T.
    _check(
        rows["r_target"],
        {
            "customer_confirmed_abusive_refunds": 1,
            "customer_confirmed_abusive_amount": 20.0,
            "customer_refunds_with_known_outcome": 2,
            "customer_confirmed_abuse_rate": 0.5,
        },
    )
    # Four days later, x3 is known.
    _check(
        rows["rz"],
        {
            "customer_confirmed_abusive_refunds": 2,
            "customer_confirmed_abusive_amount": 170.0,
            "customer_refunds_with_known_outcome": 3,
        },
    )
    # Between x1 and x2, r1 would count; r2's request (05-29) sees r1 already cleared.
    _check(
        rows["r2"],
        {"customer_confirmed_abusive_refunds": 1, "customer_refunds_with_known_outcome": 2},
    )


def test_linked_accounts_and_their_known_abuse(rows: dict[str, dict[str, Any]]) -> None:
    _check(
        rows["r_target"],
        {
            "linked_accounts_by_device": 1,  # cB
            "linked_accounts_confirmed_abusive_refunds_by_device": 1,  # xb
            "linked_accounts_by_address": 0,  # cC seen only at T
            "linked_accounts_confirmed_abusive_refunds_by_address": 0,
            "linked_accounts_by_payment": 1,  # cD, since cA's 2025-05-31 sighting
            "linked_accounts_confirmed_abusive_refunds_by_payment": 1,  # xd1 (xd2 comes later)
            "linked_accounts_by_any": 2,
            "linked_accounts_confirmed_abusive_refunds_by_any": 2,
        },
    )
    _check(
        rows["rz"],
        {
            "linked_accounts_by_address": 1,
            "linked_accounts_confirmed_abusive_refunds_by_payment": 2,
            "linked_accounts_by_any": 3,
            "linked_accounts_confirmed_abusive_refunds_by_any": 3,
        },
    )
    # Before cA used the shared card, cD was not linked: r1 (05-05) sees only cB; and as no card
    # of cA was known yet, who shares one is unknown, not none.
    _check(
        rows["r1"],
        {
            "linked_accounts_by_payment": NAN,
            "linked_accounts_confirmed_abusive_refunds_by_payment": NAN,
            "linked_accounts_by_any": 1,
        },
    )


def test_new_customer_gets_defined_values(rows: dict[str, dict[str, Any]]) -> None:
    row = rows["rn"]
    expected: dict[str, float] = {"customer_tenure_days": 35.0 / 24.0, "order_age_days": 0.0}
    for f in FEATURES:
        if f.entity.value in ("customer", "linked_accounts") and f.name not in expected:
            expected[f.name] = f.empty
    # cN's device is known (nobody shares it); no address or card of cN is: those stay missing.
    for sfx in ("device", "any"):
        expected[f"linked_accounts_by_{sfx}"] = 0
        expected[f"linked_accounts_confirmed_abusive_refunds_by_{sfx}"] = 0
    _check(row, expected)
    assert all(row[name] is not None for name in FEATURE_NAMES)


def test_batch_column_types(hand_world: Tables) -> None:
    frame = BatchBuilder(hand_world).refund_rows()
    for f in FEATURES:
        kind = frame[f.name].dtype.kind
        assert kind == ("i" if f.integer else "f"), f"{f.name} has dtype {frame[f.name].dtype}"
    assert frame["label_is_abusive_final"].tolist()[:3] == [True, False, True]


def test_credit_snapshot_features_and_targets(hand_world: Tables) -> None:
    at = pd.Timestamp("2025-06-01")
    builder = BatchBuilder(hand_world)
    snap = builder.snapshot_rows(at).set_index("customer_id")
    assert set(snap.index) == {"cA", "cB", "cC", "cD", "cN"}
    assert list(snap.columns[1 : 1 + len(CUSTOMER_FEATURES)]) == [f.name for f in CUSTOMER_FEATURES]
    a = snap.loc["cA"]
    assert a["customer_orders_all_time"] == 4  # o_target (05-30) in, o3 (T) not yet
    assert a["customer_tenure_days"] == 151.0
    assert a["linked_accounts_by_payment"] == 1
    # In the 90 days from the snapshot: r_target (refund only, but before delivery: the parcel
    # was still in transit, so not the customer's loss), r3 and rz (returned).
    assert a["target_refund_requests_90d"] == 3
    assert a["target_abusive_refunds_90d"] == 0
    assert a["target_loss_amount_90d"] == 0.0
    assert not bool(a["target_has_loss_90d"])
    assert not bool(a["target_window_complete"])  # the data end three months too early
    later = builder.snapshot_rows(pd.Timestamp("2025-05-01")).set_index("customer_id")
    assert "cC" not in later.index and "cN" not in later.index  # not signed up yet
    assert later.loc["cD", "target_abusive_refunds_90d"] == 1  # rd2, confirmed later


def test_snapshot_dates_and_chunks(hand_world: Tables) -> None:
    dates = snapshot_dates(hand_world)
    assert dates[0] == pd.Timestamp("2025-03-01") and dates[-1] == pd.Timestamp("2025-06-01")
    chunks = list(build_credit_snapshots(hand_world))
    assert [c["snapshot_at"].iloc[0] for c in chunks] == dates


def test_labels_as_of_takes_the_latest_known_before_the_cutoff(hand_world: Tables) -> None:
    outcomes = hand_world["outcomes"]
    at_t = labels_as_of(outcomes, T).set_index("refund_id")
    assert bool(at_t.loc["r1", "is_abusive"]) is False  # x2 superseded x1
    assert "r2" not in at_t.index  # x3 is known exactly at T
    between = labels_as_of(outcomes, "2025-05-15").set_index("refund_id")
    assert bool(between.loc["r1", "is_abusive"]) is True
    later = labels_as_of(outcomes, "2025-07-01").set_index("refund_id")
    assert bool(later.loc["r2", "is_abusive"]) and later.loc["r2", "source"] == "reviewer"
    frame = BatchBuilder(hand_world).refund_rows().set_index("refund_id")
    assert frame.loc["r1", "label_known_at"] == pd.Timestamp("2025-05-20 12:00:00")
    assert pd.isna(frame.loc["r_target", "label_is_abusive_final"])
    assert np.isnat(frame.loc[["r_target"], "label_known_at"].to_numpy()).all()


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_a_customer_without_an_account_row_gets_defined_values(
    hand_world: Tables, tmp_path: Path, builder: str
) -> None:
    customers = hand_world["customers"]
    world = {**hand_world, "customers": customers[customers["customer_id"] != "cN"]}
    row = BUILDERS[builder](world, tmp_path)["rn"]
    assert row["customer_tenure_days"] == 0.0
    assert row["order_age_days"] == 0.0
    assert row["customer_orders_all_time"] == 0
