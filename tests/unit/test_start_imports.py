"""What the service imports before its port opens: liveness answers from the first second only
if the heavy libraries (models, statistics) are imported after the port is open."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("scipy", "statsmodels", "lightgbm", "mlflow", "sklearn")


def test_the_app_module_imports_no_model_or_statistics_library() -> None:
    code = (
        "import json, sys; import serving.app; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
