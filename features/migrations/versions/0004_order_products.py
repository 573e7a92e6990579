"""Orders may name their product: optional product_id and product_name, indexed by product.

Shops that send no product keep NULL in both; per-product figures group orders by product_id.

Revision ID: 0004_order_products
Revises: 0003_fingerprint_index
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_order_products"
down_revision = "0003_fingerprint_index"
branch_labels = None
depends_on = None

_INDEX = "ix_event_orders_product_id"


def upgrade() -> None:
    """Add the nullable product_id and product_name columns to event_orders, and the index."""
    op.add_column("event_orders", sa.Column("product_id", sa.String(), nullable=True))
    op.add_column("event_orders", sa.Column("product_name", sa.String(), nullable=True))
    op.create_index(_INDEX, "event_orders", ["product_id"])


def downgrade() -> None:
    """Drop the product columns and their index."""
    op.drop_index(_INDEX, table_name="event_orders")
    with op.batch_alter_table("event_orders") as batch:
        batch.drop_column("product_name")
        batch.drop_column("product_id")
