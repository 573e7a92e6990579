"""The world `make demo` builds, for tests that check what a demo user sees.

`build_demo_world` asks make for the demo's own commands (`make -n demo`: printed, not run)
and runs them, all but the last one that starts the service, with the data and the MLflow
store in a folder of the test run's instead of the repository's `data/generated` and
`mlruns`. So the world is the demo's by construction: same commands, same size and seed; a
change to the demo's recipe is a change to this world.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from refund_risk.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent

KEPT_OUT = ("serve",)
"""Demo commands not run here: the tests serve the world themselves."""


@dataclass
class DemoWorld:
    """A built demo world: its settings and one API key per role."""

    settings: Settings
    keys: dict[str, str]


def demo_settings(folder: Path) -> Settings:
    """Settings of a demo world built in `folder` (the demo's defaults otherwise)."""
    return load_settings(
        data_dir=folder / "data",
        mlruns_dir=folder / "mlruns",
        database_url=None,
        mlflow_tracking_uri=None,
        api_key_cache_seconds=0.0,
    )


def _environment(folder: Path) -> dict[str, str]:
    """This process's environment without anything that would change the demo (the
    Makefile's CUSTOMERS and SEED, the service's REFUND_RISK_* settings), with the demo's
    data and MLflow store moved into `folder`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("REFUND_RISK_") and k not in {"CUSTOMERS", "SEED", "MAKEFLAGS"}
    }
    env["REFUND_RISK_DATA_DIR"] = str(folder / "data")
    env["REFUND_RISK_MLRUNS_DIR"] = str(folder / "mlruns")
    return env


def demo_commands(folder: Path) -> list[str]:
    """The demo's `refund-risk` command lines, as `make -n demo` prints them, in order, with
    this interpreter's `refund-risk`; the ones in `KEPT_OUT` left out."""
    make = shutil.which("make")
    if make is None:
        raise RuntimeError("make is not installed: the demo world is built from `make -n demo`")
    cli = Path(sys.executable).parent / "refund-risk"
    if not cli.is_file():
        raise RuntimeError(f"no refund-risk command beside {sys.executable} (pip install -e .)")
    printed = subprocess.run(
        [make, "-n", "--no-print-directory", "-C", str(REPO), "demo", f"BIN={cli.parent}"],
        env=_environment(folder),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    prefix = f"{cli} "
    commands = [
        line.strip()
        for line in printed.splitlines()
        if line.strip().startswith(prefix)
        and shlex.split(line.strip()[len(prefix) :])[0] not in KEPT_OUT
    ]
    if not any(" data generate " in f" {c} " for c in commands):
        raise RuntimeError(f"`make -n demo` printed no `data generate`:\n{printed}")
    return commands


def build_demo_world(folder: Path) -> DemoWorld:
    """Run the demo's commands with its data and MLflow store in `folder`; then one key per
    role (the demo makes a scorer key; the tests need the others too)."""
    from serving_world import make_keys

    env = _environment(folder)
    for command in demo_commands(folder):
        done = subprocess.run(
            ["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"demo step failed ({done.returncode}): {command}\n{done.stdout}\n{done.stderr}"
            )
    settings = demo_settings(folder)
    return DemoWorld(settings, make_keys(settings))
