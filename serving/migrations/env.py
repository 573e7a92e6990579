"""Alembic environment of the service's tables (decision log, API keys).

It expects the caller to hand over an open connection in `config.attributes["connection"]`
(see `serving.db.migrate`), so there is no alembic.ini and no URL to read here.
"""

from __future__ import annotations

from alembic import context

from serving.db import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the service's migrations through serving.db.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
