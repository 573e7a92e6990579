"""Expensive test fixtures built once per test run, whichever xdist worker asks first.

A trained world takes many seconds to build. Grouping its tests onto one worker
(`xdist_group`) does not work with pytest 9 and pytest-xdist 3.8 (the group marks are
ignored, so every worker built its own), and would serialise them anyway. Instead the first
worker to ask builds it into a folder all workers of the run share, under a file lock; the
others wait for it and then use it, each through a copy of its own where tests write to it.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

BUILT = "built"
"""The marker a finished build leaves beside its folder; a folder without one is half-built."""


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every worker of this test run (the run's own base folder without
    xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """The folder `name`, filled by `build(folder)` exactly once per test run.

    A build that failed half-way leaves no marker: the next worker to ask starts it again in
    an empty folder (and most likely fails the same way, reporting the same error).
    """
    return build_once_in(run_folder(tmp_path_factory), name, build)


def build_once_in(root: Path, name: str, build: Callable[[Path], None]) -> Path:
    """`root / name`, filled by `build` once, whichever process asks first (see `built_once`)."""
    folder = root / name
    marker = root / f"{name}.{BUILT}"
    with FileLock(str(root / f"{name}.lock")):
        if not marker.exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            marker.touch()
    return folder


def save(value: Any, path: Path) -> None:
    """Keep a built value (frames, a fitted model) for the other workers."""
    with path.open("wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def load(path: Path) -> Any:
    """A value `save` kept."""
    with path.open("rb") as f:
        return pickle.load(f)


def private_copy(source: Path, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A copy of a built folder for this worker alone, for tests that write to it."""
    target = tmp_path_factory.mktemp(name)
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target
