"""Alembic environment of the service's tables (see `refund_risk.database.migrations`)."""

from __future__ import annotations

from refund_risk.database.migrations import run_migrations_online
from serving.db import VERSION_TABLE, metadata

run_migrations_online(metadata, VERSION_TABLE, "serving.db.migrate")
