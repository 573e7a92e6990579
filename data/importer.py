"""Import a shop's own files (CSV or Parquet) into the validated raw tables.

The shop exports one file per table of `data.schema.TABLES` into a folder: `<table>.csv` or
`<table>.parquet`. Every row is checked against the schema and the cross-table rules; good rows
are stored as Parquet with the exact storage types, bad rows go to `<table>.rejects.csv` with
every reason they failed, so the shop can fix them and import again.

Conventions:

* CSV cells are read as text, and only an empty cell counts as missing: `NA`, `null` or `n/a`
  stay text, so nothing is silently turned into something else. Leading and trailing spaces are
  ignored, and a cell holding only spaces counts as empty.
* Timestamps must be ISO 8601 (`2025-02-11 09:30:00`, `2025-02-11T09:30:00Z`, `2025-02-11`).
  Values without an offset are taken as UTC; values with one are converted to UTC. Day-first or
  month-first forms such as `03/05/2024` are rejected, because they cannot be told apart; the
  reason shows both readings in ISO form. Other common export shapes get a hint too: a decimal
  comma or a thousands separator in an amount, a file separated by `;`, a file that is not
  UTF-8 (the reason names its first unreadable line), a column name written twice.
* A mapping file (see `data.mapping`) turns a shop's own category, reason or refund-type names
  into the service's before they are checked.
* Row numbers in reports are what a user sees: for CSV the line in the file (the header is
  line 1, so the first data row is line 2; a quoted value spanning lines moves later rows down),
  for Parquet the 1-based row. The rejects file names its first column `line` or `row`.
* Lines whose cells are all empty are skipped with a warning; they are not data rows.
* A child row is checked against the *accepted* rows of its parent table, so the child of a
  rejected parent is rejected too, and its reason names the parent's table and line.
* Whole-table problems (a file that cannot be parsed, a missing column, two files for one table)
  abort the import before anything is written. A required table left with no accepted row
  fails the import too, after its rejects are written so the shop can see why.
* The tables of one import replace the stored ones together or not at all: they are written
  into a staging folder that then takes the stored folder's place (`storage.staged_directory`),
  so a failed or interrupted import never leaves a mix of old and new tables.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from data import storage
from data.facts import future_problem, stage_problem
from data.mapping import ValueMapping
from data.schema import (
    MAX_PRODUCT_NAME,
    PRODUCT_COLUMNS,
    REASON_DETAILS,
    TABLES,
    Column,
    Kind,
    Table,
    empty_frame,
)
from refund_risk.errors import DataValidationError, ImportRejectedError, NotFoundError

OPTIONAL_TABLES: frozenset[str] = frozenset({"outcomes", "identity_links"})
"""Tables a shop may not have; a missing file is imported as an empty table."""

REJECTS_SUFFIX = ".rejects.csv"

TRUE_WORDS: tuple[str, ...] = ("true", "1", "yes")
"""Text read as true in a bool column (case-insensitive)."""
FALSE_WORDS: tuple[str, ...] = ("false", "0", "no")
"""Text read as false in a bool column (case-insensitive)."""
_BOOL_WORDS: dict[str, bool] = {w: True for w in TRUE_WORDS} | {w: False for w in FALSE_WORDS}

# Counts above 2**53 cannot be told apart from their neighbours once parsed as floats.
_MAX_COUNT = 2**53

Progress = Callable[[str, float], None]
"""Called with a stage name and the fraction of the import done (0 to 1)."""


def _no_progress(stage: str, fraction: float) -> None:
    """Default progress callback: silent."""


@dataclass
class TableImport:
    """What happened to one table: row counts, reject reasons by kind, warnings, rejects file."""

    name: str
    source: Path | None
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    rejects_path: Path | None = None


@dataclass
class ImportReport:
    """The outcome of `import_directory`, one `TableImport` per table in dependency order."""

    source: Path
    dest_dir: Path
    rejects_dir: Path
    tables: dict[str, TableImport]
    stored: bool = True
    """False when the import was refused and the stored tables were left as they were."""

    @property
    def read(self) -> int:
        """Data rows read over all tables."""
        return sum(t.read for t in self.tables.values())

    @property
    def accepted(self) -> int:
        """Rows stored over all tables."""
        return sum(t.accepted for t in self.tables.values())

    @property
    def rejected(self) -> int:
        """Rows rejected over all tables."""
        return sum(t.rejected for t in self.tables.values())

    def summary(self) -> str:
        """The import as plain text, one table a line then each table's rejects and warnings.

        Plain text so that nothing is cut whatever the width: a log, a file, an 80-column
        terminal. Rows rejected and failed checks are counted apart, and said so: one row may
        fail several checks.
        """
        header = ("table", "file", "rows read", "accepted", "rejected")
        rows = [
            (
                t.name,
                t.source.name if t.source is not None else "(absent)",
                f"{t.read:,}",
                f"{t.accepted:,}",
                f"{t.rejected:,}",
            )
            for t in self.tables.values()
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: tuple[str, ...]) -> str:
            left = [c.ljust(w) for c, w in zip(cells[:2], widths[:2], strict=True)]
            right = [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
            return "  ".join(left + right).rstrip()

        out = [f"Import from {self.source}", line(header), *(line(r) for r in rows)]
        for t in self.tables.values():
            if t.rejected:
                out.append(
                    f"{t.name}: {t.rejected:,} row(s) rejected, each listed with its "
                    f"{'line' if t.source is not None and t.source.suffix == '.csv' else 'row'} "
                    f"and reasons in {t.rejects_path}"
                )
                kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(t.reasons.items()))
                out.append(f"  failed checks by kind (a row may fail several): {kinds}")
            out.extend(f"{t.name}: warning: {w}" for w in t.warnings)
        if self.stored:
            out.append(
                f"{self.accepted:,} of {self.read:,} rows accepted into {self.dest_dir}; "
                f"{self.rejected:,} rejected"
            )
        else:
            out.append(
                f"nothing stored: {self.dest_dir} is unchanged ({self.accepted:,} of "
                f"{self.read:,} rows passed, {self.rejected:,} rejected)"
            )
        return "\n".join(out)


def import_directory(
    source: Path,
    dest_dir: Path,
    rejects_dir: Path,
    *,
    mapping: ValueMapping | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    progress: Progress = _no_progress,
) -> ImportReport:
    """Validate every table file in `source`, store the good rows in `dest_dir`, report the rest.

    `mapping` turns the shop's own enum values into the service's; `delimiter` and `encoding`
    say how the CSV files are written. Raises NotFoundError if `source` or a required table's
    file is missing, and DataValidationError if a table has both a CSV and a Parquet file,
    cannot be parsed, or lacks a required column; in those cases nothing is written. Otherwise
    `rejects_dir` is replaced by one `<table>.rejects.csv` per table with rejected rows, and
    then, if every required table kept at least one row, `dest_dir` is replaced by the new
    tables, all together (see `storage.staged_directory`); if one kept none, ImportRejectedError
    is raised and `dest_dir` is left as it was.
    """
    if not source.is_dir():
        raise NotFoundError(f"import folder {source} does not exist or is not a folder")
    if source.resolve() == dest_dir.resolve():
        # Importing a folder into itself would overwrite the input with the accepted rows.
        raise DataValidationError(
            f"the import folder {source} is where the imported tables are stored; "
            "import from another folder"
        )

    # Phase 1: find and read every file; whole-table problems are collected, then raised together
    # before anything is written.
    paths = {name: _locate(source, table) for name, table in TABLES.items()}
    raws: dict[str, _RawTable] = {}
    problems: list[str] = []
    steps = 2 * len(TABLES) + 1
    for i, (name, table) in enumerate(TABLES.items()):
        progress(f"reading {name}", i / steps)
        try:
            raws[name] = _read(table, paths[name], delimiter, encoding)
        except DataValidationError as exc:
            problems.append(str(exc))
    if problems:
        raise DataValidationError("; ".join(problems))

    # Phase 2: validate in dependency order; children are checked against accepted parents.
    accepted: dict[str, pd.DataFrame] = {}
    seen_keys: dict[str, pd.Index] = {}
    rejects: dict[str, pd.DataFrame] = {}
    reports: dict[str, TableImport] = {}
    for i, (name, raw) in enumerate(raws.items()):
        progress(f"checking {name}", (len(TABLES) + i) / steps)
        accepted[name], rejects[name], reports[name] = _validate(raw, accepted, seen_keys, mapping)

    # Phase 3: write the rejects (a new set replaces the last import's), then the tables, all
    # staged and swapped in together. Absent optional tables are stored empty so no stale table
    # survives.
    progress("writing", (steps - 1) / steps)
    with storage.staged_directory(rejects_dir) as staged:
        for name in TABLES:
            if len(rejects[name]):
                rejects[name].to_csv(staged / f"{name}{REJECTS_SUFFIX}", index=False)
                reports[name].rejects_path = rejects_dir / f"{name}{REJECTS_SUFFIX}"
    report = ImportReport(source=source, dest_dir=dest_dir, rejects_dir=rejects_dir, tables=reports)
    empty = [
        f"{name} ({_none_kept(reports[name])})"
        for name in TABLES
        if name not in OPTIONAL_TABLES and reports[name].accepted == 0
    ]
    if empty:
        report.stored = False
        raise ImportRejectedError(
            f"nothing was stored, the tables in {dest_dir} are unchanged: no row was accepted "
            f"in {'; '.join(empty)}",
            report.summary(),
        )
    with storage.staged_directory(dest_dir) as staged:
        for name, table in TABLES.items():
            storage.write_table(accepted[name], table, staged)
    progress("done", 1.0)
    return report


def _none_kept(report: TableImport) -> str:
    """Why a table kept no row, in a few words."""
    if report.read == 0:
        return "its file has no data rows"
    return f"all {report.read:,} rows rejected, see {report.rejects_path}"


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class _RawTable:
    """One table as read: original values, the user-visible number of each row, warnings."""

    table: Table
    path: Path | None
    frame: pd.DataFrame
    numbers: pd.Series
    label: str
    warnings: list[str]


def _locate(source: Path, table: Table) -> Path | None:
    """The table's file in `source`, or None for an absent optional table."""
    csv = source / f"{table.name}.csv"
    parquet = source / f"{table.name}.parquet"
    if csv.exists() and parquet.exists():
        raise DataValidationError(
            f"both {csv.name} and {parquet.name} exist in {source}; "
            f"keep only one file for table {table.name}"
        )
    if csv.exists():
        return csv
    if parquet.exists():
        return parquet
    if table.name in OPTIONAL_TABLES:
        return None
    raise NotFoundError(f"no {table.name} file in {source}: expected {csv.name} or {parquet.name}")


