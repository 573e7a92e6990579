"""Many rows into one table in one statement run: the write path of the event store and of the
decision log.

SQLAlchemy Core's `execute(insert, [dict, ...])` spends most of its time in Python, per row:
processing each dict's parameters and, on PostgreSQL, rendering an "insertmanyvalues" batch
whose SQL text changes with the number of rows, which the driver then parses afresh. The
service records tens of decisions per transaction, thousands a second, in one process, so that
cost was most of recording a decision. A `BulkInsert` is compiled by SQLAlchemy once, from the
same `Table` and the same ON CONFLICT clause, and takes rows as tuples in the table's column
order:

- PostgreSQL: `INSERT ... SELECT unnest(%(c0)s), unnest(%(c1)s), ... ON CONFLICT ...`, one
  array per column, so the statement's text never changes (psycopg prepares it once) and a group
  of any size is one round trip. RETURNING works as on a single row.
- SQLite: the driver's `executemany` of the one-row statement, with SQLAlchemy's own conversion
  of each value (datetimes are stored in the text form SQLAlchemy reads back and compares).

Both go through `Connection.exec_driver_sql`, so a database's error is SQLAlchemy's `DBAPIError`
as before, and the statement runs in the caller's transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Dialect

Conflict = Callable[[Any], Any]
"""Given the dialect's INSERT statement, the statement with its ON CONFLICT clause."""


class BulkInsert:
    """An INSERT of whole rows of `table` (tuples, in column order), compiled once for `dialect`.

    On PostgreSQL one run is one statement: an ON CONFLICT DO UPDATE may then not meet the same
    key twice in one run (PostgreSQL refuses; `EventStore.write` sends such rows row by row).
    """

    def __init__(
        self,
        dialect: Dialect,
        table: sa.Table,
        conflict: Conflict | None = None,
        returning: str | None = None,
    ) -> None:
        self.table = table
        self.columns = [c.name for c in table.columns]
        self.postgresql = dialect.name == "postgresql"
        if dialect.name not in ("postgresql", "sqlite"):
            raise ValueError(f"no bulk insert for {dialect.name}")
        statement: Any
        if self.postgresql:
            arrays = [
                sa.func.unnest(sa.cast(sa.bindparam(f"c{i}"), postgresql.ARRAY(column.type)))
                for i, column in enumerate(table.columns)
            ]
            statement = postgresql.insert(table).from_select(self.columns, sa.select(*arrays))
        else:
            statement = sqlite.insert(table)
        if conflict is not None:
            statement = conflict(statement)
        if returning is not None:
            if not self.postgresql:
                raise ValueError("SQLite's driver returns no rows from executemany")
            statement = statement.returning(table.c[returning])
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        if self.postgresql and dialect.driver == "psycopg":
            # Arrays in psycopg's binary format: text arrays in the text format are escaped
            # element by element in Python (JSON bodies, full of quotes, cost the most).
            self.sql = re.sub(r"%\((c\d+)\)s", r"%(\1)b", self.sql)
        if not self.postgresql and list(compiled.positiontup or ()) != self.columns:
            raise AssertionError(f"{table.name}: parameters not in column order")
        # SQLAlchemy's conversion of each column's values for this driver (None: as they are).
        self._convert = [
            (i, process)
            for i, column in enumerate(table.columns)
            if (process := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]

    def run(self, connection: Connection, rows: Sequence[Sequence[Any]]) -> CursorResult[Any]:
        """Insert `rows` in `connection`'s transaction; the driver's result (RETURNING rows on
        PostgreSQL; on SQLite, `rowcount` counts the rows written)."""
        if not rows:
            raise ValueError("no rows to insert")
        if self.postgresql:
            values = [list(column) for column in zip(*rows, strict=True)]
            for i, process in self._convert:
                values[i] = [process(v) for v in values[i]]
            return connection.exec_driver_sql(
                self.sql, {f"c{i}": column for i, column in enumerate(values)}
            )
        if self._convert:
            converted = []
            for row in rows:
                row = list(row)
                for i, process in self._convert:
                    row[i] = process(row[i])
                converted.append(tuple(row))
            rows = converted
        return connection.exec_driver_sql(self.sql, list(rows))
