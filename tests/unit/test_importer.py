"""The importer of a shop's own files: real CSV and Parquet files written by hand in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data import storage
from data.importer import ImportReport, import_directory
from data.mapping import load_mapping
from data.schema import PRODUCT_COLUMNS, TABLES, Table
from refund_risk.errors import (
    ConfigurationError,
    DataValidationError,
    ImportRejectedError,
    NotFoundError,
)

# A small valid world. Every row passes every rule; tests append or replace rows to break one.
GOOD: dict[str, list[dict[str, str]]] = {
    "customers": [
        {"customer_id": "c1", "signup_at": "2024-01-01 00:00:00", "region": "north"},
        {"customer_id": "c2", "signup_at": "2024-01-05 00:00:00", "region": "south"},
    ],
    "orders": [
        {
            "order_id": "o1",
            "customer_id": "c1",
            "ordered_at": "2024-02-01 10:00:00",
            "category": "apparel",
            "amount": "50.00",
            "item_count": "2",
            "payment_method": "card",
            "device_id": "d1",
            "address_id": "a1",
            "payment_fingerprint": "p1",
            "shipped_at": "2024-02-02 10:00:00",
            "delivered_at": "2024-02-04 10:00:00",
            "delivery_evidence": "photo",
        },
        {
            "order_id": "o2",
            "customer_id": "c2",
            "ordered_at": "2024-02-10 10:00:00",
            "category": "electronics",
            "amount": "200",
            "item_count": "1",
            "payment_method": "paypal",
            "device_id": "d2",
            "address_id": "a2",
            "payment_fingerprint": "p2",
            "shipped_at": "",
            "delivered_at": "",
            "delivery_evidence": "none",
        },
    ],
    "refund_requests": [
        {
            "refund_id": "r1",
            "order_id": "o1",
            "customer_id": "c1",
            "requested_at": "2024-02-06 10:00:00",
            "refund_type": "return_and_refund",
            "reason": "not_as_described",
            "reason_detail": "wrong_size",
            "amount_requested": "50",
            "photo_count": "1",
            "order_stage": "delivered",
        },
        {
            "refund_id": "r2",
            "order_id": "o2",
            "customer_id": "c2",
            "requested_at": "2024-02-11 10:00:00",
            "refund_type": "refund_only",
            "reason": "mistake",
            "reason_detail": "ordered_twice",
            "amount_requested": "100",
            "photo_count": "0",
            "order_stage": "not_shipped",
        },
    ],
    "outcomes": [
        {
            "outcome_id": "x1",
            "refund_id": "r1",
            "is_abusive": "false",
            "known_at": "2024-02-10 10:00:00",
            "source": "warehouse_check",
        },
        {
            "outcome_id": "x2",
            "refund_id": "r2",
            "is_abusive": "YES",
            "known_at": "2024-02-12 10:00:00",
            "source": "reviewer",
        },
    ],
    "identity_links": [
        {"customer_id": "c1", "kind": "device", "fingerprint": "d1", "seen_at": "2024-02-01"},
        {"customer_id": "c2", "kind": "device", "fingerprint": "d2", "seen_at": "2024-02-10"},
    ],
}

# A fresh valid row per table, to be altered into one bad row by a test case.
NEW: dict[str, dict[str, str]] = {
    "customers": {"customer_id": "c9", "signup_at": "2024-01-02", "region": "east"},
    "orders": GOOD["orders"][0] | {"order_id": "o9"},
    "refund_requests": GOOD["refund_requests"][0] | {"refund_id": "r9", "amount_requested": "10"},
    "outcomes": GOOD["outcomes"][0] | {"outcome_id": "x9"},
    "identity_links": GOOD["identity_links"][0] | {"kind": "address", "fingerprint": "a1"},
}


def csv_text(table: str, rows: list[dict[str, str]]) -> str:
    """A CSV file's text with the table's columns in schema order."""
    frame = pd.DataFrame(rows, columns=TABLES[table].column_names, dtype="str")
    return frame.to_csv(index=False)


def write_source(folder: Path, rows: dict[str, list[dict[str, str]]] | None = None) -> Path:
    """Write one CSV per table into `folder`; `rows` replaces the good rows of some tables."""
    folder.mkdir(parents=True, exist_ok=True)
    for table, good in GOOD.items():
        chosen = (rows or {}).get(table, good)
        (folder / f"{table}.csv").write_text(csv_text(table, chosen), encoding="utf-8")
    return folder


def run(tmp_path: Path, source: Path) -> ImportReport:
    """Import `source` into tmp_path/raw with rejects in tmp_path/rejects."""
    return import_directory(source, tmp_path / "raw", tmp_path / "rejects")


def rejects_of(tmp_path: Path, table: str) -> pd.DataFrame:
    """A table's rejects file, every cell as text."""
    return pd.read_csv(
        tmp_path / "rejects" / f"{table}.rejects.csv",
        dtype=str,
        keep_default_na=False,
    )


