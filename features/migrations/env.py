"""Alembic environment of the event store (see `refund_risk.database.migrations`)."""

from __future__ import annotations

from features.store import VERSION_TABLE, metadata
from refund_risk.database.migrations import run_migrations_online

run_migrations_online(metadata, VERSION_TABLE, "features.store.EventStore.migrate")