def _read(table: Table, path: Path | None, delimiter: str, encoding: str) -> _RawTable:
    """Read one file, number its rows as a user sees them, and check its columns are there."""
    warnings: list[str] = []
    if path is None:
        warnings.append(f"no {table.name}.csv or {table.name}.parquet: imported as empty")
        frame = pd.DataFrame({c: pd.Series([], dtype="str") for c in table.column_names})
        return _RawTable(table, None, frame, pd.Series([], dtype="int64"), "row", warnings)

    if path.suffix == ".csv":
        frame, numbers = _read_csv(path, delimiter, encoding)
        label = "line"
    else:
        frame, numbers = _read_parquet(path)
        label = "row"

    # An optional column a shop's system does not have (fingerprints, say) may be left out.
    absent = [c.name for c in table.columns if c.nullable and c.name not in frame.columns]
    # Products are an extra a shop may send; without them an export imports as it always did.
    noted = [c for c in absent if c not in PRODUCT_COLUMNS]
    if noted:
        warnings.append(f"no {', '.join(noted)} column: imported as empty")
    if absent:
        empty = {c: pd.Series(pd.NA, index=frame.index, dtype="str") for c in absent}
        frame = frame.assign(**empty)
    missing = [c for c in table.column_names if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{path.name} is missing required column(s) {', '.join(missing)} "
            f"(table {table.name} needs {', '.join(table.column_names)})"
            + _delimiter_hint(frame, delimiter)
        )
    extra = [str(c) for c in frame.columns if c not in table.column_names]
    if extra:
        warnings.append(f"extra column(s) ignored: {', '.join(extra)}")

    # Rows with nothing in them (blank lines, Excel's trailing ",,,,") are not data rows.
    blank = pd.concat([_text(frame[c]).isna() for c in frame.columns], axis=1).all(axis=1)
    if blank.any():
        warnings.append(f"skipped {int(blank.sum())} empty {label}(s)")
        frame = frame.loc[~blank].reset_index(drop=True)
        numbers = numbers.loc[~blank].reset_index(drop=True)
    return _RawTable(table, path, frame, numbers, label, warnings)