def assert_balanced(report: ImportReport) -> None:
    """Every read row is either accepted or rejected, in every table."""
    for t in report.tables.values():
        assert t.accepted + t.rejected == t.read, t


# --------------------------------------------------------------------------------------------
# Good data


def test_good_files_are_stored_with_storage_types(tmp_path: Path) -> None:
    report = run(tmp_path, write_source(tmp_path / "src"))

    assert_balanced(report)
    assert {n: (t.read, t.accepted, t.rejected) for n, t in report.tables.items()} == {
        n: (2, 2, 0) for n in TABLES
    }
    assert not (tmp_path / "rejects").exists() or not any((tmp_path / "rejects").iterdir())

    orders = storage.read_table("orders", tmp_path / "raw")
    assert str(orders["ordered_at"].dtype) == "datetime64[us]"
    assert str(orders["shipped_at"].dtype) == "datetime64[us]"
    assert orders["amount"].dtype == "float64"
    assert orders["item_count"].dtype == "int64"
    assert orders["amount"].tolist() == [50.0, 200.0]
    assert orders["ordered_at"].iloc[0] == pd.Timestamp("2024-02-01 10:00:00")
    # An empty cell in a nullable timestamp column is stored as missing, not rejected.
    assert pd.isna(orders["shipped_at"].iloc[1])

    outcomes = storage.read_table("outcomes", tmp_path / "raw")
    assert outcomes["is_abusive"].dtype == "bool"
    assert outcomes["is_abusive"].tolist() == [False, True]  # "false" and "YES"

    links = storage.read_table("identity_links", tmp_path / "raw")
    assert links["seen_at"].tolist() == [pd.Timestamp("2024-02-01"), pd.Timestamp("2024-02-10")]


def test_text_like_na_is_kept_and_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    customers = [
        GOOD["customers"][0] | {"region": "NA"},  # a region called NA, not a missing value
        GOOD["customers"][1] | {"signup_at": "2024-01-05T02:00:00+02:00"},
    ]
    report = run(tmp_path, write_source(tmp_path / "src", {"customers": customers}))

    assert report.tables["customers"].rejected == 0
    stored = storage.read_table("customers", tmp_path / "raw")
    assert stored["region"].tolist() == ["NA", "south"]
    assert stored["signup_at"].iloc[1] == pd.Timestamp("2024-01-05 00:00:00")


# --------------------------------------------------------------------------------------------
# Each kind of bad row, appended after the two good rows: it sits on line 4 of its file.

