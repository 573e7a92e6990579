"""Identity links are looked up by fingerprint: index them by fingerprint first, then kind.

The online builder asks who else used a fingerprint (`WHERE fingerprint IN (...)`); the
(kind, fingerprint) index cannot serve that, so each lookup read the whole table.

Revision ID: 0003_fingerprint_index
Revises: 0002_optional_fingerprints
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0003_fingerprint_index"
down_revision = "0002_optional_fingerprints"
branch_labels = None
depends_on = None

_INDEX = "ix_event_identity_links_fingerprint_kind"


def upgrade() -> None:
    """Index event_identity_links by (fingerprint, kind)."""
    op.create_index(_INDEX, "event_identity_links", ["fingerprint", "kind"])


def downgrade() -> None:
    """Drop the (fingerprint, kind) index."""
    op.drop_index(_INDEX, table_name="event_identity_links")
