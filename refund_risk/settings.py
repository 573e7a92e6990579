"""Typed settings: one class, read from `REFUND_RISK_*` variables, validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from refund_risk.errors import ConfigurationError

DEFAULT_MAX_CLOCK_SKEW_SECONDS = 300.0
"""How far in the future a request time may be (clocks of two systems disagree a little)."""


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
    database_schema: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="PostgreSQL schema holding the service's tables; default: the server's.",
    )
    api_host: str = Field(
        default="127.0.0.1", min_length=1, description="Address the scoring service listens on."
    )
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port of the scoring service.")
    model_alias: str = Field(
        default="champion",
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="Registry alias of the models the service loads.",
    )
    policy_path: Path | None = Field(
        default=None, description="Policy file the service decides with; default: the shipped one."
    )
    tiers_path: Path | None = Field(
        default=None, description="Credit tiers file; default: the shipped one."
    )
    batch_limit: int = Field(
        default=50, ge=1, le=1000, description="Most refund requests in one batch call."
    )
    retry_after_seconds: int = Field(
        default=2,
        ge=1,
        le=3600,
        description="Retry-After of a 503 answer, when the database did not take a decision.",
    )
    api_key_cache_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=300.0,
        description="How long the service trusts its copy of the API keys; a revoked key stops "
        "working within this time.",
    )
    record_timeout_seconds: float = Field(
        default=5.0,
        gt=0.0,
        le=300.0,
        description="Longest a decision request waits for its decision to be recorded; then it "
        "is answered 503, and a retry with the same refund id returns the decision if it was "
        "recorded meanwhile.",
    )
    max_body_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        le=1 << 30,
        description="Largest request body the service reads, in bytes; a larger one is "
        "answered 413 before it is read whole.",
    )
    max_clock_skew_seconds: float = Field(
        default=DEFAULT_MAX_CLOCK_SKEW_SECONDS,
        ge=0.0,
        le=86_400.0,
        description="How far in the future a refund request's requested_at may be (the "
        "caller's clock may run a little ahead); later ones are refused.",
    )
    preload_events: bool = Field(
        default=True,
        description="Read the whole event store into memory at service start (fast requests); "
        "on PostgreSQL histories are read as decisions need them instead, whatever this says.",
    )
    history_cache_customers: int = Field(
        default=200_000,
        ge=1,
        le=100_000_000,
        description="On PostgreSQL, how many customers' histories one service process keeps "
        "in memory (the least recently used go first); each is checked against the database's "
        "version of it before a decision uses it.",
    )
    require_history: bool = Field(
        default=True,
        description="Readiness requires the event store to hold some history (orders): an "
        "empty one most often means the history went to another database or schema. Off for "
        "a shop that starts with none.",
    )
    record_in_process: bool = Field(
        default=True,
        description="Record decisions in a recorder process of the service's own, so the "
        "database's work runs on another core; off, they are recorded on the event loop's "
        "thread (always so for an in-memory SQLite database).",
    )
    review_sla_hours: float = Field(
        default=24.0,
        gt=0.0,
        le=24.0 * 30,
        description="Hours within which a review case should be decided; older cases are "
        "highlighted in the queue.",
    )
    review_claim_minutes: float = Field(
        default=15.0,
        gt=0.0,
        le=24.0 * 60,
        description="How long a reviewer's claim on a case lasts before others may take it.",
    )
    review_max_open_claims: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Most open cases one reviewer may hold at once when taking the next case "
        "(a reviewer limits file may set it per reviewer).",
    )
    reviewer_limits: Path | None = Field(
        default=None,
        description="YAML file of per-reviewer limits (largest amount a reviewer may decide, "
        "most cases held at once), by key name or id; read when the service starts.",
    )
    alerts: Path | None = Field(
        default=None,
        description="YAML file of alert rules and webhooks; default: the shipped "
        "serving/alerts.yaml (rules shown on the dashboard, no webhook).",
    )
    alert_interval_seconds: float = Field(
        default=300.0,
        ge=0.0,
        le=24 * 3600.0,
        description="How often the service evaluates the alert rules; 0 turns evaluation off.",
    )
    alert_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs alert deliveries (X-Refund-Risk-Signature); needed once "
        "the alerts file names a webhook.",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs the ops pages' session cookies; default: a random one per "
        "start (sessions then end when the service restarts).",
    )
    session_hours: float = Field(
        default=12.0, gt=0.0, le=24.0 * 30, description="How long an ops page sign-in lasts."
    )

    @field_validator("policy_path", "tiers_path")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser().resolve()
        if not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

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
