"""Alembic migrations run from code: no alembic.ini, no URL to read, one lock for every process.

Each migrations folder (the event store's, the service's) has its own version table, so they
share a database without sharing a history. Its `env.py` calls `run_migrations_online`; the
code that migrates hands the connection over through `alembic_config`, while holding
`hold_migration_lock`.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy.engine import Connection

MIGRATION_LOCK_KEY = 0x5265_6675_6E64_4D67
"""PostgreSQL advisory lock key under which migrations run (any schema of the database)."""


def hold_migration_lock(connection: Connection) -> None:
    """On PostgreSQL, wait for and hold, until this transaction ends, the lock under which
    migrations run: processes starting together (several workers) then migrate one after the
    other, the later ones finding the tables made, instead of racing to create them."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))


def alembic_config(connection: Connection, script_location: Path) -> Config:
    """An Alembic configuration in code for the migrations folder `script_location`, bound to
    `connection`."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["connection"] = connection
    return config


def run_migrations_online(metadata: sa.MetaData, version_table: str, entry_point: str) -> None:
    """The body of a migrations folder's `env.py`: run on the connection the caller handed over
    in `config.attributes` (there is no alembic.ini and no URL to read)."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(f"run these migrations through {entry_point}")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
