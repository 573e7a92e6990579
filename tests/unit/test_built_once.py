"""A fixture built once per test run: however many workers ask at once, one builds it."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
from built_once import build_once_in


def _slow_build(folder: Path) -> None:
    with (folder.parent / "builds.log").open("a") as log:
        log.write(f"{folder.name}\n")
    time.sleep(0.3)  # long enough for the other workers to ask meanwhile
    (folder / "thing").write_text("built")


def _ask(root: str) -> str:
    folder = build_once_in(Path(root), "world", _slow_build)
    return (folder / "thing").read_text()


def test_workers_asking_at_once_get_one_build(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        answers = pool.map(_ask, [str(tmp_path)] * 4)
    assert answers == ["built"] * 4
    assert (tmp_path / "builds.log").read_text().splitlines() == ["world"]


def test_a_build_that_failed_half_way_is_started_again_from_an_empty_folder(
    tmp_path: Path,
) -> None:
    def failing(folder: Path) -> None:
        (folder / "half").write_text("")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once_in(tmp_path, "world", failing)
    folder = build_once_in(tmp_path, "world", lambda f: (f / "thing").write_text("built"))
    assert sorted(p.name for p in folder.iterdir()) == ["thing"]
