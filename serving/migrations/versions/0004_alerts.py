"""Alerts: which are firing, every one that fired, and each attempt to deliver it.

Revision ID: 0004_alerts
Revises: 0003_request_fingerprint
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_alerts"
down_revision = "0003_request_fingerprint"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the alert tables."""
    op.create_table(
        "serving_alert_state",
        sa.Column("rule_id", sa.String(), primary_key=True),
        sa.Column("subject", sa.String(), primary_key=True),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "serving_alert_events",
        sa.Column("event_id", sa.String(), primary_key=True),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("fired_at", sa.DateTime(), nullable=False),
        sa.Column("observed", sa.Double(), nullable=False),
        sa.Column("expected", sa.Double(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_serving_alert_events_fired_at", "serving_alert_events", ["fired_at"])
    op.create_table(
        "serving_alert_deliveries",
        sa.Column("event_id", sa.String(), primary_key=True),
        sa.Column("target", sa.String(), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("attempted_at", sa.DateTime(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    """Drop the alert tables."""
    op.drop_table("serving_alert_deliveries")
    op.drop_index("ix_serving_alert_events_fired_at", table_name="serving_alert_events")
    op.drop_table("serving_alert_events")
    op.drop_table("serving_alert_state")
