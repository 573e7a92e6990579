"""Alembic migrations of the event store, run from code by `features.store.EventStore.migrate`."""
