"""Alembic environment of the event store (see `features.store.run_migrations_online`)."""

from __future__ import annotations

from features.store import VERSION_TABLE, metadata, run_migrations_online

run_migrations_online(metadata, VERSION_TABLE, "features.store.EventStore.migrate")
