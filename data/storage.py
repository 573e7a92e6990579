"""Reading and writing raw tables as Parquet, atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.schema import TABLES, Table
from refund_risk.errors import NotFoundError


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it into place only if the block succeeds.

    A crash or an exception leaves `target` as it was: never half-written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); a data file should get the usual umask permissions.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _backup_of(target: Path) -> Path:
    """Where `target` waits while a staged folder takes its place."""
    return target.with_name(f".{target.name}.previous")


def recover_directory(target: Path) -> None:
    """Put back a folder left under its backup name by a swap that was cut short.

    A swap renames the old folder away, then the staged one into place; a crash between the two
    renames leaves no `target` but a whole old folder beside it, which this restores.
    """
    backup = _backup_of(target)
    if backup.is_dir() and not target.exists():
        os.replace(backup, target)


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; if the block succeeds, it replaces
    `target` as a whole.

    Readers see either every old file or every new one, never a mix: the files are all written
    into the staging folder first, and the swap is two renames on the same file system (the old
    folder to a backup name, the staged one into place), with the backup removed afterwards. If
    the block raises, `target` is left as it was and the staging folder is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    # mkdtemp makes the folder private (0700); a data folder should get the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    backup = _backup_of(target)
    try:
        yield staging
        shutil.rmtree(backup, ignore_errors=True)
        if target.exists():
            os.replace(target, backup)
        try:
            os.replace(staging, target)
        except BaseException:
            if backup.exists() and not target.exists():
                os.replace(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def to_arrow(frame: pd.DataFrame, table: Table) -> pa.Table:
    """Convert a frame to the table's exact Arrow schema (column order and types)."""
    return pa.Table.from_pandas(
        frame[table.column_names], schema=table.arrow_schema(), preserve_index=False
    )


def write_table(frame: pd.DataFrame | pa.Table, table: Table, directory: Path) -> Path:
    """Write one table to `directory/<name>.parquet`, atomically; return the path."""
    arrow = frame if isinstance(frame, pa.Table) else to_arrow(frame, table)
    arrow = arrow.select(table.column_names).cast(table.arrow_schema())
    target = directory / f"{table.name}.parquet"
    with atomic_path(target) as tmp:
        pq.write_table(arrow, tmp, compression="zstd")
    return target


def read_table(
    table: Table | str, directory: Path, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read one stored table (only `columns`, if given); raise NotFoundError naming the file."""
    spec = TABLES[table] if isinstance(table, str) else table
    path = directory / f"{spec.name}.parquet"
    if not path.exists():
        recover_directory(directory)
    if not path.exists():
        raise NotFoundError(f"no {spec.name} table at {path}; generate or import a world first")
    return pd.read_parquet(path, columns=None if columns is None else list(columns))


def read_world(
    directory: Path, columns: Mapping[str, Sequence[str]] | None = None
) -> dict[str, pd.DataFrame]:
    """Read every raw table from `directory`, keyed by table name; a table named in `columns`
    only with the columns given there."""
    columns = columns or {}
    return {name: read_table(name, directory, columns.get(name)) for name in TABLES}
