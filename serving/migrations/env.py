"""Alembic environment of the service's tables (see `features.store.run_migrations_online`)."""

from __future__ import annotations

from features.store import run_migrations_online
from serving.db import VERSION_TABLE, metadata

run_migrations_online(metadata, VERSION_TABLE, "serving.db.migrate")