BAD_ROWS = [
    pytest.param(
        "customers",
        {"region": ""},
        "empty value in required column region",
        "empty_value",
        id="empty-required",
    ),
    pytest.param(
        "customers",
        {"region": "   "},
        "empty value in required column region",
        "empty_value",
        id="blank-is-empty",
    ),
    pytest.param(
        "orders",
        {"ordered_at": "yesterday"},
        "unparseable date in ordered_at: 'yesterday'",
        "unparseable_date",
        id="bad-date",
    ),
    pytest.param(
        "orders",
        {"ordered_at": "02/01/2024"},
        "unparseable date in ordered_at: '02/01/2024' (day and month order cannot be told: "
        "write dates as ISO 8601, e.g. '2024-02-01' if the month comes first, '2024-01-02' if "
        "the day does)",
        "unparseable_date",
        id="ambiguous-date",
    ),
    pytest.param(
        "orders",
        {"amount": "12,50"},
        "non-numeric value in amount: '12,50' (a decimal comma? write the number with a dot: "
        "12.50)",
        "not_a_number",
        id="money-not-numeric",
    ),
    pytest.param(
        "orders",
        {"item_count": "two"},
        "non-numeric value in item_count: 'two'",
        "not_a_number",
        id="count-not-numeric",
    ),
    pytest.param(
        "orders",
        {"amount": "0"},
        "amount must be positive, got '0'",
        "not_positive",
        id="zero-amount",
    ),
    pytest.param(
        "refund_requests",
        {"amount_requested": "-3"},
        "amount_requested must be positive, got '-3'",
        "not_positive",
        id="negative-amount",
    ),
    pytest.param(
        "refund_requests",
        {"photo_count": "-1"},
        "negative count in photo_count: '-1'",
        "negative_count",
        id="negative-count",
    ),
    pytest.param(
        "orders",
        {"item_count": "1.5"},
        "item_count must be a whole number, got '1.5'",
        "not_whole",
        id="fractional-count",
    ),
    pytest.param(
        "orders",
        {"category": "toys"},
        "unknown category 'toys' (allowed: apparel, electronics, home, beauty, fresh_food, "
        "virtual, custom)",
        "unknown_value",
        id="unknown-enum",
    ),
    pytest.param(
        "outcomes",
        {"is_abusive": "maybe"},
        "not a true/false value in is_abusive: 'maybe' (true/1/yes/false/0/no)",
        "not_a_bool",
        id="bad-bool",
    ),
    pytest.param(
        "orders",
        {"order_id": "o1"},
        "duplicate order_id 'o1' (first seen at line 2)",
        "duplicate_key",
        id="duplicate-key",
    ),
    pytest.param(
        "identity_links",
        {"kind": "device", "fingerprint": "d1"},
        "duplicate (customer_id, kind, fingerprint) ('c1', 'device', 'd1') (first seen at line 2)",
        "duplicate_key",
        id="duplicate-composite-key",
    ),
    pytest.param(
        "orders",
        {"customer_id": "c404"},
        "unknown customer_id 'c404' (not in customers)",
        "unknown_customer",
        id="unknown-customer",
    ),
    pytest.param(
        "identity_links",
        {"customer_id": "c404"},
        "unknown customer_id 'c404' (not in customers)",
        "unknown_customer",
        id="link-unknown-customer",
    ),
    pytest.param(
        "refund_requests",
        {"order_id": "o404"},
        "unknown order_id 'o404' (not in orders)",
        "unknown_order",
        id="unknown-order",
    ),
    pytest.param(
        "outcomes",
        {"refund_id": "r404"},
        "unknown refund_id 'r404' (not in refund_requests)",
        "unknown_refund",
        id="unknown-refund",
    ),
    pytest.param(
        "refund_requests",
        {"customer_id": "c2"},
        "customer_id 'c2' is not the order's customer 'c1'",
        "customer_mismatch",
        id="refund-customer-not-order-customer",
    ),
    pytest.param(
        "orders",
        {"ordered_at": "2023-12-31 23:59:00", "shipped_at": "", "delivered_at": ""},
        "order before customer signup: ordered_at 2023-12-31 23:59:00 is before signup_at "
        "2024-01-01 00:00:00",
        "order_before_signup",
        id="order-before-signup",
    ),
    pytest.param(
        "orders",
        {"shipped_at": "2024-02-01 09:00:00", "delivered_at": ""},
        "shipped before ordered: shipped_at 2024-02-01 09:00:00 is before ordered_at "
        "2024-02-01 10:00:00",
        "shipped_before_ordered",
        id="shipped-before-ordered",
    ),
    pytest.param(
        "orders",
        {"shipped_at": ""},
        "delivered without shipped: delivered_at is set but shipped_at is empty",
        "delivered_without_shipped",
        id="delivered-without-shipped",
    ),
    pytest.param(
        "orders",
        {"delivered_at": "2024-02-02 09:00:00"},
        "delivered before shipped: delivered_at 2024-02-02 09:00:00 is before shipped_at "
        "2024-02-02 10:00:00",
        "delivered_before_shipped",
        id="delivered-before-shipped",
    ),
    pytest.param(
        "refund_requests",
        {"requested_at": "2024-01-31 10:00:00"},
        "refund before order: requested_at 2024-01-31 10:00:00 is before the order's "
        "ordered_at 2024-02-01 10:00:00",
        "refund_before_order",
        id="refund-before-order",
    ),
    pytest.param(
        "refund_requests",
        {"amount_requested": "50.01"},
        "amount_requested 50.01 above order amount 50.0",
        "amount_above_order",
        id="amount-above-order",
    ),
    pytest.param(
        "outcomes",
        {"known_at": "2024-02-06 09:59:00"},
        "outcome known before the refund was requested: known_at 2024-02-06 09:59:00 is "
        "before requested_at 2024-02-06 10:00:00",
        "outcome_before_refund",
        id="outcome-before-refund",
    ),
    pytest.param(
        "refund_requests",
        {"reason": "mistake", "reason_detail": "late"},
        "reason_detail 'late' does not belong to reason 'mistake' (it belongs to 'logistics')",
        "reason_mismatch",
        id="reason-detail-mismatch",
    ),
    pytest.param(
        "orders",
        {"product_name": "Slim jeans"},
        "product_name without product_id: name the product's id too, or leave both empty",
        "product_name_without_id",
        id="product-name-without-id",
    ),
    pytest.param(
        "orders",
        {"product_id": "sku1", "product_name": "x" * 201},
        "product_name is longer than 200 characters: '" + "x" * 40 + "...'",
        "product_name_too_long",
        id="product-name-too-long",
    ),
]


