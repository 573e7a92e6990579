"""A shop's own names for categories, reasons and refund types, mapped onto the service's.

A mapping file is YAML: one section per enum column, each mapping the shop's value (as it is
written in the export) to one of the column's allowed values, for example

    category:
      Clothing: apparel
      "Home & Garden": home
    refund_type:
      Cancellation: refund_only

Values the file does not name are kept as they are, so a shop only maps what differs. The
importer applies the mapping before it checks a value; a value neither allowed nor mapped is
rejected with the allowed values and the mapped names listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data.schema import TABLES, Kind
from refund_risk.errors import ConfigurationError, NotFoundError

MAPPABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    c.name: c.values for t in TABLES.values() for c in t.columns if c.kind is Kind.ENUM
}
"""Every enum column of the raw tables (their names are unique across tables) and its values."""


@dataclass(frozen=True)
class ValueMapping:
    """Per enum column, the shop's value -> the service's value."""

    columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    source: Path | None = None

    def for_column(self, column: str) -> Mapping[str, str]:
        """The mapping of one column (empty if the file does not map it)."""
        return self.columns.get(column, {})


def load_mapping(path: Path) -> ValueMapping:
    """Read and check a mapping file; raise ConfigurationError naming the entry that is wrong."""
    if not path.is_file():
        raise NotFoundError(f"mapping file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"mapping file {path} is not valid YAML: {exc}") from None
    return parse_mapping(loaded or {}, path)


def parse_mapping(loaded: object, path: Path | None = None) -> ValueMapping:
    """Check a mapping as loaded from YAML: known columns, text keys, allowed targets."""
    where = f"mapping file {path}" if path is not None else "mapping"
    if not isinstance(loaded, dict):
        raise ConfigurationError(
            f"{where} must map column names to value mappings, e.g. 'category: {{Clothing: "
            "apparel}'"
        )
    columns: dict[str, dict[str, str]] = {}
    for column, entries in loaded.items():
        if column not in MAPPABLE_COLUMNS:
            raise ConfigurationError(
                f"{where}: unknown column {column!r}; columns that can be mapped: "
                f"{', '.join(MAPPABLE_COLUMNS)}"
            )
        if not isinstance(entries, dict):
            raise ConfigurationError(
                f"{where}: {column} must map the shop's values to the service's, "
                f"e.g. '{column}: {{Their name: {MAPPABLE_COLUMNS[column][0]}}}'"
            )
        allowed = MAPPABLE_COLUMNS[column]
        mapped: dict[str, str] = {}
        for theirs, ours in entries.items():
            # YAML reads `yes`, `1` or `2024-01-01` as other types; the export's cell is text.
            key = str(theirs).strip()
            if not isinstance(ours, str) or ours not in allowed:
                raise ConfigurationError(
                    f"{where}: {column} {key!r} maps to {ours!r}, which is not a {column} "
                    f"(allowed: {', '.join(allowed)})"
                )
            mapped[key] = ours
        columns[str(column)] = mapped
    return ValueMapping(columns=columns, source=path)
