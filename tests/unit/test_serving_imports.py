"""The service loads and scores models through the model contract, never through training code,
and its decision path imports no MLflow: MLflow is imported only when models are fetched from
the registry, at start and on reload."""

from __future__ import annotations

import json
import subprocess
import sys

DECISION_PATH = (
    "serving.app",
    "serving.service",
    "serving.scoring",
    "serving.models",
    "serving.recorder",
    "serving.dashboard",
    "refund_risk.model_contract.card",
    "refund_risk.model_contract.explain",
    "refund_risk.model_contract.drift",
)
FORBIDDEN = ("training", "mlflow")


def test_the_decision_path_imports_neither_training_nor_mlflow() -> None:
    code = (
        f"import json, sys; import {', '.join(DECISION_PATH)}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} "
        f"& set({FORBIDDEN!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
