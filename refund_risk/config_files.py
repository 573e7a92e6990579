"""Configuration files an operator writes (YAML), read into a validated model or refused whole."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from refund_risk.errors import ConfigurationError

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: Path, model: type[M], what: str) -> M:
    """The YAML file at `path` validated as `model`; a bad file stops the caller with a
    sentence naming `what` it is, the file and the first bad field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"the {what} file {path} is not YAML: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise ConfigurationError(f"{what} file {path}: {where}: {first['msg']}") from None