@pytest.mark.parametrize(("table", "changes", "reason", "kind"), BAD_ROWS)
def test_each_kind_of_bad_row_is_rejected_with_its_reason_and_line(
    tmp_path: Path, table: str, changes: dict[str, str], reason: str, kind: str
) -> None:
    bad = NEW[table] | changes
    source = write_source(tmp_path / "src", {table: [*GOOD[table], bad]})

    report = run(tmp_path, source)

    assert_balanced(report)
    result = report.tables[table]
    assert (result.read, result.accepted, result.rejected) == (3, 2, 1)
    assert result.reasons.get(kind) == 1, result.reasons
    assert result.rejects_path == tmp_path / "rejects" / f"{table}.rejects.csv"
    rejects = rejects_of(tmp_path, table)
    assert rejects["line"].tolist() == ["4"]  # header line 1, good rows lines 2-3
    assert reason in rejects["reasons"].iloc[0].split("; ")
    # The other tables are untouched by one bad row (their rows do not depend on it).
    for other, t in report.tables.items():
        if other != table:
            assert t.rejected == 0, (other, t.reasons)
    # Only the good rows were stored.
    assert len(storage.read_table(table, tmp_path / "raw")) == 2


def test_a_row_keeps_all_its_reasons_and_its_raw_values(tmp_path: Path) -> None:
    bad = NEW["orders"] | {"category": " toys ", "amount": "-1", "payment_method": ""}
    report = run(tmp_path, write_source(tmp_path / "src", {"orders": [*GOOD["orders"], bad]}))

    rejects = rejects_of(tmp_path, "orders")
    assert rejects.columns[:2].tolist() == ["line", "reasons"]
    assert rejects.columns[2:].tolist() == TABLES["orders"].column_names
    assert rejects["reasons"].iloc[0].split("; ") == [
        "unknown category 'toys' (allowed: apparel, electronics, home, beauty, fresh_food, "
        "virtual, custom)",
        "amount must be positive, got '-1'",
        "empty value in required column payment_method",
    ]
    assert rejects["category"].iloc[0] == " toys "  # raw value, as the shop wrote it
    assert report.tables["orders"].reasons == {
        "empty_value": 1,
        "not_positive": 1,
        "unknown_value": 1,
    }


def test_child_of_rejected_parent_is_rejected(tmp_path: Path) -> None:
    # c3 has an unreadable signup date; its order, refund, outcome and link all hang off it.
    customer = {"customer_id": "c3", "signup_at": "soon", "region": "west"}
    order = NEW["orders"] | {"order_id": "o3", "customer_id": "c3"}
    refund = NEW["refund_requests"] | {"refund_id": "r3", "order_id": "o3", "customer_id": "c3"}
    outcome = NEW["outcomes"] | {"outcome_id": "x3", "refund_id": "r3"}
    link = NEW["identity_links"] | {"customer_id": "c3"}
    rows = {
        "customers": [*GOOD["customers"], customer],
        "orders": [*GOOD["orders"], order],
        "refund_requests": [*GOOD["refund_requests"], refund],
        "outcomes": [*GOOD["outcomes"], outcome],
        "identity_links": [*GOOD["identity_links"], link],
    }
    report = run(tmp_path, write_source(tmp_path / "src", rows))

    assert_balanced(report)
    assert {n: t.rejected for n, t in report.tables.items()} == {n: 1 for n in TABLES}
    expected = {
        "orders": "customer_id 'c3' refers to a rejected customers row",
        "refund_requests": "order_id 'o3' refers to a rejected orders row",
        "outcomes": "refund_id 'r3' refers to a rejected refund_requests row",
        "identity_links": "customer_id 'c3' refers to a rejected customers row",
    }
    for table, reason in expected.items():
        assert reason in rejects_of(tmp_path, table)["reasons"].iloc[0], table
    assert report.tables["orders"].reasons == {"unknown_customer": 1}
    assert report.tables["refund_requests"].reasons == {"unknown_order": 1, "unknown_customer": 1}


