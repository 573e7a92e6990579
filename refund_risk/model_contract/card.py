"""Registered model names, aliases and the scoring card a model version is served from.

Every model is registered under a fixed name and served by alias: `champion` is what the
service loads, `challenger` the latest version that did not beat it. Each run stores a small
`scoring/` folder, the booster's text file and a JSON card (features, their version,
calibration), which is what the service loads: a raw booster loads in milliseconds, an MLflow
model in seconds. MLflow is imported inside the functions that talk to the registry, never at
import.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refund_risk.errors import ConfigurationError, NotFoundError
from refund_risk.settings import Settings

ABUSE_MODEL = "refund-abuse"
TIER_MODEL = "credit-tier"
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
