"""Saving a generated world: raw tables beside its oracle, each file written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from data.generator import World
from data.schema import ORACLE_CUSTOMERS, ORACLE_REFUNDS, TABLES
from data.storage import atomic_path, read_table, write_table


def save_world(world: World, raw_dir: Path, oracle_dir: Path) -> list[Path]:
    """Write the five raw tables to `raw_dir` and the oracle to `oracle_dir`; return the paths.

    The oracle lives in its own folder so that nothing reading `raw_dir` can see it.
    """
    paths = [write_table(world.tables[name], spec, raw_dir) for name, spec in TABLES.items()]
    paths.append(write_table(world.oracle_refunds, ORACLE_REFUNDS, oracle_dir))
    paths.append(write_table(world.oracle_customers, ORACLE_CUSTOMERS, oracle_dir))
    manifest = {
        "generator": asdict(world.config),
        "rows": {name: len(frame) for name, frame in world.tables.items()},
    }
    target = raw_dir / "world.json"
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    paths.append(target)
    return paths


def load_oracle(oracle_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The oracle's refund and customer tables, or None for a world that has none (a shop's)."""
    if not (oracle_dir / f"{ORACLE_REFUNDS.name}.parquet").exists():
        return None
    return read_table(ORACLE_REFUNDS, oracle_dir), read_table(ORACLE_CUSTOMERS, oracle_dir)
