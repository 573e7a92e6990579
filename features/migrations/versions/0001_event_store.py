"""The event store: customers, orders, refund requests, outcomes and identity links.

Revision ID: 0001_event_store
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_event_store"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the five event tables and the indexes the online builder reads by."""
    op.create_table(
        "event_customers",
        sa.Column("customer_id", sa.String(), primary_key=True),
        sa.Column("signup_at", sa.DateTime(), nullable=False),
        sa.Column("region", sa.String(), nullable=False),
    )
    op.create_table(
        "event_orders",
        sa.Column("order_id", sa.String(), primary_key=True),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("ordered_at", sa.DateTime(), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("amount", sa.Double(), nullable=False),
        sa.Column("item_count", sa.BigInteger(), nullable=False),
        sa.Column("payment_method", sa.String(), nullable=False),
        sa.Column("device_id", sa.String(), nullable=False),
        sa.Column("address_id", sa.String(), nullable=False),
        sa.Column("payment_fingerprint", sa.String(), nullable=False),
        sa.Column("shipped_at", sa.DateTime(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("delivery_evidence", sa.String(), nullable=False),
    )
    op.create_index("ix_event_orders_customer_id", "event_orders", ["customer_id"])
    op.create_table(
        "event_refund_requests",
        sa.Column("refund_id", sa.String(), primary_key=True),
        sa.Column("order_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("refund_type", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("reason_detail", sa.String(), nullable=False),
        sa.Column("amount_requested", sa.Double(), nullable=False),
        sa.Column("photo_count", sa.BigInteger(), nullable=False),
        sa.Column("order_stage", sa.String(), nullable=False),
    )
    op.create_index(
        "ix_event_refund_requests_customer_id", "event_refund_requests", ["customer_id"]
    )
    op.create_index("ix_event_refund_requests_order_id", "event_refund_requests", ["order_id"])
    op.create_table(
        "event_outcomes",
        sa.Column("outcome_id", sa.String(), primary_key=True),
        sa.Column("refund_id", sa.String(), nullable=False),
        sa.Column("is_abusive", sa.Boolean(), nullable=False),
        sa.Column("known_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
    )
    op.create_index("ix_event_outcomes_refund_id", "event_outcomes", ["refund_id"])
    op.create_table(
        "event_identity_links",
        sa.Column("customer_id", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), primary_key=True),
        sa.Column("fingerprint", sa.String(), primary_key=True),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_event_identity_links_kind_fingerprint", "event_identity_links", ["kind", "fingerprint"]
    )


def downgrade() -> None:
    """Drop the event tables."""
    for name in ("identity_links", "outcomes", "refund_requests", "orders", "customers"):
        op.drop_table(f"event_{name}")
