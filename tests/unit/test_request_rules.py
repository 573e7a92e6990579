"""The rules that tie a refund request to its order (`data.facts`) and the refund id to its
request (`serving.idempotency`), as properties over generated requests and orders."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.facts import (
    FIXED_ORDER_FACTS,
    as_recorded,
    order_changes,
    order_stage_at,
    refund_problems,
    stage_problem,
)
from data.generator import generate_world
from data.importer import import_directory
from data.schema import ORDER_STAGES
from refund_risk.errors import IdempotencyConflictError
from serving.idempotency import canonical_request, check_retry, differing_fields, fingerprint
from serving.schemas import DECISION_REQUEST_EXAMPLE, RefundDecisionRequest

T0 = datetime(2025, 3, 1)
NOW = datetime(2026, 1, 1)

offsets = st.integers(min_value=0, max_value=60 * 24 * 60)  # minutes within 60 days
maybe_offset = st.none() | offsets


def _at(minutes: int | None) -> datetime | None:
    return None if minutes is None else T0 + timedelta(minutes=minutes)


@st.composite
def order_times(draw: st.DrawFn) -> tuple[datetime | None, datetime | None]:
    """Shipping and delivery times as the schema allows: delivered only after shipped."""
    shipped = draw(maybe_offset)
    if shipped is None:
        return None, None
    delivered = draw(st.none() | st.integers(min_value=shipped, max_value=shipped + 20_000))
    return _at(shipped), _at(delivered)


# --- the order's stage ----------------------------------------------------------------------


@given(order_times(), offsets, offsets)
def test_the_stage_only_moves_forward_with_the_request_time(
    times: tuple[datetime | None, datetime | None], a: int, b: int
) -> None:
    shipped, delivered = times
    early, late = sorted((a, b))
    stages = [order_stage_at(_at(m), shipped, delivered) for m in (early, late)]
    assert ORDER_STAGES.index(stages[0]) <= ORDER_STAGES.index(stages[1])


@given(order_times(), offsets)
def test_the_stage_is_what_the_order_had_reached(
    times: tuple[datetime | None, datetime | None], minutes: int
) -> None:
    shipped, delivered = times
    requested = _at(minutes)
    assert requested is not None
    stage = order_stage_at(requested, shipped, delivered)
    if delivered is not None and delivered <= requested:
        assert stage == "delivered"
    elif shipped is not None and shipped <= requested:
        assert stage == "in_transit"
    else:
        assert stage == "not_shipped"


@given(order_times(), offsets, st.sampled_from(ORDER_STAGES))
def test_a_stated_stage_is_refused_exactly_when_it_contradicts_the_order(
    times: tuple[datetime | None, datetime | None], minutes: int, stated: str
) -> None:
    shipped, delivered = times
    requested = _at(minutes)
    problem = stage_problem(stated, requested, shipped, delivered)
    derived = order_stage_at(requested, shipped, delivered)
    if stated == derived:
        assert problem is None
    else:
        assert problem is not None and problem.column == "order_stage"
        assert repr(stated) in problem.message and repr(derived) in problem.message


def test_every_generated_request_obeys_the_stage_rule() -> None:
    # The synthetic world is made by the same rule the service and the importer enforce.
    world = generate_world(1500, seed=3)
    orders = world.tables["orders"].set_index("order_id")
    refunds = world.tables["refund_requests"]
    assert len(refunds) > 50
    for refund in refunds.itertuples():
        order = orders.loc[refund.order_id]
        assert (
            stage_problem(
                refund.order_stage, refund.requested_at, order.shipped_at, order.delivered_at
            )
            is None
        ), refund


# --- a request against its order ------------------------------------------------------------


def _rows(**changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    request = RefundDecisionRequest.model_validate({**DECISION_REQUEST_EXAMPLE, **changes})
    return request.refund_row(), request.order_row()


def test_a_consistent_request_breaks_no_rule() -> None:
    assert refund_problems(*_rows(), now=NOW) == []


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"amount_requested": 100.0}, "amount_requested", "above_order_amount"),
        (
            {"requested_at": "2025-02-10T00:00:00Z", "order_stage": "not_shipped"},
            "order.ordered_at",
            "after_request",
        ),
        ({"order_stage": "not_shipped"}, "order_stage", "stage_mismatch"),
        ({"order_stage": "in_transit"}, "order_stage", "stage_mismatch"),
        ({"requested_at": "2031-02-16T20:05:00Z"}, "requested_at", "in_the_future"),
    ],
)
def test_each_broken_rule_names_the_field_to_change(
    change: dict[str, Any], field: str, kind: str
) -> None:
    problems = refund_problems(*_rows(**change), now=NOW)
    assert [(p.column, p.type) for p in problems] == [(field, kind)]
    assert not problems[0].message.startswith("Value error")


def test_a_stage_without_the_times_for_it_is_refused() -> None:
    order = {**DECISION_REQUEST_EXAMPLE["order"], "delivered_at": None}
    problems = refund_problems(*_rows(order=order), now=NOW)
    assert [p.column for p in problems] == ["order_stage"]
    assert "'delivered'" in problems[0].message and "'in_transit'" in problems[0].message


def test_the_clock_skew_allowance_is_the_limit() -> None:
    refund, order = _rows()
    requested = refund["requested_at"]
    assert refund_problems(refund, order, now=requested - timedelta(seconds=300)) == []
    late = refund_problems(refund, order, now=requested - timedelta(seconds=301))
    assert [p.column for p in late] == ["requested_at"]
    assert (
        refund_problems(
            refund, order, now=requested - timedelta(seconds=301), **{"max_skew_seconds": 600.0}
        )
        == []
    )


# --- an order's recorded facts --------------------------------------------------------------

STORED: dict[str, Any] = {
    **RefundDecisionRequest.model_validate(DECISION_REQUEST_EXAMPLE).order_row(),
}

other_values: dict[str, Any] = {
    "customer_id": "c-other",
    "ordered_at": STORED["ordered_at"] + timedelta(minutes=1),
    "category": "electronics",
    "amount": STORED["amount"] + 0.01,
    "item_count": STORED["item_count"] + 1,
    "payment_method": "paypal",
    "device_id": "d-other",
    "address_id": "a-other",
    "payment_fingerprint": "p-other",
}


@given(st.sampled_from(FIXED_ORDER_FACTS))
def test_any_fixed_fact_changed_is_refused_and_named(column: str) -> None:
    problems = order_changes(STORED, {**STORED, column: other_values[column]})
    assert [p.column for p in problems] == [column]
    if column == "customer_id":  # nothing of the owner is told
        assert problems[0].type == "order_of_another_customer"
        assert STORED["customer_id"] not in problems[0].message


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=10_000))
def test_shipping_and_delivery_may_move_forward_but_never_back(ship: int, deliver: int) -> None:
    shipped = STORED["shipped_at"] + timedelta(minutes=ship)
    delivered = max(STORED["delivered_at"], shipped) + timedelta(minutes=deliver)
    assert order_changes(STORED, {**STORED, "shipped_at": shipped, "delivered_at": delivered}) == []
    if ship:
        back = order_changes(
            {**STORED, "shipped_at": shipped}, {**STORED, "shipped_at": STORED["shipped_at"]}
        )
        assert [p.column for p in back] == ["shipped_at"]


def test_times_filled_in_once_are_not_taken_back() -> None:
    placed = {**STORED, "shipped_at": None, "delivered_at": None, "delivery_evidence": "none"}
    assert order_changes(placed, STORED) == []  # shipped and delivered later: fine
    assert [p.column for p in order_changes(STORED, placed)] == ["shipped_at", "delivered_at"]
    # Evidence comes with a delivery; it does not change without one.
    assert [p.column for p in order_changes(STORED, {**STORED, "delivery_evidence": "none"})] == [
        "delivery_evidence"
    ]


products = st.none() | st.sampled_from(["sku-1", "sku-2", "sku-3"])


@given(products, products)
def test_a_recorded_product_never_changes_an_empty_one_may_be_filled_in(
    before: str | None, after: str | None
) -> None:
    stored = {**STORED, "product_id": before, "product_name": None}
    sent = {**STORED, "product_id": after, "product_name": None}
    problems = order_changes(stored, sent)
    if before is not None and after is not None and before != after:
        assert [(p.column, p.type) for p in problems] == [("product_id", "fixed_fact")]
        assert repr(before) in problems[0].message and repr(after) in problems[0].message
    else:
        assert problems == []
        # What the store then holds: the recorded product, or the one sent if none was.
        assert as_recorded(stored, sent)["product_id"] == (before if before else after)


# --- idempotency ----------------------------------------------------------------------------

BASE = RefundDecisionRequest.model_validate(DECISION_REQUEST_EXAMPLE)

# A different, valid value for every field of a request (leaf fields by dotted name).
CHANGES: dict[str, Any] = {
    "customer_id": "c-someone-else",
    "requested_at": "2025-02-16T20:06:00Z",
    "refund_type": "refund_only",
    "reason": "mistake",
    "reason_detail": "damaged",
    "amount_requested": 12.5,
    "photo_count": 3,
    "order_stage": "in_transit",
    "customer": {"signup_at": "2024-01-01T00:00:00Z", "region": "north"},
    **{f"order.{k}": v for k, v in other_values.items() if k != "customer_id"},
    "order.order_id": "o-other",
    "order.shipped_at": "2025-02-12T17:00:00Z",
    "order.delivered_at": "2025-02-15T11:10:00Z",
    "order.delivery_evidence": "signature",
}


def _changed(field: str) -> RefundDecisionRequest:
    body = json.loads(BASE.model_dump_json())
    value = CHANGES[field]
    if isinstance(value, datetime):
        value = value.isoformat()
    if field == "reason":  # a reason comes with its own details
        body["reason_detail"] = "ordered_by_mistake"
    if field.startswith("order."):
        body["order"][field.removeprefix("order.")] = value
    else:
        body[field] = value
    return RefundDecisionRequest.model_validate(body)


@given(st.sampled_from(sorted(CHANGES)))
def test_any_change_to_any_field_is_a_conflict_naming_that_field(field: str) -> None:
    sent = canonical_request(_changed(field))
    stored = canonical_request(BASE)
    assert fingerprint(sent) != fingerprint(stored)
    expected = {field, "reason_detail"} if field == "reason" else {field}
    assert set(differing_fields(stored, sent)) == expected
    with pytest.raises(IdempotencyConflictError) as caught:
        check_retry(BASE.refund_id, fingerprint(stored), stored, sent)
    assert {f for f, _, _ in caught.value.fields} == expected
    assert str(BASE.amount_requested) not in str(caught.value)  # nothing of the stored one


@settings(max_examples=50)
@given(
    st.sampled_from(["+00:00", "+02:00", "-05:30"]),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_the_same_request_written_otherwise_is_the_same_request(
    zone: str, omit_default: bool, rng: Any
) -> None:
    body = json.loads(json.dumps(DECISION_REQUEST_EXAMPLE))
    sign = 1 if zone[0] == "+" else -1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    local = datetime(2025, 2, 16, 20, 5) + sign * timedelta(hours=hours, minutes=minutes)
    body["requested_at"] = local.isoformat() + zone
    body["amount_requested"] = 59.90  # the same number, written otherwise
    if omit_default:
        body.pop("photo_count")
    keys = list(body)
    rng.shuffle(keys)
    shuffled = {k: body[k] for k in keys}
    sent = canonical_request(RefundDecisionRequest.model_validate_json(json.dumps(shuffled)))
    assert fingerprint(sent) == fingerprint(canonical_request(BASE))
    check_retry(BASE.refund_id, None, canonical_request(BASE), sent)  # no conflict


# --- the importer obeys the same rules ------------------------------------------------------


def test_the_importer_rejects_a_contradicted_stage_and_a_request_from_the_future(
    tmp_path: Path,
) -> None:
    source = tmp_path / "shop"
    source.mkdir()
    order = {
        "order_id": "o1",
        "customer_id": "c1",
        "ordered_at": "2024-02-01 10:00:00",
        "category": "apparel",
        "amount": "50.00",
        "item_count": "1",
        "payment_method": "card",
        "device_id": "d1",
        "address_id": "a1",
        "payment_fingerprint": "p1",
        "shipped_at": "2024-02-02 10:00:00",
        "delivered_at": "2024-02-04 10:00:00",
        "delivery_evidence": "photo",
    }
    refund = {
        "refund_id": "r-good",
        "order_id": "o1",
        "customer_id": "c1",
        "requested_at": "2024-02-06 10:00:00",
        "refund_type": "return_and_refund",
        "reason": "not_as_described",
        "reason_detail": "wrong_size",
        "amount_requested": "50",
        "photo_count": "0",
        "order_stage": "delivered",
    }
    future = (datetime.now() + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
    refunds = [
        refund,
        {**refund, "refund_id": "r-said-unshipped", "order_stage": "not_shipped"},
        {**refund, "refund_id": "r-in-transit", "requested_at": "2024-02-03 10:00:00"},
        {**refund, "refund_id": "r-future", "requested_at": future},
    ]
    tables = {
        "customers": [{"customer_id": "c1", "signup_at": "2024-01-01 00:00:00", "region": "n"}],
        "orders": [order],
        "refund_requests": refunds,
    }
    for name, rows in tables.items():
        pd.DataFrame(rows).to_csv(source / f"{name}.csv", index=False)
    report = import_directory(source, tmp_path / "raw", tmp_path / "rejects")
    assert report.tables["refund_requests"].accepted == 1
    assert report.tables["refund_requests"].reasons == {"in_the_future": 1, "stage_mismatch": 2}
    rejects = pd.read_csv(tmp_path / "rejects" / "refund_requests.rejects.csv")
    reasons = dict(zip(rejects["refund_id"], rejects["reasons"], strict=True))
    assert "'not_shipped'" in reasons["r-said-unshipped"]
    assert "'delivered'" in reasons["r-said-unshipped"]
    assert "'in_transit'" in reasons["r-in-transit"]
    assert "future" in reasons["r-future"]
