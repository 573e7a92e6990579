"""MLflow tracking and the model registry, training's side: log runs, register versions,
promote by alias, list what is registered.

Besides MLflow's own model flavour (signature, input example), each run stores the scoring
folder the service loads; its names, the card and how it is fetched are the model contract
(`refund_risk.model_contract.card`), which the service reads without importing training.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refund_risk.model_contract.card import (
    ABUSE_MODEL,
    CHALLENGER,
    CHAMPION,
    SCORING_DIR,
    TIER_MODEL,
)
from refund_risk.settings import Settings

EXPERIMENT = "refund-risk"


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