def test_line_numbers_count_blank_lines_and_multiline_values(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    (source / "customers.csv").write_text(
        "customer_id,signup_at,region\n"
        'c1,2024-01-01,"north\nwest"\n'  # lines 2-3: a quoted value with a line break
        "\n"  # line 4: blank
        ",,\n"  # line 5: all cells empty, skipped like a blank line
        "c2,2024-01-05,south\n"  # line 6
        "c8,tomorrow,south\n",  # line 7
        encoding="utf-8",
    )
    report = run(tmp_path, source)

    customers = report.tables["customers"]
    assert (customers.read, customers.accepted, customers.rejected) == (3, 2, 1)
    assert "skipped 2 empty line(s)" in customers.warnings
    assert rejects_of(tmp_path, "customers")["line"].tolist() == ["7"]
    stored = storage.read_table("customers", tmp_path / "raw")
    assert stored["region"].tolist() == ["north\nwest", "south"]


def test_extra_columns_are_ignored_with_a_warning(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    frame = pd.DataFrame(GOOD["customers"]).assign(note="vip")
    frame.to_csv(source / "customers.csv", index=False)

    report = run(tmp_path, source)

    assert report.tables["customers"].warnings == ["extra column(s) ignored: note"]
    stored = storage.read_table("customers", tmp_path / "raw")
    assert stored.columns.tolist() == TABLES["customers"].column_names


def test_absent_optional_tables_are_imported_empty(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    (source / "outcomes.csv").unlink()
    (source / "identity_links.csv").unlink()

    report = run(tmp_path, source)

    for table in ("outcomes", "identity_links"):
        result = report.tables[table]
        assert result.source is None
        assert (result.read, result.accepted, result.rejected) == (0, 0, 0)
        assert any("imported as empty" in w for w in result.warnings)
        stored = storage.read_table(table, tmp_path / "raw")
        assert stored.empty
        assert stored.columns.tolist() == TABLES[table].column_names


# --------------------------------------------------------------------------------------------
# Whole-table errors: nothing is written


def test_missing_column_aborts_and_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    old = run(tmp_path, write_source(tmp_path / "old"))  # an earlier, good import
    assert old.rejected == 0
    before = {p.name: p.read_bytes() for p in dest.iterdir()}

    rows = {"customers": [GOOD["customers"][0] | {"region": "moved"}]}
    source = write_source(tmp_path / "src", rows)
    pd.DataFrame(GOOD["orders"]).drop(columns=["amount", "item_count"]).to_csv(
        source / "orders.csv", index=False
    )
    with pytest.raises(DataValidationError) as caught:
        run(tmp_path, source)

    message = str(caught.value)
    assert "orders.csv" in message
    assert "amount, item_count" in message
    after = {p.name: p.read_bytes() for p in dest.iterdir()}
    assert after == before  # not even the valid customers table was replaced
    assert not list((tmp_path / "rejects").iterdir())


def test_both_csv_and_parquet_for_a_table_is_an_error(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    storage.write_table(
        pd.DataFrame(GOOD["customers"]).astype({"signup_at": "datetime64[us]"}),
        TABLES["customers"],
        source,
    )

    with pytest.raises(DataValidationError, match=r"customers\.csv and customers\.parquet"):
        run(tmp_path, source)
    assert not (tmp_path / "raw").exists()


def test_missing_required_table_names_the_expected_file(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    (source / "orders.csv").unlink()

    with pytest.raises(NotFoundError, match=r"orders\.csv or orders\.parquet"):
        run(tmp_path, source)
    assert not (tmp_path / "raw").exists()


def test_unreadable_csv_is_a_whole_table_error(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    (source / "customers.csv").write_text("", encoding="utf-8")

    with pytest.raises(DataValidationError, match=r"customers\.csv is empty"):
        run(tmp_path, source)
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------------------------
# Parquet, stale rejects, round trip, report


def test_parquet_source_is_validated_the_same_way_with_row_numbers(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    (source / "orders.csv").unlink()
    # Typed columns, as another system would write them; the third row is bad twice over.
    orders = pd.DataFrame([*GOOD["orders"], NEW["orders"] | {"category": "toys"}])
    orders = orders.replace("", None)
    for column in ("ordered_at", "shipped_at", "delivered_at"):
        orders[column] = pd.to_datetime(orders[column])
    orders["amount"] = [50.0, 200.0, -1.0]
    orders["item_count"] = [2, 1, 1]
    orders.to_parquet(source / "orders.parquet", index=False)

    report = run(tmp_path, source)

    assert_balanced(report)
    assert (report.tables["orders"].accepted, report.tables["orders"].rejected) == (2, 1)
    rejects = rejects_of(tmp_path, "orders")
    assert rejects["row"].tolist() == ["3"]
    assert rejects["reasons"].iloc[0].split("; ") == [
        "unknown category 'toys' (allowed: apparel, electronics, home, beauty, fresh_food, "
        "virtual, custom)",
        "amount must be positive, got '-1.0'",
    ]
    stored = storage.read_table("orders", tmp_path / "raw")
    assert stored["amount"].tolist() == [50.0, 200.0]
    assert str(stored["delivered_at"].dtype) == "datetime64[us]"
    # The refunds still find their orders, now read from Parquet.
    assert report.tables["refund_requests"].rejected == 0


def test_stale_rejects_file_is_removed_when_a_table_is_clean(tmp_path: Path) -> None:
    bad = NEW["customers"] | {"signup_at": "never"}
    run(tmp_path, write_source(tmp_path / "src", {"customers": [*GOOD["customers"], bad]}))
    stale = tmp_path / "rejects" / "customers.rejects.csv"
    assert stale.exists()

    report = run(tmp_path, write_source(tmp_path / "src"))

    assert not stale.exists()
    assert report.tables["customers"].rejects_path is None


def test_round_trip_storage_to_csv_and_back(tmp_path: Path) -> None:
    # Import the good world once to get typed tables, then make them less tidy.
    run(tmp_path / "first", write_source(tmp_path / "src"))
    original = storage.read_world(tmp_path / "first" / "raw")
    orders = original["orders"].copy()
    # Floats that must survive text exactly, still not below the refunds' amounts.
    orders["amount"] = [50 + 0.1 + 0.2, 1234567.891]
    orders.loc[0, "ordered_at"] = pd.Timestamp("2024-02-01 10:00:00.123456")
    original["orders"] = orders
    stored = tmp_path / "stored"
    for name, frame in original.items():
        storage.write_table(frame, TABLES[name], stored)

    exported = tmp_path / "exported"
    exported.mkdir()
    for name in TABLES:
        storage.read_table(name, stored).to_csv(exported / f"{name}.csv", index=False)
    report = run(tmp_path / "second", exported)

    assert report.rejected == 0
    for name in TABLES:
        pd.testing.assert_frame_equal(
            storage.read_table(name, tmp_path / "second" / "raw"),
            storage.read_table(name, stored),
            check_exact=True,
        )


def test_summary_is_plain_text_that_keeps_every_word(tmp_path: Path) -> None:
    bad = NEW["customers"] | {"signup_at": "never"}
    report = run(tmp_path, write_source(tmp_path / "src", {"customers": [*GOOD["customers"], bad]}))

    text = report.summary()

    for name in TABLES:
        assert name in text
    assert "customers: 1 row(s) rejected" in text
    assert "failed checks by kind (a row may fail several): unparseable_date 1" in text
    assert str(tmp_path / "rejects" / "customers.rejects.csv") in text  # whole, never cut
    assert f"{report.accepted} of {report.read} rows accepted" in text
    assert "…" not in text


def test_importing_the_store_into_itself_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "raw"
    store.mkdir()
    with pytest.raises(DataValidationError, match="import from another folder"):
        import_directory(store, store, tmp_path / "rejects")


# --------------------------------------------------------------------------------------------
# All or nothing: a failed or interrupted import leaves the stored tables as they were


def stored_bytes(folder: Path) -> dict[str, bytes]:
    """Every stored file's bytes, by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_required_table_with_no_accepted_row_stores_nothing(tmp_path: Path) -> None:
    run(tmp_path, write_source(tmp_path / "old"))
    before = stored_bytes(tmp_path / "raw")
    # Every order has a US date: the whole table is rejected.
    orders = [row | {"ordered_at": "12/01/2010 08:26"} for row in GOOD["orders"]]
    rows = {"customers": [GOOD["customers"][0] | {"region": "moved"}], "orders": orders}

    with pytest.raises(ImportRejectedError) as caught:
        run(tmp_path, write_source(tmp_path / "src", rows))

    assert "nothing was stored" in str(caught.value)
    assert "orders (all 2 rows rejected" in str(caught.value)
    assert stored_bytes(tmp_path / "raw") == before  # customers not replaced either
    # The rejects say why, so the shop can fix the export.
    reasons = rejects_of(tmp_path, "orders")["reasons"].tolist()
    assert all("'2010-12-01 08:26' if the month comes first" in r for r in reasons)
    assert "orders: 2 row(s) rejected" in caught.value.summary


def test_a_required_table_with_no_data_rows_stores_nothing(tmp_path: Path) -> None:
    with pytest.raises(ImportRejectedError, match=r"refund_requests \(its file has no data rows"):
        run(tmp_path, write_source(tmp_path / "src", {"refund_requests": []}))
    assert not (tmp_path / "raw").exists()


def test_a_crash_while_writing_leaves_the_old_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(tmp_path, write_source(tmp_path / "old"))
    before = stored_bytes(tmp_path / "raw")
    written: list[str] = []
    real_write = storage.write_table

    def fail_on_third(frame: pd.DataFrame, table: Table, directory: Path) -> Path:
        if len(written) == 2:
            raise OSError("disk full")
        written.append(table.name)
        return real_write(frame, table, directory)

    monkeypatch.setattr(storage, "write_table", fail_on_third)
    rows = {name: [*GOOD[name], NEW[name]] for name in ("customers", "orders")}
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path, write_source(tmp_path / "src", rows))

    assert written == ["customers", "orders"]
    assert stored_bytes(tmp_path / "raw") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".raw")] == []


def test_a_swap_cut_between_its_renames_is_recovered(tmp_path: Path) -> None:
    run(tmp_path, write_source(tmp_path / "old"))
    before = stored_bytes(tmp_path / "raw")
    # What a crash after the first rename leaves: the old folder under its backup name.
    (tmp_path / "raw").rename(tmp_path / ".raw.previous")

    assert len(storage.read_table("customers", tmp_path / "raw")) == 2
    assert stored_bytes(tmp_path / "raw") == before


# --------------------------------------------------------------------------------------------
# Real exports: hints, optional fingerprints, the shop's own names


def test_child_of_rejected_parent_names_the_parents_line(tmp_path: Path) -> None:
    customer = {"customer_id": "c3", "signup_at": "soon", "region": "west"}
    order = NEW["orders"] | {"order_id": "o3", "customer_id": "c3"}
    rows = {"customers": [*GOOD["customers"], customer], "orders": [*GOOD["orders"], order]}
    run(tmp_path, write_source(tmp_path / "src", rows))

    reason = rejects_of(tmp_path, "orders")["reasons"].iloc[0]
    assert reason == "customer_id 'c3' refers to a rejected customers row (line 4 of customers.csv)"


def test_semicolon_file_gets_a_hint_and_imports_with_its_delimiter(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    for path in source.glob("*.csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame.to_csv(path, index=False, sep=";")

    with pytest.raises(DataValidationError, match=r"separated by semicolons.*--delimiter ';'"):
        run(tmp_path, source)

    report = import_directory(source, tmp_path / "raw", tmp_path / "rejects", delimiter=";")
    assert report.rejected == 0
    assert report.accepted == sum(len(rows) for rows in GOOD.values())


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    rows = [*GOOD["customers"], NEW["customers"] | {"region": "Zürich"}]
    (source / "customers.csv").write_bytes(csv_text("customers", rows).encode("cp1252"))

    with pytest.raises(DataValidationError) as caught:
        run(tmp_path, source)
    assert "customers.csv is not utf-8 text: line 4 holds byte 0xfc" in str(caught.value)
    assert "Zürich" in str(caught.value)

    report = import_directory(source, tmp_path / "raw", tmp_path / "rejects", encoding="cp1252")
    assert "Zürich" in storage.read_table("customers", tmp_path / "raw")["region"].tolist()
    assert report.rejected == 0


def test_a_column_named_twice_is_refused(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    text = (source / "customers.csv").read_text()
    lines = [line + ",x" for line in text.splitlines()]
    lines[0] = lines[0].removesuffix(",x") + ",region"
    (source / "customers.csv").write_text("\n".join(lines) + "\n")

    with pytest.raises(DataValidationError, match=r"region \(columns 3, 4\); keep one"):
        run(tmp_path, source)
    assert not (tmp_path / "raw").exists()


def test_thousands_separator_gets_a_hint(tmp_path: Path) -> None:
    bad = NEW["orders"] | {"amount": "1,234.50"}
    run(tmp_path, write_source(tmp_path / "src", {"orders": [*GOOD["orders"], bad]}))
    assert (
        "(a thousands separator? write the number without: 1234.50)"
        in (rejects_of(tmp_path, "orders")["reasons"].iloc[0])
    )


def test_orders_without_fingerprints_are_stored_with_missing_values(tmp_path: Path) -> None:
    blank = dict.fromkeys(("device_id", "address_id", "payment_fingerprint"), "")
    orders = [GOOD["orders"][0] | blank, GOOD["orders"][1] | {"address_id": ""}]
    report = run(tmp_path, write_source(tmp_path / "src", {"orders": orders}))

    assert report.rejected == 0
    stored = storage.read_table("orders", tmp_path / "raw")
    assert stored["device_id"].isna().tolist() == [True, False]
    assert stored["address_id"].isna().tolist() == [True, True]


def test_mapping_turns_the_shops_names_into_the_services(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "category:\n  Clothing: apparel\n  Gadgets: electronics\n"
        "refund_type:\n  Cancellation: refund_only\n"
    )
    orders = [
        GOOD["orders"][0] | {"category": "Clothing"},
        GOOD["orders"][1] | {"category": "Gadgets"},
        NEW["orders"] | {"category": "Toys"},
    ]
    refunds = [
        GOOD["refund_requests"][0],
        GOOD["refund_requests"][1] | {"refund_type": "Cancellation"},
    ]
    source = write_source(tmp_path / "src", {"orders": orders, "refund_requests": refunds})

    report = import_directory(
        source, tmp_path / "raw", tmp_path / "rejects", mapping=load_mapping(mapping)
    )

    stored = storage.read_table("orders", tmp_path / "raw")
    assert stored["category"].tolist() == ["apparel", "electronics"]
    assert storage.read_table("refund_requests", tmp_path / "raw")["refund_type"].tolist() == [
        "return_and_refund",
        "refund_only",
    ]
    assert report.tables["orders"].rejected == 1
    assert rejects_of(tmp_path, "orders")["reasons"].iloc[0] == (
        "unknown category 'Toys' (allowed: apparel, electronics, home, beauty, fresh_food, "
        "virtual, custom; the mapping file maps: Clothing, Gadgets)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("categroy:\n  Clothing: apparel\n", "unknown column 'categroy'; columns that can be"),
        ("category:\n  Clothing: clothes\n", "category 'Clothing' maps to 'clothes', which is"),
        ("category: apparel\n", "category must map the shop's values to the service's"),
        ("- apparel\n", "must map column names to value mappings"),
        ("category: [\n", "is not valid YAML"),
    ],
)
def test_a_wrong_mapping_file_names_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        load_mapping(path)


@pytest.mark.parametrize("seed", range(5))
def test_any_mix_of_bad_rows_is_rejected_exactly_and_leaves_the_good_rows(
    tmp_path: Path, seed: int
) -> None:
    """Whatever bad rows an export holds, in any number and order, every row is accounted for:
    the rejects are exactly the bad rows, at their lines, and every good row is stored."""
    rng = np.random.default_rng(seed)
    picked = [BAD_ROWS[i] for i in rng.choice(len(BAD_ROWS), size=8, replace=True)]
    rows = {table: list(good) for table, good in GOOD.items()}
    bad_lines: dict[str, set[int]] = {table: set() for table in GOOD}
    for param in picked:
        table, changes, _, _ = param.values
        rows[table].append(NEW[table] | changes)
    for table in GOOD:
        # Bad rows come after the good ones (a bad duplicate of a key must not be the first),
        # in a random order among themselves.
        bad = rows[table][len(GOOD[table]) :]
        order = rng.permutation(len(bad))
        rows[table] = [*GOOD[table], *(bad[i] for i in order)]
        bad_lines[table] = set(range(len(GOOD[table]) + 2, len(rows[table]) + 2))

    report = run(tmp_path, write_source(tmp_path / "src", rows))

    assert_balanced(report)
    for table, lines in bad_lines.items():
        result = report.tables[table]
        assert (result.read, result.accepted) == (len(rows[table]), len(GOOD[table])), table
        if lines:
            rejects = rejects_of(tmp_path, table)
            assert {int(n) for n in rejects["line"]} == lines
            assert all(rejects["reasons"].str.len() > 0)
        assert len(storage.read_table(table, tmp_path / "raw")) == len(GOOD[table])


def test_products_are_stored_per_order_and_may_be_left_empty(tmp_path: Path) -> None:
    orders = [
        GOOD["orders"][0] | {"product_id": "sku6", "product_name": "Slim jeans, black"},
        GOOD["orders"][1] | {"product_id": "sku7"},  # an id without a name is fine
        NEW["orders"],  # and an order with no product at all
    ]
    report = run(tmp_path, write_source(tmp_path / "src", {"orders": orders}))

    assert report.rejected == 0
    stored = storage.read_table("orders", tmp_path / "raw")
    assert stored["product_id"].tolist()[:2] == ["sku6", "sku7"]
    assert stored["product_name"].tolist()[0] == "Slim jeans, black"
    assert stored["product_id"].isna().tolist() == [False, False, True]
    assert stored["product_name"].isna().tolist() == [False, True, True]


def test_an_export_without_product_columns_imports_exactly_as_before(tmp_path: Path) -> None:
    with_columns = write_source(tmp_path / "with")
    without = write_source(tmp_path / "without")
    orders = pd.read_csv(without / "orders.csv", dtype=str, keep_default_na=False)
    orders.drop(columns=list(PRODUCT_COLUMNS)).to_csv(without / "orders.csv", index=False)

    a = import_directory(with_columns, tmp_path / "raw-a", tmp_path / "rejects-a")
    b = import_directory(without, tmp_path / "raw-b", tmp_path / "rejects-b")

    # The same rows, the same tables, and no word about products in the summary.
    assert {n: (t.read, t.accepted, t.rejected) for n, t in b.tables.items()} == {
        n: (t.read, t.accepted, t.rejected) for n, t in a.tables.items()
    }
    assert b.tables["orders"].warnings == a.tables["orders"].warnings == []
    shown = b.summary().replace(str(without), str(with_columns)).replace("raw-b", "raw-a")
    assert shown.replace("rejects-b", "rejects-a") == a.summary()
    for name in TABLES:
        pd.testing.assert_frame_equal(
            storage.read_table(name, tmp_path / "raw-b"),
            storage.read_table(name, tmp_path / "raw-a"),
        )
