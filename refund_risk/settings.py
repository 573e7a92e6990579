"""Typed settings: one class, read from `REFUND_RISK_*` variables, validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from refund_risk.errors import ConfigurationError


class Settings(BaseSettings):
    """Everything a process needs to know about where things live.

    Relative paths are taken from the working directory at the moment the settings are built,
    and stored absolute so that a later `chdir` cannot move them.
    """

    model_config = SettingsConfigDict(env_prefix="REFUND_RISK_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data/generated"),
        description="Where raw tables, feature tables and reports are written.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the service database; default: SQLite in data_dir.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; defaults to a SQLite store under ./mlruns.",
    )
    mlruns_dir: Path = Field(default=Path("mlruns"), description="Local MLflow store folder.")
    seed: int = Field(default=7, ge=0, description="Random seed for generation and training.")

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        self.mlruns_dir = self.mlruns_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'refund_risk.db'}"
        if self.mlflow_tracking_uri is None:
            self.mlflow_tracking_uri = f"sqlite:///{self.mlruns_dir / 'mlflow.db'}"
        return self

    @property
    def raw_dir(self) -> Path:
        """Folder of the validated raw tables (Parquet)."""
        return self.data_dir / "raw"

    @property
    def oracle_dir(self) -> Path:
        """Folder of the synthetic world's ground truth; evaluation only, never features."""
        return self.data_dir / "oracle"

    @property
    def reports_dir(self) -> Path:
        """Folder of printed reports' saved copies and plots."""
        return self.data_dir / "reports"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning a validation failure into one sentence."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"REFUND_RISK_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