def _read_csv(path: Path, delimiter: str, encoding: str) -> tuple[pd.DataFrame, pd.Series]:
    """Read a CSV with every cell as text and only empty cells missing; number rows by line."""
    # Excel writes a byte-order mark before UTF-8 text; utf-8-sig drops it.
    encoding = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            # Blank lines are kept (and dropped later) so that line numbers stay right.
            skip_blank_lines=False,
            encoding=encoding,
            sep=delimiter,
        )
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{path.name} is empty: expected a header line") from None
    except UnicodeDecodeError:
        raise DataValidationError(_encoding_problem(path, encoding)) from None
    except LookupError:
        raise DataValidationError(f"unknown text encoding {encoding!r}") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataValidationError(f"{path.name} cannot be read as CSV: {exc}") from None
    _check_header(path, delimiter, encoding)

    # A quoted value may span lines; count its newlines so later rows keep their true line.
    header_lines = 1 + sum(str(c).count("\n") for c in frame.columns)
    newlines = pd.Series(0, index=frame.index, dtype="int64")
    for c in frame.columns:
        newlines += frame[c].str.count("\n").fillna(0).astype("int64")
    span = 1 + newlines
    numbers = header_lines + 1 + span.cumsum() - span
    frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    return frame, numbers


def _check_header(path: Path, delimiter: str, encoding: str) -> None:
    """Refuse a header naming a column twice: which of the two to keep is the shop's choice
    (pandas would silently call the second one `name.1`)."""
    with path.open(encoding=encoding, newline="") as handle:
        header = [c.strip() for c in next(csv.reader(handle, delimiter=delimiter), [])]
    twice = [name for name, n in Counter(header).items() if n > 1 and name]
    if twice:
        where = "; ".join(
            f"{name} (columns {', '.join(str(i + 1) for i, c in enumerate(header) if c == name)})"
            for name in twice
        )
        raise DataValidationError(
            f"{path.name} names a column more than once: {where}; keep one of each"
        )


