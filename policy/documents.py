"""The policy file and the credit-tiers file as written: their schema, and how they are read.

Each file is read as YAML and checked against its schema here; a problem is reported as a
sentence naming the rule, tier or field it is about (`PolicyError`). What the schema cannot say
(names that must exist, bands that must cover [0, 1], rules that can never fire) is checked by
`policy.model` for policies and `policy.tiers` for tiers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policy.vocabulary import Action
from refund_risk.errors import ConfigurationError, NotFoundError


class PolicyError(ConfigurationError):
    """A policy or tiers file is invalid; `problems` lists every problem, one sentence each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = f"{source}: {self.problems[0]}"
        else:
            text = f"{source} has {len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


class FileModel(BaseModel):
    """A part of a file: unknown keys are refused, and a read file never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(FileModel):
    """One rule as written in the file."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Short unique name, snake_case.")
    description: str = ""
    when: dict[str, Any] = Field(default_factory=dict)
    action: Action
    reason: str = Field(min_length=1, description="Why, for the reviewer; may use {field}.")
    customer_message: str | None = None


class DefaultSpec(FileModel):
    """What happens when no rule fires."""

    action: Action
    reason: str = Field(min_length=1)
    customer_message: str | None = None


class PartialOfferSpec(FileModel):
    """How the share of a partial refund offer is computed.

    Sending an item back costs the shop the return shipping and most of the item's value (a
    returned item with a defect resells for `resale_recovery_share` of its price at best), so
    the offer that costs the same as a return is `1 - resale_recovery_share + shipping / value`.
    The offer shrinks as the abuse score rises (`risk_discount` times the score), and stays
    within [`min_share`, `max_share`].
    """

    resale_recovery_share: float = Field(ge=0.0, le=1.0)
    return_shipping_cost: float = Field(ge=0.0)
    return_shipping_cost_by_category: dict[str, float] = Field(default_factory=dict)
    risk_discount: float = Field(ge=0.0, le=1.0)
    min_share: float = Field(ge=0.0, le=1.0)
    max_share: float = Field(gt=0.0, le=1.0)


class PolicyDocument(FileModel):
    """The policy file, as written."""

    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    description: str = ""
    bands: dict[str, tuple[float, float]] = Field(min_length=1)
    thresholds: dict[str, float] = Field(default_factory=dict)
    partial_offer: PartialOfferSpec | None = None
    messages: dict[Action, str] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)
    default: DefaultSpec | None = None
    tuning: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Ranges the tuner may move a threshold (by name) or a band's lower "
        "cut-off (by band name) within; [x, x] holds it fixed.",
    )


# --- reading files -------------------------------------------------------------------------------


def read_yaml(path: Path) -> Any:
    """The YAML file at `path`, parsed; a missing file or bad YAML is refused with its place."""
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(str(path), [f"not valid YAML{where}: {problem}"]) from None


def content_hash(document: BaseModel) -> str:
    """Hash of the meaning of a file, not its layout: comments and key order do not count."""
    text = json.dumps(document.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


_LIST_ITEMS: dict[str, tuple[str, str]] = {"rules": ("rule", "id"), "tiers": ("tier", "name")}
"""Lists of the files whose items are named in messages: the word and the key naming an item."""


def _where(loc: tuple[int | str, ...], raw: Any) -> str:
    """Turn a pydantic error location into 'rule 'x', field 'y'' words."""
    if len(loc) >= 2 and loc[0] in _LIST_ITEMS and isinstance(loc[1], int):
        word, key = _LIST_ITEMS[str(loc[0])]
        items = raw.get(loc[0]) if isinstance(raw, dict) else None
        name: object = f"#{loc[1] + 1}"
        if isinstance(items, list) and loc[1] < len(items) and isinstance(items[loc[1]], dict):
            name = items[loc[1]].get(key, name)
        rest = ".".join(str(p) for p in loc[2:]) or word
        return f"{word} '{name}', field '{rest}'"
    if loc and loc[0] == "default":
        rest = ".".join(str(p) for p in loc[1:]) or "default"
        return f"default, field '{rest}'"
    return f"field '{'.'.join(str(p) for p in loc)}'"


def validate_document(model: type[BaseModel], raw: Any, source: str) -> Any:
    """`raw` (read from YAML) as the file model `model`; every schema problem is refused at once."""
    if not isinstance(raw, dict):
        raise PolicyError(source, ["the file must be a YAML mapping of keys to values"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "missing"
            problems.append(f"{_where(tuple(err['loc']), raw)}: {msg}")
        raise PolicyError(source, problems) from None
