"""The layers the folders show hold: import-linter checks the contracts in pyproject.toml
(nothing below imports anything above, only serving knows HTTP, the service reaches the model
registry only through the model contract), and those contracts cover every installed package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_are_kept() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports; "
            "raise SystemExit(lint_imports(no_cache=True, no_logo=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_contracts_cover_every_installed_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    installed = {p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    linter = config["tool"]["importlinter"]
    assert installed <= set(linter["root_packages"])
    layers = next(c for c in linter["contracts"] if c["type"] == "layers")["layers"]
    modules = [m.strip() for layer in layers for m in layer.replace(":", "|").split("|")]
    named = {m.split(".")[0] for m in modules}
    assert installed <= named
