"""A realistic shop export, written by the suite itself: what a shop brings on its first day.

`write_shop_export` writes one CSV per table the shop has (customers, orders, refund requests;
no outcomes and no identity links), in the shop's own words (categories, payment methods,
refund types, reasons) with a mapping file onto the service's, no fingerprint columns, a year
of history, cancellations and returns mixed, and dirty rows of every kind scattered through
the files. It returns what a test needs to account for every row: how many data rows each
file holds and, for every dirty row, its line and a fragment of the reason it must be
rejected with.

Made to be reused down the chain: the same export can be taken on to features, tier training,
serving and a decision.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MAPPING_YAML = """\
# The shop's own names -> the service's (see the README, "Bring your own data").
category:
  Clothing: apparel
  Gadgets: electronics
  Home & Garden: home
  Beauty: beauty
payment_method:
  Visa: card
  PayPal: paypal
  Klarna: bnpl
delivery_evidence:
  Tracked: scan
  Untracked: none
  Signed: signature
refund_type:
  Cancellation: refund_only
  Return: return_and_refund
  Refund only: refund_only
reason:
  Cancelled: mistake
  Faulty: not_as_described
  Lost in post: logistics
reason_detail:
  Cancelled: ordered_by_mistake
  Damaged: damaged
  Not received: not_received
order_stage:
  Open: not_shipped
  Delivered: delivered
"""

SHOP_CATEGORIES = ("Clothing", "Gadgets", "Home & Garden", "Beauty")
SHOP_PAYMENTS = ("Visa", "PayPal", "Klarna")
REGIONS = ("Île-de-France", "Bretagne", "Occitanie", "Normandie")

CUSTOMER_COLUMNS = ("customer_id", "signup_at", "region")
# No device_id, address_id or payment_fingerprint: the shop records none.
ORDER_COLUMNS = (
    "order_id",
    "customer_id",
    "ordered_at",
    "category",
    "amount",
    "item_count",
    "payment_method",
    "shipped_at",
    "delivered_at",
    "delivery_evidence",
)
REFUND_COLUMNS = (
    "refund_id",
    "order_id",
    "customer_id",
    "requested_at",
    "refund_type",
    "reason",
    "reason_detail",
    "amount_requested",
    "photo_count",
    "order_stage",
)


@dataclass
class ShopExport:
    """Where the export is and what a correct import of it must report."""

    folder: Path
    mapping: Path
    delimiter: str
    rows: dict[str, int]
    """Data rows written per file (table name -> rows)."""
    dirty: dict[str, dict[int, str]] = field(default_factory=dict)
    """Per table, each dirty row's line -> a fragment of the reason it must be rejected with."""
    start: pd.Timestamp = field(default_factory=lambda: pd.Timestamp("2025-01-01"))
    end: pd.Timestamp = field(default_factory=lambda: pd.Timestamp("2026-01-01"))

    def accepted(self, table: str) -> int:
        """Rows of `table` a correct import keeps."""
        return self.rows[table] - len(self.dirty.get(table, {}))


def _stamp(t: pd.Timestamp) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S}"


