"""The decision log, the feature names its rows refer to, and the API keys.

Revision ID: 0001_decision_log
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_decision_log"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the decision log (unique on the refund id), feature name sets and API keys."""
    op.create_table(
        "serving_decisions",
        sa.Column("decision_id", sa.String(), primary_key=True),
        sa.Column("refund_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("degraded", sa.Boolean(), nullable=False),
        sa.Column("abuse_score", sa.Double(), nullable=True),
        sa.Column("tier", sa.String(), nullable=False),
        sa.Column("amount_requested", sa.Double(), nullable=False),
        sa.Column("abuse_model_version", sa.String(), nullable=True),
        sa.Column("tier_model_version", sa.String(), nullable=True),
        sa.Column("policy_hash", sa.String(), nullable=False),
        sa.Column("feature_version", sa.String(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("features", sa.Text(), nullable=False),
        sa.UniqueConstraint("refund_id", name="uq_serving_decisions_refund_id"),
    )
    op.create_index("ix_serving_decisions_decided_at", "serving_decisions", ["decided_at"])
    op.create_table(
        "serving_feature_sets",
        sa.Column("feature_version", sa.String(), primary_key=True),
        sa.Column("names", sa.Text(), nullable=False),
    )
    op.create_table(
        "serving_api_keys",
        sa.Column("key_id", sa.String(), primary_key=True),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("salt", sa.String(), nullable=False),
        sa.Column("secret_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("serving_api_keys")
    op.drop_table("serving_feature_sets")
    op.drop_index("ix_serving_decisions_decided_at", table_name="serving_decisions")
    op.drop_table("serving_decisions")