def _encoding_problem(path: Path, encoding: str) -> str:
    """Which line of a file cannot be decoded, with a readable guess at its text."""
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError as exc:
            byte = line[exc.start]
            shown = line.decode("cp1252", errors="replace").strip()[:80]
            return (
                f"{path.name} is not {encoding.removesuffix('-sig')} text: line {number} holds "
                f"byte 0x{byte:02x}, which it cannot be ({shown!r} if read as Windows-1252); "
                "save the file as UTF-8, or import with --encoding cp1252 (or latin-1)"
            )
    return f"{path.name} is not {encoding} text"


def _delimiter_hint(frame: pd.DataFrame, delimiter: str) -> str:
    """A hint when the header looks separated by another character than `delimiter`."""
    header = "".join(str(c) for c in frame.columns)
    for other, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars"), (",", "commas")):
        if other != delimiter and header.count(other) >= 2:
            shown = "\\t" if other == "\t" else other
            return (
                f"; its header looks separated by {name}: export with "
                f"{'commas' if delimiter == ',' else repr(delimiter)}, or import with "
                f"--delimiter '{shown}'"
            )
    return ""


def _read_parquet(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Read a Parquet file as it is typed; rows are numbered from 1."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataValidationError(f"{path.name} cannot be read as Parquet: {exc}") from None
    frame = frame.reset_index(drop=True)
    frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    numbers = pd.Series(np.arange(1, len(frame) + 1), index=frame.index, dtype="int64")
    return frame, numbers


# --------------------------------------------------------------------------------------------
# Validation


class _Failures:
    """Row failures of one table: a message per failing row per check, counted by kind."""

    def __init__(self, index: pd.Index) -> None:
        self.index = index
        self.parts: list[pd.Series] = []
        self.kinds: Counter[str] = Counter()
        # Per column, the rows whose value was present but could not be parsed; rules use it to
        # tell "empty" from "unreadable" without reporting the same cell twice.
        self.unreadable: dict[str, pd.Series] = {}

    def add(self, kind: str, mask: pd.Series, message: pd.Series | str) -> None:
        """Record `message` (one text, or one per row) for every row where `mask` is true."""
        mask = mask.fillna(False).astype(bool)
        if not mask.any():
            return
        if isinstance(message, str):
            texts = pd.Series(message, index=self.index[mask.to_numpy()], dtype="str")
        else:
            texts = message.loc[mask].astype("str")
        self.parts.append(texts)
        self.kinds[kind] += int(mask.sum())

    def rejected(self) -> pd.Series:
        """True for every row with at least one failure."""
        if not self.parts:
            return pd.Series(False, index=self.index)
        failing = pd.concat(self.parts).index
        return pd.Series(self.index.isin(failing), index=self.index)

    def reasons(self) -> pd.Series:
        """Per failing row, its reasons joined with '; ', in the order the checks ran."""
        if not self.parts:
            return pd.Series([], dtype="str")
        # groupby keeps rows in their concatenation order within a group, i.e. check order.
        return pd.concat(self.parts).groupby(level=0, sort=True).agg("; ".join)


def _text(raw: pd.Series) -> pd.Series:
    """The values as stripped text; empty or blank becomes missing."""
    text = raw.astype("str").str.strip()
    return text.mask(text == "")


def _quoted(text: pd.Series) -> pd.Series:
    """Values wrapped in single quotes, for messages."""
    return "'" + text.fillna("") + "'"


def _validate(
    raw: _RawTable,
    accepted: dict[str, pd.DataFrame],
    seen_keys: dict[str, pd.Index],
    mapping: ValueMapping | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, TableImport]:
    """Check one table; return its accepted rows (storage types), its rejects, and its report."""
    table = raw.table
    failures = _Failures(raw.frame.index)
    parsed = pd.DataFrame(
        {c.name: _parse_column(c, raw.frame[c.name], failures, mapping) for c in table.columns},
        index=raw.frame.index,
    )
    texts = pd.DataFrame({c: _text(raw.frame[c]) for c in table.key}, index=raw.frame.index)
    _check_duplicates(table, texts, raw, failures)
    _TABLE_RULES.get(table.name, _no_rules)(parsed, accepted, seen_keys, failures)

    rejected = failures.rejected()
    # Remember every key in the file, so a child can tell an unknown parent from a rejected one.
    if len(table.key) == 1:
        seen_keys[table.name] = _key_places(texts[table.key[0]], rejected, raw)
    good = _to_storage(table, parsed.loc[~rejected])

    rejects = raw.frame.loc[rejected].copy()
    # allow_duplicates: a shop's own extra column may itself be called "reasons" or "line".
    rejects.insert(0, "reasons", failures.reasons().reindex(rejects.index), allow_duplicates=True)
    rejects.insert(0, raw.label, raw.numbers.loc[rejected], allow_duplicates=True)

    report = TableImport(
        name=table.name,
        source=raw.path,
        read=len(raw.frame),
        accepted=len(good),
        rejected=int(rejected.sum()),
        reasons=dict(sorted(failures.kinds.items())),
        warnings=list(raw.warnings),
    )
    return good, rejects.reset_index(drop=True), report


def _key_places(keys: pd.Series, rejected: pd.Series, raw: _RawTable) -> pd.Index:
    """Every key of a table as (key, where its rejected row is, e.g. 'line 4 of x.csv'), the
    place empty for a key with an accepted row: a child of a rejected row can then name it.

    A MultiIndex, so that it travels where a plain index of keys did.
    """
    present = keys.notna()
    file = raw.path.name if raw.path is not None else raw.table.name
    place = raw.label + " " + raw.numbers.astype("str") + " of " + file
    dropped = (present & rejected).to_numpy()
    first_rejected = place[dropped].groupby(keys[dropped].to_numpy()).first()
    kept = pd.Index(keys[present & ~rejected].unique())
    first_rejected = first_rejected[~first_rejected.index.isin(kept)]
    unique = pd.Index(keys[present].unique())
    places = first_rejected.reindex(unique).fillna("")
    return pd.MultiIndex.from_arrays([unique, places.to_numpy()], names=["key", "place"])


def _parse_column(
    col: Column, raw: pd.Series, failures: _Failures, mapping: ValueMapping | None = None
) -> pd.Series:
    """Parse one column to its logical type; bad values become missing and are recorded."""
    parsed = _parse_values(col, raw, failures, mapping)
    failures.unreadable[col.name] = _text(raw).notna() & parsed.isna()
    return parsed


# Day and month as digits, then a four-digit year: 12/01/2010 08:26 or 01.12.2010.
_DAY_MONTH = r"^(\d{1,2})[/.](\d{1,2})[/.](\d{4})(.*)$"


def _date_hints(text: pd.Series) -> pd.Series:
    """Per value, a hint for a date written day/month or month/day (else empty): both
    readings in ISO form, since only the shop knows which its export meant."""
    parts = text.str.extract(_DAY_MONTH)
    a, b, year, rest = (parts[i].fillna("") for i in range(4))
    month_first = year + "-" + a.str.zfill(2) + "-" + b.str.zfill(2) + rest
    day_first = year + "-" + b.str.zfill(2) + "-" + a.str.zfill(2) + rest
    hint = (
        " (day and month order cannot be told: write dates as ISO 8601, e.g. '"
        + month_first
        + "' if the month comes first, '"
        + day_first
        + "' if the day does)"
    )
    return hint.where(parts[0].notna(), "")


def _number_hints(text: pd.Series) -> pd.Series:
    """Per value, a hint for a decimal comma or a thousands separator (else empty)."""
    comma = text.str.fullmatch(r"-?\d+(\.\d{3})*,\d+").fillna(False)
    thousands = text.str.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?").fillna(False)
    hints = pd.Series("", index=text.index, dtype="str")
    hints = hints.mask(comma, " (a decimal comma? write the number with a dot: 12.50)")
    return hints.mask(thousands, " (a thousands separator? write the number without: 1234.50)")


def _parse_values(
    col: Column, raw: pd.Series, failures: _Failures, mapping: ValueMapping | None = None
) -> pd.Series:
    """Record every empty or unparseable value of one column; return the parsed values."""
    text = _text(raw)
    empty = text.isna()
    if not col.nullable:
        failures.add("empty_value", empty, f"empty value in required column {col.name}")
    shown = _quoted(text)

    if col.kind in (Kind.ID, Kind.TEXT):
        return text

    if col.kind is Kind.ENUM:
        theirs = mapping.for_column(col.name) if mapping is not None else {}
        if theirs:
            text = text.map(theirs).fillna(text)
        known = f"allowed: {', '.join(col.values)}"
        if theirs:
            known += f"; the mapping file maps: {', '.join(theirs)}"
        bad = ~empty & ~text.isin(col.values)
        failures.add("unknown_value", bad, f"unknown {col.name} " + shown + f" ({known})")
        return text.mask(bad)

    if col.kind is Kind.TIMESTAMP:
        stamps = _to_timestamp(raw, text)
        failures.add(
            "unparseable_date",
            ~empty & stamps.isna(),
            f"unparseable date in {col.name}: " + shown + _date_hints(text),
        )
        return stamps

    if col.kind is Kind.BOOL:
        flags = text.str.lower().map(_BOOL_WORDS)
        bad = ~empty & flags.isna()
        allowed = "/".join(TRUE_WORDS + FALSE_WORDS)
        failures.add(
            "not_a_bool", bad, f"not a true/false value in {col.name}: " + shown + f" ({allowed})"
        )
        return flags.astype("boolean")

    # MONEY and COUNT: numbers.
    numbers = _to_number(raw, text)
    not_number = ~empty & ~np.isfinite(numbers)
    failures.add(
        "not_a_number",
        not_number,
        f"non-numeric value in {col.name}: " + shown + _number_hints(text),
    )
    if col.kind is Kind.MONEY:
        # Both money columns of the schema are amounts paid or asked back: zero makes no sense.
        failures.add(
            "not_positive",
            ~not_number & (numbers <= 0),
            f"{col.name} must be positive, got " + shown,
        )
        return numbers.mask(not_number)
    not_whole = ~empty & ~not_number & ((numbers % 1 != 0) | (numbers.abs() > _MAX_COUNT))
    failures.add("not_whole", not_whole, f"{col.name} must be a whole number, got " + shown)
    failures.add(
        "negative_count",
        ~not_number & ~not_whole & (numbers < 0),
        f"negative count in {col.name}: " + shown,
    )
    return numbers.mask(not_number | not_whole)


def _to_timestamp(raw: pd.Series, text: pd.Series) -> pd.Series:
    """Timestamps as timezone-naive UTC microseconds; unparseable values become NaT."""
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        stamps = raw
        if isinstance(raw.dtype, pd.DatetimeTZDtype):
            stamps = raw.dt.tz_convert("UTC").dt.tz_localize(None)
    else:
        # ISO 8601 only: "03/05/2024" is ambiguous between day-first and month-first.
        stamps = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
        stamps = stamps.dt.tz_localize(None)
    return stamps.astype("datetime64[us]")


def _to_number(raw: pd.Series, text: pd.Series) -> pd.Series:
    """Numbers as float64; text that is not a number becomes NaN."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype("float64")
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _check_duplicates(
    table: Table, keys: pd.DataFrame, raw: _RawTable, failures: _Failures
) -> None:
    """Reject every later occurrence of a primary key; the first one is kept."""
    complete = keys.notna().all(axis=1)
    dup = complete & keys.duplicated(keep="first")
    if not dup.any():
        return
    first = raw.numbers.groupby([keys[c] for c in table.key], dropna=True).transform("first")
    if len(table.key) == 1:
        what = f"{table.key[0]} " + _quoted(keys[table.key[0]])
    else:
        joined = _quoted(keys[table.key[0]])
        for c in table.key[1:]:
            joined = joined + ", " + _quoted(keys[c])
        what = f"({', '.join(table.key)}) (" + joined + ")"
    first_text = first.astype("Int64").astype("str")
    failures.add(
        "duplicate_key",
        dup,
        "duplicate " + what + f" (first seen at {raw.label} " + first_text + ")",
    )


def _check_parent(
    failures: _Failures,
    values: pd.Series,
    column: str,
    parent: str,
    accepted: dict[str, pd.DataFrame],
    seen_keys: dict[str, pd.Index],
) -> pd.Series:
    """Reject rows whose `column` is not an accepted key of `parent`; return the known mask."""
    parent_key = TABLES[parent].key[0]
    known = values.isin(accepted[parent][parent_key])
    missing = values.notna() & ~known
    seen = seen_keys.get(parent, pd.MultiIndex.from_arrays([[], []]))
    in_file = values.isin(seen.get_level_values(0))
    place = pd.Series(seen.get_level_values(-1), index=seen.get_level_values(0))
    at = pd.Series(place.reindex(values.to_numpy()).to_numpy(), index=values.index).fillna("")
    shown = _quoted(values)
    message = (
        f"{column} " + shown + f" refers to a rejected {parent} row (" + at.astype("str") + ")"
    ).where(in_file, f"unknown {column} " + shown + f" (not in {parent})")
    failures.add(f"unknown_{parent_key.removesuffix('_id')}", missing, message)
    return known


def _lookup(keys: pd.Series, parent: pd.DataFrame, key: str, column: str) -> pd.Series:
    """Per child row, the `column` of the accepted parent row its `keys` names (else missing)."""
    # reindex, not Series.map: map mishandles an empty mapper of datetimes in pandas 3.
    values = parent.set_index(key)[column].reindex(pd.Index(keys))
    return pd.Series(values.to_numpy(), index=keys.index, name=column)


def _stamp_text(stamps: pd.Series) -> pd.Series:
    """Timestamps as text for messages, always with the time so two values compare at a glance."""
    return stamps.dt.strftime("%Y-%m-%d %H:%M:%S")


def _order_rules(
    orders: pd.DataFrame,
    accepted: dict[str, pd.DataFrame],
    seen_keys: dict[str, pd.Index],
    failures: _Failures,
) -> None:
    """Orders: known customer, not before signup, shipped/delivered in order."""
    _check_parent(failures, orders["customer_id"], "customer_id", "customers", accepted, seen_keys)
    signup = _lookup(orders["customer_id"], accepted["customers"], "customer_id", "signup_at")
    failures.add(
        "order_before_signup",
        orders["ordered_at"] < signup,
        "order before customer signup: ordered_at "
        + _stamp_text(orders["ordered_at"])
        + " is before signup_at "
        + _stamp_text(signup),
    )
    failures.add(
        "shipped_before_ordered",
        orders["shipped_at"] < orders["ordered_at"],
        "shipped before ordered: shipped_at "
        + _stamp_text(orders["shipped_at"])
        + " is before ordered_at "
        + _stamp_text(orders["ordered_at"]),
    )
    # An unparseable shipped_at is already rejected; only a truly empty one is "without".
    shipped_empty = orders["shipped_at"].isna() & ~failures.unreadable["shipped_at"]
    failures.add(
        "delivered_without_shipped",
        orders["delivered_at"].notna() & shipped_empty,
        "delivered without shipped: delivered_at is set but shipped_at is empty",
    )
    failures.add(
        "delivered_before_shipped",
        orders["delivered_at"] < orders["shipped_at"],
        "delivered before shipped: delivered_at "
        + _stamp_text(orders["delivered_at"])
        + " is before shipped_at "
        + _stamp_text(orders["shipped_at"]),
    )
    failures.add(
        "product_name_without_id",
        orders["product_name"].notna() & orders["product_id"].isna(),
        "product_name without product_id: name the product's id too, or leave both empty",
    )
    failures.add(
        "product_name_too_long",
        orders["product_name"].str.len() > MAX_PRODUCT_NAME,
        f"product_name is longer than {MAX_PRODUCT_NAME} characters: '"
        + orders["product_name"].str.slice(0, 40).fillna("")
        + "...'",
    )


def _refund_rules(
    refunds: pd.DataFrame,
    accepted: dict[str, pd.DataFrame],
    seen_keys: dict[str, pd.Index],
    failures: _Failures,
) -> None:
    """Refunds: known order and customer, same customer, after the order, within its amount."""
    _check_parent(failures, refunds["order_id"], "order_id", "orders", accepted, seen_keys)
    _check_parent(failures, refunds["customer_id"], "customer_id", "customers", accepted, seen_keys)
    orders = accepted["orders"]
    owner = _lookup(refunds["order_id"], orders, "order_id", "customer_id")
    failures.add(
        "customer_mismatch",
        owner.notna() & refunds["customer_id"].notna() & (refunds["customer_id"] != owner),
        "customer_id "
        + _quoted(refunds["customer_id"])
        + " is not the order's customer "
        + _quoted(owner),
    )
    ordered_at = _lookup(refunds["order_id"], orders, "order_id", "ordered_at")
    failures.add(
        "refund_before_order",
        refunds["requested_at"] < ordered_at,
        "refund before order: requested_at "
        + _stamp_text(refunds["requested_at"])
        + " is before the order's ordered_at "
        + _stamp_text(ordered_at),
    )
    order_amount = _lookup(refunds["order_id"], orders, "order_id", "amount")
    failures.add(
        "amount_above_order",
        refunds["amount_requested"] > order_amount,
        "amount_requested "
        + refunds["amount_requested"].astype("str")
        + " above order amount "
        + order_amount.astype("str"),
    )
    _stage_and_clock_rules(refunds, orders, failures)
    parent_reason = refunds["reason_detail"].map(REASON_DETAILS)
    failures.add(
        "reason_mismatch",
        parent_reason.notna() & refunds["reason"].notna() & (parent_reason != refunds["reason"]),
        "reason_detail "
        + _quoted(refunds["reason_detail"])
        + " does not belong to reason "
        + _quoted(refunds["reason"])
        + " (it belongs to "
        + _quoted(parent_reason)
        + ")",
    )


def _stage_and_clock_rules(
    refunds: pd.DataFrame, orders: pd.DataFrame, failures: _Failures
) -> None:
    """The order's stage comes from its own times, and no request is from the future: the
    service's rules (`data.facts`), row by row, against the import's own clock."""
    shipped = _lookup(refunds["order_id"], orders, "order_id", "shipped_at")
    delivered = _lookup(refunds["order_id"], orders, "order_id", "delivered_at")
    known = refunds["order_id"].isin(orders["order_id"])
    now = datetime.now(UTC).replace(tzinfo=None)
    stage_messages, future_messages = {}, {}
    rows = zip(
        refunds.index,
        refunds["order_stage"],
        refunds["requested_at"],
        shipped,
        delivered,
        known,
        strict=True,
    )
    for index, stage, requested, shipped_at, delivered_at, has_order in rows:
        if requested is pd.NaT or not isinstance(stage, str):
            continue  # already rejected as empty or unreadable
        future = future_problem(requested, now)
        if future is not None:
            future_messages[index] = future.message
        problem = stage_problem(stage, requested, shipped_at, delivered_at) if has_order else None
        if problem is not None:
            stage_messages[index] = problem.message
    for kind, messages in (("stage_mismatch", stage_messages), ("in_the_future", future_messages)):
        texts = pd.Series(messages, index=list(messages), dtype="str")
        failures.add(kind, refunds.index.to_series().isin(texts.index), texts)


def _outcome_rules(
    outcomes: pd.DataFrame,
    accepted: dict[str, pd.DataFrame],
    seen_keys: dict[str, pd.Index],
    failures: _Failures,
) -> None:
    """Outcomes: known refund, not known before the refund was requested."""
    _check_parent(
        failures, outcomes["refund_id"], "refund_id", "refund_requests", accepted, seen_keys
    )
    requested = _lookup(
        outcomes["refund_id"], accepted["refund_requests"], "refund_id", "requested_at"
    )
    failures.add(
        "outcome_before_refund",
        outcomes["known_at"] < requested,
        "outcome known before the refund was requested: known_at "
        + _stamp_text(outcomes["known_at"])
        + " is before requested_at "
        + _stamp_text(requested),
    )


def _link_rules(
    links: pd.DataFrame,
    accepted: dict[str, pd.DataFrame],
    seen_keys: dict[str, pd.Index],
    failures: _Failures,
) -> None:
    """Identity links: known customer."""
    _check_parent(failures, links["customer_id"], "customer_id", "customers", accepted, seen_keys)


def _no_rules(
    frame: pd.DataFrame,
    accepted: dict[str, pd.DataFrame],
    seen_keys: dict[str, pd.Index],
    failures: _Failures,
) -> None:
    """A table without cross-column rules."""


_TABLE_RULES = {
    "orders": _order_rules,
    "refund_requests": _refund_rules,
    "outcomes": _outcome_rules,
    "identity_links": _link_rules,
}


def _to_storage(table: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """Accepted rows with the exact storage types, in schema column order."""
    if frame.empty:
        return empty_frame(table)
    columns: dict[str, pd.Series] = {}
    for col in table.columns:
        values = frame[col.name]
        if col.kind in (Kind.ID, Kind.TEXT, Kind.ENUM):
            # An optional text cell left empty is stored as a missing value, never as "nan".
            text = values.astype("str")
            columns[col.name] = text.where(values.notna(), None) if col.nullable else text
        elif col.kind is Kind.TIMESTAMP:
            columns[col.name] = values.astype("datetime64[us]")
        elif col.kind is Kind.MONEY:
            columns[col.name] = values.astype("float64")
        elif col.kind is Kind.COUNT:
            columns[col.name] = values.astype("Int64" if col.nullable else "int64")
        else:
            columns[col.name] = values.astype("boolean" if col.nullable else "bool")
    return pd.DataFrame(columns).reset_index(drop=True)
