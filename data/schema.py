"""The raw data model: five tables, their columns, types and rules.

This module is the single description of the raw tables. The importer validates against it,
the generator writes exactly it, the README documents it, and the feature pipeline reads it.
All timestamps are timezone-naive UTC; money is in the shop's currency units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pandas as pd
import pyarrow as pa

CATEGORIES: tuple[str, ...] = (
    "apparel",
    "electronics",
    "home",
    "beauty",
    "fresh_food",
    "virtual",
    "custom",
)
"""Goods categories; they differ in return rate, value and whether goods can come back."""

NON_RETURNABLE_CATEGORIES: frozenset[str] = frozenset({"fresh_food", "virtual", "custom"})
"""Goods that are not shipped back: perishable, digital, or made to order."""

PAYMENT_METHODS: tuple[str, ...] = ("card", "paypal", "bnpl", "gift_card", "bank_transfer")

DELIVERY_EVIDENCE: tuple[str, ...] = ("none", "scan", "photo", "signature", "digital")
"""Carrier's proof of delivery, weakest to strongest; `digital` for virtual goods."""

REFUND_TYPES: tuple[str, ...] = ("refund_only", "return_and_refund")

REASONS: tuple[str, ...] = ("mistake", "not_as_described", "logistics", "changed_mind", "other")
"""Top-level refund reasons, as a shop's refund form offers them."""

REASON_DETAILS: dict[str, str] = {
    "ordered_by_mistake": "mistake",
    "ordered_twice": "mistake",
    "not_as_described": "not_as_described",
    "damaged": "not_as_described",
    "wrong_size": "not_as_described",
    "late": "logistics",
    "not_received": "logistics",
    "changed_mind": "changed_mind",
    "other": "other",
}
"""Each detailed reason and the top-level reason it belongs to."""

ORDER_STAGES: tuple[str, ...] = ("not_shipped", "in_transit", "delivered")
"""Where the order was at the moment the refund was requested."""

OUTCOME_SOURCES: tuple[str, ...] = (
    "warehouse_check",
    "delivery_proof",
    "chargeback",
    "investigation",
    "reviewer",
    "closed_no_finding",
)
"""How an outcome became known; `closed_no_finding` closes a refund nobody disputed."""

LINK_KINDS: tuple[str, ...] = ("device", "address", "payment")

FINGERPRINT_COLUMNS: dict[str, str] = {
    "device": "device_id",
    "address": "address_id",
    "payment": "payment_fingerprint",
}
"""The order column holding each kind of identity fingerprint; all three are optional."""


PRODUCT_COLUMNS: tuple[str, ...] = ("product_id", "product_name")
"""The orders' optional product columns; a shop that sends none loses nothing else."""

MAX_PRODUCT_NAME = 200
"""Longest product name the importer and the API accept, in characters."""


class Kind(StrEnum):
    """Logical column types."""

    ID = "id"
    TEXT = "text"
    ENUM = "enum"
    TIMESTAMP = "timestamp"
    MONEY = "money"
    COUNT = "count"
    BOOL = "bool"


ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.ID: pa.string(),
    Kind.TEXT: pa.string(),
    Kind.ENUM: pa.string(),
    Kind.TIMESTAMP: pa.timestamp("us"),
    Kind.MONEY: pa.float64(),
    Kind.COUNT: pa.int64(),
    Kind.BOOL: pa.bool_(),
}


@dataclass(frozen=True)
class Column:
    """One column: its logical type, whether it may be empty, and what it means."""

    name: str
    kind: Kind
    description: str
    nullable: bool = False
    values: tuple[str, ...] = ()
    example: str = ""


