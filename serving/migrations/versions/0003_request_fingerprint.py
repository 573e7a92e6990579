"""The fingerprint of each decision's request, binding the refund id to the request it answered.

Adds `serving_decisions.request_hash` and fills it in for the decisions already in the log from
their stored requests (stored in canonical form from the start), a batch at a time, so a log
recorded before this migration tells a retry from a different request as well.

Revision ID: 0003_request_fingerprint
Revises: 0002_reviews
Create Date: 2026-12-03
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0003_request_fingerprint"
down_revision = "0002_reviews"
branch_labels = None
depends_on = None

BATCH_ROWS = 5_000


def upgrade() -> None:
    """Add the column, then hash the stored requests of the decisions already recorded."""
    op.add_column("serving_decisions", sa.Column("request_hash", sa.String(64), nullable=True))
    decisions = sa.table(
        "serving_decisions",
        sa.column("decision_id", sa.String()),
        sa.column("request", sa.Text()),
        sa.column("request_hash", sa.String()),
    )
    connection = op.get_bind()
    update = (
        sa.update(decisions)
        .where(decisions.c.decision_id == sa.bindparam("id"))
        .values(request_hash=sa.bindparam("hash"))
    )
    after = ""
    while True:  # keyset pagination: each batch is one read and one executemany
        rows = connection.execute(
            sa.select(decisions.c.decision_id, decisions.c.request)
            .where(decisions.c.decision_id > after, decisions.c.request_hash.is_(None))
            .order_by(decisions.c.decision_id)
            .limit(BATCH_ROWS)
        ).all()
        if not rows:
            return
        connection.execute(
            update,
            [
                {"id": r.decision_id, "hash": hashlib.sha256(r.request.encode()).hexdigest()}
                for r in rows
            ],
        )
        after = rows[-1].decision_id


def downgrade() -> None:
    """Drop the fingerprints (the stored requests keep what they were made from)."""
    with op.batch_alter_table("serving_decisions") as batch:
        batch.drop_column("request_hash")
