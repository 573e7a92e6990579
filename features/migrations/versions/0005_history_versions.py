"""A version per customer history, bumped with every write of the customer's events.

Several service processes on one PostgreSQL database each keep customer histories in memory; a
process uses its copy only while the version it read with it is still the stored one.

Revision ID: 0005_history_versions
Revises: 0004_order_products
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_history_versions"
down_revision = "0004_order_products"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create event_history_versions (customer id, version)."""
    op.create_table(
        "event_history_versions",
        sa.Column("customer_id", sa.String(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    """Drop event_history_versions."""
    op.drop_table("event_history_versions")
