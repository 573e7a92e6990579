"""Index decisions by customer: a customer's outstanding unreturned value is read from them.

Revision ID: 0005_decisions_by_customer
Revises: 0004_alerts
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0005_decisions_by_customer"
down_revision = "0004_alerts"
branch_labels = None
depends_on = None

_INDEX = "ix_serving_decisions_customer_id"


def upgrade() -> None:
    """Index serving_decisions by customer_id."""
    op.create_index(_INDEX, "serving_decisions", ["customer_id"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index(_INDEX, table_name="serving_decisions")