@dataclass(frozen=True)
class Table:
    """One raw table: columns, primary key and the file stem it is stored under."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    rules: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        """Column names in schema order."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        """The column called `name`."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        """The Parquet schema the project stores this table in."""
        return pa.schema(
            [pa.field(c.name, ARROW_TYPES[c.kind], nullable=c.nullable) for c in self.columns]
        )


CUSTOMERS = Table(
    name="customers",
    description="One row per customer account.",
    key=("customer_id",),
    columns=(
        Column("customer_id", Kind.ID, "Account id.", example="c0000042"),
        Column(
            "signup_at",
            Kind.TIMESTAMP,
            "When the account was created.",
            example="2024-03-05 14:22:00",
        ),
        Column("region", Kind.TEXT, "Shipping region of the account.", example="north"),
    ),
)

ORDERS = Table(
    name="orders",
    description="One row per order; one order is one line of goods of one category.",
    key=("order_id",),
    rules=(
        "customer_id must exist in customers",
        "ordered_at must not be before the customer's signup_at",
        "shipped_at, if set, must not be before ordered_at",
        "delivered_at, if set, needs shipped_at and must not be before it",
        "amount must be positive",
        "product_name, if set, needs product_id, and is at most 200 characters",
    ),
    columns=(
        Column("order_id", Kind.ID, "Order id.", example="o000000017"),
        Column("customer_id", Kind.ID, "Who ordered.", example="c0000042"),
        Column(
            "ordered_at",
            Kind.TIMESTAMP,
            "When the order was placed.",
            example="2025-02-11 09:30:00",
        ),
        Column("category", Kind.ENUM, "Goods category.", values=CATEGORIES, example="apparel"),
        Column("amount", Kind.MONEY, "Order value paid.", example="59.90"),
        Column("item_count", Kind.COUNT, "Number of items in the order.", example="2"),
        Column(
            "payment_method", Kind.ENUM, "How it was paid.", values=PAYMENT_METHODS, example="card"
        ),
        Column(
            "device_id",
            Kind.ID,
            "Fingerprint of the device used to order; empty if the shop does not record it.",
            nullable=True,
            example="d0001",
        ),
        Column(
            "address_id",
            Kind.ID,
            "Fingerprint of the shipping address; empty if the shop does not record it.",
            nullable=True,
            example="a0001",
        ),
        Column(
            "payment_fingerprint",
            Kind.ID,
            "Fingerprint of the payment instrument; empty if the shop does not record it.",
            nullable=True,
            example="p0001",
        ),
        Column(
            "shipped_at",
            Kind.TIMESTAMP,
            "When it left the warehouse; empty if never.",
            nullable=True,
            example="2025-02-12 16:00:00",
        ),
        Column(
            "delivered_at",
            Kind.TIMESTAMP,
            "When the carrier marked it delivered; empty if not.",
            nullable=True,
            example="2025-02-14 11:10:00",
        ),
        Column(
            "delivery_evidence",
            Kind.ENUM,
            "Carrier's proof of delivery.",
            values=DELIVERY_EVIDENCE,
            example="photo",
        ),
        Column(
            "product_id",
            Kind.ID,
            "The shop's product (SKU) id; empty if the shop does not send it. Gives refund "
            "rate and reasons per product.",
            nullable=True,
            example="sku00006",
        ),
        Column(
            "product_name",
            Kind.TEXT,
            "The product's name as the shop shows it; empty if not sent. Needs product_id.",
            nullable=True,
            example="Slim jeans",
        ),
    ),
)

REFUND_REQUESTS = Table(
    name="refund_requests",
    description="One row per refund request a customer made.",
    key=("refund_id",),
    rules=(
        "order_id must exist in orders, and customer_id must be that order's customer",
        "requested_at must not be before the order's ordered_at",
        "amount_requested must be positive and not above the order's amount",
        "reason_detail must belong to reason",
        "order_stage must be what the order's times give at requested_at: delivered if "
        "delivered_at is at or before it, else in_transit if shipped_at is, else not_shipped",
        "requested_at must not be in the future (beyond 5 minutes of clock difference)",
    ),
    columns=(
        Column("refund_id", Kind.ID, "Refund request id.", example="r00000003"),
        Column("order_id", Kind.ID, "The order it is about.", example="o000000017"),
        Column("customer_id", Kind.ID, "Who asked.", example="c0000042"),
        Column(
            "requested_at",
            Kind.TIMESTAMP,
            "When the customer asked.",
            example="2025-02-16 20:05:00",
        ),
        Column(
            "refund_type",
            Kind.ENUM,
            "Refund only (keep or never got the item) or return.",
            values=REFUND_TYPES,
            example="return_and_refund",
        ),
        Column(
            "reason",
            Kind.ENUM,
            "Reason chosen by the customer.",
            values=REASONS,
            example="not_as_described",
        ),
        Column(
            "reason_detail",
            Kind.ENUM,
            "Detailed reason.",
            values=tuple(REASON_DETAILS),
            example="wrong_size",
        ),
        Column("amount_requested", Kind.MONEY, "Money asked back.", example="59.90"),
        Column("photo_count", Kind.COUNT, "Photos attached as evidence.", example="0"),
        Column(
            "order_stage",
            Kind.ENUM,
            "Where the order was when the request came.",
            values=ORDER_STAGES,
            example="delivered",
        ),
    ),
)

OUTCOMES = Table(
    name="outcomes",
    description=(
        "What was learnt about a refund request, and when. A request may have several "
        "outcomes over time; the latest one known at a moment is the label as of that moment."
    ),
    key=("outcome_id",),
    rules=(
        "refund_id must exist in refund_requests",
        "known_at must not be before the refund's requested_at",
    ),
    columns=(
        Column("outcome_id", Kind.ID, "Outcome id.", example="x00000003"),
        Column("refund_id", Kind.ID, "The refund request it is about.", example="r00000003"),
        Column("is_abusive", Kind.BOOL, "Whether the request was found abusive.", example="false"),
        Column(
            "known_at", Kind.TIMESTAMP, "When this became known.", example="2025-02-24 10:00:00"
        ),
        Column(
            "source",
            Kind.ENUM,
            "How it became known.",
            values=OUTCOME_SOURCES,
            example="warehouse_check",
        ),
    ),
)

IDENTITY_LINKS = Table(
    name="identity_links",
    description=(
        "Fingerprints seen on an account: devices, addresses and payment instruments. "
        "Accounts sharing a fingerprint are linked."
    ),
    key=("customer_id", "kind", "fingerprint"),
    rules=("customer_id must exist in customers",),
    columns=(
        Column("customer_id", Kind.ID, "The account.", example="c0000042"),
        Column("kind", Kind.ENUM, "What was fingerprinted.", values=LINK_KINDS, example="device"),
        Column("fingerprint", Kind.ID, "The fingerprint.", example="d0001"),
        Column(
            "seen_at",
            Kind.TIMESTAMP,
            "When it was first seen on this account.",
            example="2025-02-11 09:30:00",
        ),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (CUSTOMERS, ORDERS, REFUND_REQUESTS, OUTCOMES, IDENTITY_LINKS)
}
"""All raw tables, in dependency order (a table refers only to tables before it)."""

ORACLE_REFUNDS = Table(
    name="oracle_refunds",
    description="Ground truth per refund request (synthetic worlds only; evaluation only).",
    key=("refund_id",),
    columns=(
        Column("refund_id", Kind.ID, "Refund request id."),
        Column("true_abuse_probability", Kind.MONEY, "Probability the world drew abuse with."),
        Column("is_abusive_true", Kind.BOOL, "Whether it really was abusive."),
        Column("pattern", Kind.TEXT, "Abuse pattern, or `honest`."),
    ),
)

ORACLE_CUSTOMERS = Table(
    name="oracle_customers",
    description="Ground truth per customer (synthetic worlds only; evaluation only).",
    key=("customer_id",),
    columns=(
        Column("customer_id", Kind.ID, "Account id."),
        Column("latent_type", Kind.TEXT, "The behaviour type the world gave the customer."),
        Column("ring_id", Kind.TEXT, "Abuse ring the account belongs to.", nullable=True),
    ),
)


def empty_frame(table: Table) -> pd.DataFrame:
    """A zero-row frame with the table's columns and storage types."""
    return table.arrow_schema().empty_table().to_pandas()
