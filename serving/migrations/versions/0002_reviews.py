"""Review cases and their resolutions, analysts' tier pins and the watch list.

Every `manual_review` decision already in the log gets its open case here, so a log recorded
before this migration loses no case.

Revision ID: 0002_reviews
Revises: 0001_decision_log
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_reviews"
down_revision = "0001_decision_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the review and override tables; open a case for each past manual review."""
    op.create_table(
        "serving_review_cases",
        sa.Column("case_id", sa.String(), primary_key=True),
        sa.Column("refund_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.UniqueConstraint("refund_id", name="uq_serving_review_cases_refund_id"),
    )
    for column in ("customer_id", "opened_at", "status", "resolved_at"):
        op.create_index(f"ix_serving_review_cases_{column}", "serving_review_cases", [column])
    op.create_table(
        "serving_review_resolutions",
        sa.Column("case_id", sa.String(), primary_key=True),
        sa.Column("refund_id", sa.String(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("amount", sa.Double(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=False),
        sa.Column("outcome_id", sa.String(), nullable=False),
    )
    op.create_index(
        "ix_serving_review_resolutions_resolved_at", "serving_review_resolutions", ["resolved_at"]
    )
    op.create_table(
        "serving_tier_pins",
        sa.Column("pin_id", sa.String(), primary_key=True),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("tier", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_serving_tier_pins_customer_id", "serving_tier_pins", ["customer_id"])
    op.create_table(
        "serving_watchlist",
        sa.Column("entry_id", sa.String(), primary_key=True),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("until", sa.DateTime(), nullable=True),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_serving_watchlist_customer_id", "serving_watchlist", ["customer_id"])
    op.execute(
        "INSERT INTO serving_review_cases (case_id, refund_id, customer_id, opened_at, status, "
        "claimed_by, claimed_until, resolved_at, version) "
        "SELECT decision_id, refund_id, customer_id, decided_at, 'open', NULL, NULL, NULL, 0 "
        "FROM serving_decisions WHERE action = 'manual_review'"
    )


def downgrade() -> None:
    """Drop the review and override tables (the decision log keeps every decision)."""
    op.drop_index("ix_serving_watchlist_customer_id", table_name="serving_watchlist")
    op.drop_table("serving_watchlist")
    op.drop_index("ix_serving_tier_pins_customer_id", table_name="serving_tier_pins")
    op.drop_table("serving_tier_pins")
    op.drop_index(
        "ix_serving_review_resolutions_resolved_at", table_name="serving_review_resolutions"
    )
    op.drop_table("serving_review_resolutions")
    for column in ("customer_id", "opened_at", "status", "resolved_at"):
        op.drop_index(f"ix_serving_review_cases_{column}", table_name="serving_review_cases")
    op.drop_table("serving_review_cases")
