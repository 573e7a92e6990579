"""Many rows into one table in one statement run: the write path of the event store and of the
decision log.

SQLAlchemy Core's `execute(insert, [dict, ...])` spends most of its time in Python, per row:
processing each dict's parameters and, on PostgreSQL, rendering an "insertmanyvalues" batch
whose SQL text changes with the number of rows, which the driver then parses afresh. The
service records tens of decisions per transaction, thousands a second, in one process, so that
cost was most of recording a decision. A `BulkInsert` is compiled by SQLAlchemy once, from the
same `Table` and the same ON CONFLICT clause, and takes rows as tuples in the table's column
order:

- PostgreSQL: `INSERT ... SELECT unnest(CAST(%(c0)b AS type[])), ... ON CONFLICT ...`, one
  array per column in psycopg's binary format, so the statement's text never changes (psycopg
  prepares it once) and a group of any size is one round trip. RETURNING works as on a single
  row.
- SQLite: the driver's `executemany` of the one-row statement, with SQLAlchemy's own conversion
  of each value (datetimes are stored in the text form SQLAlchemy reads back and compares).

On both, each column's values are first made its one type (an array holds one): a float
column's whole numbers become floats, a count's whole floats become ints, and an aware time
becomes naive UTC, as the columns hold.

Both go through `Connection.exec_driver_sql`, so an error the database raises is SQLAlchemy's
`DBAPIError` as before, and the statement runs in the caller's transaction. A value that cannot
be made its column's type raises `DataValidationError` naming the column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Dialect

from refund_risk.errors import DataValidationError

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
        # Each column's values made one Python type, then SQLAlchemy's conversion of them for
        # this driver, if any (columns with neither are passed as they are).
        self._convert: list[tuple[int, str, Callable[[Any], Any]]] = []
        for i, column in enumerate(table.columns):
            one = _one_type(column.type)
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            if one is not None and process is not None:
                self._convert.append((i, column.name, _then(one, process)))
            elif one is not None or process is not None:
                self._convert.append((i, column.name, one or process))  # type: ignore[arg-type]

    def run(self, connection: Connection, rows: Sequence[Sequence[Any]]) -> CursorResult[Any]:
        """Insert `rows` in `connection`'s transaction; the driver's result (RETURNING rows on
        PostgreSQL; on SQLite, `rowcount` counts the rows written)."""
        if not rows:
            raise ValueError("no rows to insert")
        if self.postgresql:
            values = [list(column) for column in zip(*rows, strict=True)]
            for i, name, process in self._convert:
                values[i] = self._converted(name, process, values[i])
            return connection.exec_driver_sql(
                self.sql, {f"c{i}": column for i, column in enumerate(values)}
            )
        if self._convert:
            converted = []
            for row in rows:
                row = list(row)
                for i, name, process in self._convert:
                    try:
                        row[i] = process(row[i])
                    except _UNCONVERTIBLE as exc:
                        raise DataValidationError(f"{self.table.name}.{name}: {exc}") from None
                converted.append(tuple(row))
            rows = converted
        return connection.exec_driver_sql(self.sql, list(rows))

    def _converted(self, name: str, process: Callable[[Any], Any], values: list[Any]) -> list[Any]:
        try:
            return [process(v) for v in values]
        except _UNCONVERTIBLE as exc:
            raise DataValidationError(f"{self.table.name}.{name}: {exc}") from None


_UNCONVERTIBLE = (TypeError, ValueError, OverflowError)
"""What converting a value that is not its column's type raises."""


def _to_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _to_int(value: Any) -> int | None:
    if value is None or type(value) is int:
        return value
    whole = int(value)
    if whole != value:
        raise ValueError(f"{value!r} is not a whole number")
    return whole


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _then(first: Callable[[Any], Any], second: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: second(first(value))


def _one_type(kind: sa.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
    """How a column's values are made one Python type, for an array of them."""
    if isinstance(kind, sa.Float):
        return _to_float
    if isinstance(kind, sa.Integer):
        return _to_int
    if isinstance(kind, sa.DateTime):
        return _naive_utc
    return None
