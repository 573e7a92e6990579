"""MLflow tracking and the model registry: log runs, register versions, promote by alias.

Every model is registered under a fixed name and served by alias: `champion` is what the
service loads, `challenger` the latest version that did not beat it. Besides MLflow's own
model flavour (signature, input example), each run stores a small `scoring/` folder, the
booster's text file and a JSON card (features, their version, calibration), which is what the
service loads: a raw booster loads in milliseconds, an MLflow model in seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refund_risk.errors import ConfigurationError, NotFoundError
from refund_risk.settings import Settings

ABUSE_MODEL = "refund-abuse"
TIER_MODEL = "credit-tier"
EXPERIMENT = "refund-risk"
CHAMPION = "champion"
CHALLENGER = "challenger"
SCORING_DIR = "scoring"
CUTOFFS = "cutoffs"
"""Key of a tier card holding the fitted cut-offs: tier name to upper score bound, best first."""


def client_for(settings: Settings) -> Any:
    """An MLflow client on the configured store; creates the local store folder if needed."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    assert uri is not None
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: Any, settings: Settings) -> str:
    """The project's experiment, created with artifacts under the local store folder."""
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return str(found.experiment_id)
    location = None
    uri = settings.mlflow_tracking_uri or ""
    if uri.startswith("sqlite:"):
        location = (settings.mlruns_dir / "artifacts").as_uri()
    return str(client.create_experiment(EXPERIMENT, artifact_location=location))


@dataclass(frozen=True)
class ScoringCard:
    """What the service needs to score with a registered model version."""

    name: str
    version: str
    run_id: str
    model_file: Path
    card: dict[str, Any]

    @property
    def feature_version(self) -> str:
        """The feature definitions' version the model was trained on."""
        return str(self.card["feature_version"])


def download_scoring(client: Any, name: str, alias: str, into: Path | None = None) -> ScoringCard:
    """Fetch the booster file and card of `name@alias`; NotFoundError if there is none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        raise NotFoundError(
            f"no model version of {name!r} has the alias {alias!r}: train one with "
            f"`refund-risk train {'abuse' if name == ABUSE_MODEL else 'tier'} --promote`"
        ) from None
    target = into or Path(tempfile.mkdtemp(prefix=f"{name}-"))
    local = Path(client.download_artifacts(version.run_id, SCORING_DIR, str(target)))
    card = json.loads((local / "card.json").read_text())
    return ScoringCard(name, str(version.version), version.run_id, local / "model.txt", card)


def card_cutoffs(card: dict[str, Any], label: str = TIER_MODEL) -> dict[str, float] | None:
    """The tier cut-offs a tier card stores, best tier first; None for a card without any.

    A card registered before cut-offs were stored has none: the tiers file's own bounds then
    apply. Cut-offs that are not numbers rising to 1.0 are refused (ConfigurationError).
    """
    raw = card.get(CUTOFFS)
    if raw is None:
        return None
    try:
        cutoffs = {str(k): float(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError):
        raise ConfigurationError(f"{label}: its cut-offs are not numbers by tier name") from None
    bounds = list(cutoffs.values())
    rising = all(b > a for a, b in itertools.pairwise(bounds))
    if not bounds or not rising or bounds[0] <= 0.0 or bounds[-1] != 1.0:
        raise ConfigurationError(
            f"{label}: its cut-offs {cutoffs} must rise from the best tier to the worst, which "
            "must be 1.0"
        )
    return cutoffs


def finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Drop NaN and infinite values: MLflow stores them, but comparisons on them mislead."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


@dataclass(frozen=True)
class GateResult:
    """The promotion gate's comparison and its verdict."""

    metric: str
    new_value: float
    champion_value: float | None
    champion_version: str | None
    promoted: bool
    how: str

    def describe(self) -> str:
        """One paragraph for the console."""
        if self.champion_value is None and self.promoted:
            return f"no champion yet: the new version becomes champion ({self.new_value:.4f})"
        if self.champion_value is None:
            return f"no champion yet, but the new version is kept as {CHALLENGER}: {self.how}"
        verdict = "promoted to champion" if self.promoted else f"kept as {CHALLENGER}"
        return (
            f"{self.metric} on the same test months ({self.how}): new {self.new_value:.4f} vs "
            f"champion v{self.champion_version} {self.champion_value:.4f}: {verdict}"
        )


def log_and_register(
    name: str, booster: Any, card: dict[str, Any], example: Any, example_output: Any
) -> str:
    """Inside an active run: store the scoring folder (booster text and card), log the model
    with its signature and input example, register it under `name`; return the new version."""
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / SCORING_DIR
        folder.mkdir()
        booster.save_model(str(folder / "model.txt"))
        (folder / "card.json").write_text(json.dumps(card, indent=2))
        mlflow.log_artifacts(str(folder), SCORING_DIR)
    info = mlflow.lightgbm.log_model(
        booster,
        name="model",
        signature=infer_signature(example, example_output),
        input_example=example,
        registered_model_name=name,
    )
    return str(info.registered_model_version)


def set_alias(client: Any, name: str, version: str, promoted: bool) -> None:
    """Give `version` the champion alias if promoted, else the challenger alias."""
    client.set_registered_model_alias(name, CHAMPION if promoted else CHALLENGER, version)


def list_versions(
    client: Any, names: tuple[str, ...] = (ABUSE_MODEL, TIER_MODEL)
) -> list[dict[str, Any]]:
    """Every registered version with its aliases, feature version and headline metrics."""
    rows = []
    for name in names:
        try:
            aliases = client.get_registered_model(name).aliases
        except Exception:  # not registered yet
            continue
        for mv in client.search_model_versions(f"name='{name}'"):
            version_aliases = [a for a, v in aliases.items() if str(v) == str(mv.version)]
            run = client.get_run(mv.run_id)
            metrics = run.data.metrics
            rows.append(
                {
                    "model": name,
                    "version": int(mv.version),
                    "aliases": ", ".join(sorted(version_aliases)),
                    "feature_version": run.data.tags.get("feature_version", ""),
                    "created": mv.creation_timestamp,
                    "metrics": {k: v for k, v in metrics.items() if k.startswith("headline.")},
                }
            )
    rows.sort(key=lambda r: (r["model"], -r["version"]))
    return rows
