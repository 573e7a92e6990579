"""Alembic environment of the event store.

It expects the caller to hand over an open connection in `config.attributes["connection"]`
(see `features.store.alembic_config`), so there is no alembic.ini and no URL to read here.
"""

from __future__ import annotations

from alembic import context

from features.store import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the event store migrations through features.store.EventStore.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
