"""Orders' device, address and payment fingerprints may be empty: many shops record none.

Revision ID: 0002_optional_fingerprints
Revises: 0001_event_store
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_optional_fingerprints"
down_revision = "0001_event_store"
branch_labels = None
depends_on = None

_COLUMNS = ("device_id", "address_id", "payment_fingerprint")


def upgrade() -> None:
    """Let the three fingerprint columns of event_orders hold NULL."""
    # Batch mode: SQLite cannot alter a column in place, so Alembic copies the table.
    with op.batch_alter_table("event_orders") as batch:
        for column in _COLUMNS:
            batch.alter_column(column, existing_type=sa.String(), nullable=True)


def downgrade() -> None:
    """Require the fingerprints again (fails while an order without one is stored)."""
    with op.batch_alter_table("event_orders") as batch:
        for column in _COLUMNS:
            batch.alter_column(column, existing_type=sa.String(), nullable=False)
