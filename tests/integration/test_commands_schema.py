"""Commands that open the database use the service's URL and schema: what `features ingest`
writes, the service reads, and nothing lands in PostgreSQL's default schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from data.schema import TABLES
from data.storage import write_table
from features.store import EVENT_TABLES, EventStore, settings_engine
from refund_risk.cli import app
from refund_risk.settings import load_settings

pytestmark = pytest.mark.postgres

Tables = dict[str, pd.DataFrame]
runner = CliRunner()


# The shared fixture's PostgreSQL side: a schema of this test's own, not the server's default.
on_postgres = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


def _public_counts(url: str) -> dict[str, int | None]:
    """Rows of each event table in the `public` schema; None where there is no such table."""
    engine = sa.create_engine(url)
    counts: dict[str, int | None] = {}
    try:
        with engine.connect() as connection:
            for table in EVENT_TABLES.values():
                qualified = f"public.{table.name}"
                exists = connection.execute(
                    sa.text("SELECT to_regclass(:name)"), {"name": qualified}
                ).scalar()
                counts[table.name] = (
                    None
                    if exists is None
                    else connection.execute(sa.text(f"SELECT count(*) FROM {qualified}")).scalar()
                )
    finally:
        engine.dispose()
    return counts


@on_postgres
def test_ingest_and_export_use_the_settings_schema(
    store_url: tuple[str, str],
    random_world: Callable[..., Tables],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, name = store_url
    monkeypatch.setenv("REFUND_RISK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REFUND_RISK_DATABASE_URL", url)
    monkeypatch.setenv("REFUND_RISK_DATABASE_SCHEMA", name)
    raw = tmp_path / "raw"
    world = random_world(seed=43, n_customers=30)
    for table, frame in world.items():
        write_table(frame, TABLES[table], raw)
    expected = {table: len(frame) for table, frame in world.items()}
    assert all(expected.values())
    public_before = _public_counts(url)

    result = runner.invoke(app, ["features", "ingest", str(raw)])
    assert result.exit_code == 0, result.output

    # The service's engine (same settings, same factory) sees every row in its schema...
    store = EventStore(settings_engine(load_settings()))
    try:
        assert store.counts() == expected
    finally:
        store.dispose()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            in_schema = {
                row[0]
                for row in connection.execute(
                    sa.text(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"
                    ),
                    {"s": name},
                )
            }
    finally:
        engine.dispose()
    assert {table.name for table in EVENT_TABLES.values()} <= in_schema
    # ... and nothing was written to, or created in, the server's default schema.
    assert _public_counts(url) == public_before

    exported = tmp_path / "exported"
    result = runner.invoke(app, ["events", "export", "--to", str(exported)])
    assert result.exit_code == 0, result.output
    for table, count in expected.items():
        assert len(pd.read_parquet(exported / f"{table}.parquet")) == count


@on_postgres
def test_keys_use_the_settings_schema(
    store_url: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, name = store_url
    monkeypatch.setenv("REFUND_RISK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REFUND_RISK_DATABASE_URL", url)
    monkeypatch.setenv("REFUND_RISK_DATABASE_SCHEMA", name)
    result = runner.invoke(app, ["keys", "create", "--role", "scorer", "--name", "schema-check"])
    assert result.exit_code == 0, result.output

    from serving.auth import list_keys

    engine = settings_engine(load_settings())
    try:
        assert [key.name for key in list_keys(engine)] == ["schema-check"]
    finally:
        engine.dispose()