def write_shop_export(
    folder: Path,
    *,
    customers: int = 120,
    seed: int = 0,
    delimiter: str = ",",
    us_dates_everywhere: bool = False,
) -> ShopExport:
    """Write a year of a shop's data into `folder` (and its mapping file beside it).

    `delimiter=";"` writes the semicolon variant a European spreadsheet saves;
    `us_dates_everywhere` writes every order date month-first (`12/01/2025 08:26`), an export
    the importer must refuse as a whole.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start, end = pd.Timestamp("2025-01-01"), pd.Timestamp("2026-01-01")
    people, orders, refunds = _clean_rows(rng, customers, start, end)
    dirty = _dirty_rows(people, orders, refunds)
    if us_dates_everywhere:
        for order in orders:
            t = pd.Timestamp(order["ordered_at"])
            order["ordered_at"] = f"{t:%m/%d/%Y %H:%M}"
    clean = {"customers": people, "orders": orders, "refund_requests": refunds}
    lines, counts = _write_tables(folder, delimiter, rng, clean, dirty)
    _name_parent_lines(folder, delimiter, lines)

    mapping = folder.parent / f"{folder.name}-mapping.yaml"
    mapping.write_text(MAPPING_YAML, encoding="utf-8")
    return ShopExport(folder, mapping, delimiter, counts, lines, start, end)


def _clean_rows(
    rng: np.random.Generator, customers: int, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """A year of well-formed customers, orders and refund requests, as the shop writes them."""
    year = (end - start).total_seconds()

    def moment(lo: pd.Timestamp, hi: pd.Timestamp) -> pd.Timestamp:
        span = max((hi - lo).total_seconds(), 60.0)
        return (lo + pd.Timedelta(seconds=float(rng.uniform(0, span)))).floor("min")

    people: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    refunds: list[dict[str, Any]] = []
    for c in range(customers):
        signup = moment(start - pd.Timedelta(days=365), start + pd.Timedelta(days=200))
        cid = f"K{c:05d}"
        people.append(
            {"customer_id": cid, "signup_at": _stamp(signup), "region": rng.choice(REGIONS)}
        )
        for _ in range(int(rng.integers(3, 15))):
            ordered = moment(max(signup, start), start + pd.Timedelta(seconds=year * 0.97))
            amount = round(float(rng.uniform(5, 400)), 2)
            shipped = ordered + pd.Timedelta(hours=float(rng.uniform(6, 48)))
            delivered = shipped + pd.Timedelta(hours=float(rng.uniform(24, 96)))
            order = {
                "order_id": f"INV{len(orders) + 500000}",
                "customer_id": cid,
                "ordered_at": _stamp(ordered),
                "category": rng.choice(SHOP_CATEGORIES),
                "amount": f"{amount:.2f}",
                "item_count": str(int(rng.integers(1, 5))),
                "payment_method": rng.choice(SHOP_PAYMENTS),
                "shipped_at": _stamp(shipped.floor("min")),
                "delivered_at": _stamp(delivered.floor("min")),
                "delivery_evidence": rng.choice(("Tracked", "Untracked", "Signed")),
            }
            draw = rng.random()
            refund: dict[str, Any] | None = None
            if draw < 0.02:  # cancelled before it shipped
                order["shipped_at"] = order["delivered_at"] = ""
                refund = _refund(
                    order, ordered + pd.Timedelta(hours=2), "Cancellation", "Cancelled", "Open"
                )
                refund["reason_detail"] = "Cancelled"
            elif draw < 0.035:  # returned after delivery
                refund = _refund(
                    order, delivered + pd.Timedelta(days=3), "Return", "Faulty", "Delivered"
                )
                refund["reason_detail"] = "Damaged"
            elif draw < 0.05:  # "never arrived": refund only, goods not sent back
                refund = _refund(
                    order,
                    delivered + pd.Timedelta(days=5),
                    "Refund only",
                    "Lost in post",
                    "Delivered",
                )
                refund["reason_detail"] = "Not received"
            if refund is not None and pd.Timestamp(refund["requested_at"]) < end:
                refund["refund_id"] = f"RF{len(refunds) + 1:06d}"
                refunds.append(refund)
            orders.append(order)
    return people, orders, refunds


def _dirty_rows(
    people: list[dict[str, Any]], orders: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> dict[str, list[tuple[dict[str, Any], str]]]:
    """Per table, the rows the importer must reject, each with a fragment of its reason."""
    dirty: dict[str, list[tuple[dict[str, Any], str]]] = {
        "customers": [],
        "orders": [],
        "refund_requests": [],
    }
    base_order = orders[0]
    base_refund = next(r for r in refunds if r["order_id"] != base_order["order_id"])

    # Customers: an unreadable date, a month-first date, an id given twice.
    dirty["customers"] += [
        ({"customer_id": "K90001", "signup_at": "soon", "region": "Bretagne"}, "unparseable date"),
        (
            {"customer_id": "K90002", "signup_at": "12/01/2024 08:26", "region": "Bretagne"},
            "'2024-12-01 08:26' if the month comes first",
        ),
        (people[3] | {"region": "Normandie"}, "duplicate customer_id 'K00003'"),
    ]
    # Orders: negative amount, unmapped category, an id given twice, an impossible date,
    # a decimal comma, and an order of a rejected customer.
    dirty["orders"] += [
        (base_order | {"order_id": "INV-NEG", "amount": "-12.50"}, "amount must be positive"),
        (
            base_order | {"order_id": "INV-TOY", "category": "Toys"},
            "unknown category 'Toys' (allowed: apparel",
        ),
        (base_order | {"amount": "1.00"}, f"duplicate order_id '{base_order['order_id']}'"),
        (base_order | {"order_id": "INV-DATE", "ordered_at": "2025-13-45 10:00:00"}, "date"),
        (base_order | {"order_id": "INV-COMMA", "amount": "12,50"}, "a decimal comma?"),
        (
            base_order | {"order_id": "INV-ORPHANED", "customer_id": "K90001"},
            "customer_id 'K90001' refers to a rejected customers row (line",
        ),
    ]
    # Refunds: of an unknown order, of a rejected order, asking more than was paid.
    dirty["refund_requests"] += [
        (
            base_refund | {"refund_id": "RF-ORPHAN", "order_id": "INV-NOWHERE"},
            "unknown order_id 'INV-NOWHERE' (not in orders)",
        ),
        (
            base_refund | {"refund_id": "RF-OFNEG", "order_id": "INV-NEG"},
            "order_id 'INV-NEG' refers to a rejected orders row (line",
        ),
        (
            base_refund | {"refund_id": "RF-TOOMUCH", "amount_requested": "99999.00"},
            "above order amount",
        ),
    ]
    return dirty


def _write_tables(
    folder: Path,
    delimiter: str,
    rng: np.random.Generator,
    clean: dict[str, list[dict[str, Any]]],
    dirty: dict[str, list[tuple[dict[str, Any], str]]],
) -> tuple[dict[str, dict[int, str]], dict[str, int]]:
    """Write each table's CSV, dirty rows mixed in; each dirty row's line -> reason, and the
    rows written per table."""
    columns = {
        "customers": CUSTOMER_COLUMNS,
        "orders": ORDER_COLUMNS,
        "refund_requests": REFUND_COLUMNS,
    }
    lines: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    for table, rows in clean.items():
        mixed: list[tuple[dict[str, Any], str | None]] = [(row, None) for row in rows]
        # Dirty rows go anywhere after the rows they copy, as in a real export.
        for row, reason in dirty[table]:
            at = int(rng.integers(len(mixed) // 2, len(mixed) + 1))
            mixed.insert(at, (row, reason))
        lines[table] = {i + 2: reason for i, (_, reason) in enumerate(mixed) if reason is not None}
        counts[table] = len(mixed)
        path = folder / f"{table}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(columns[table])
            for row, _ in mixed:
                writer.writerow([row[c] for c in columns[table]])
    return lines, counts


def _name_parent_lines(folder: Path, delimiter: str, lines: dict[str, dict[int, str]]) -> None:
    """The child of a rejected parent must name the parent's line: fill it in now it is known."""
    for table, parent, key in (
        ("orders", "customers", "K90001"),
        ("refund_requests", "orders", "INV-NEG"),
    ):
        parent_line = next(
            line
            for line, row in _lines_of(folder / f"{parent}.csv", delimiter).items()
            if row[0] == key
        )
        for line, reason in lines[table].items():
            if reason.endswith("(line") and f"'{key}'" in reason:
                lines[table][line] = f"{reason} {parent_line} of {parent}.csv)"


def _refund(
    order: dict[str, Any], at: pd.Timestamp, kind: str, reason: str, stage: str
) -> dict[str, Any]:
    return {
        "order_id": order["order_id"],
        "customer_id": order["customer_id"],
        "requested_at": _stamp(at.floor("min")),
        "refund_type": kind,
        "reason": reason,
        "reason_detail": "",
        "amount_requested": order["amount"],
        "photo_count": "0",
        "order_stage": stage,
    }


def _lines_of(path: Path, delimiter: str) -> dict[int, list[str]]:
    """A CSV's data rows by line (no cell in these files spans lines)."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter))
    return {i + 2: row for i, row in enumerate(rows[1:])}
