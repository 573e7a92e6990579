"""Every main command, run as in a log (output not a terminal, $COLUMNS 40 or 200): its results
on stdout, whole (no table cut to "…" or wrapped into broken rows), and only diagnostics
(progress, notes) on stderr.

One small world goes through the README's job (generate, report, features, train, simulate,
tune, keys, export) at 40 columns, a shop's own export is imported into another folder, and the
benchmark commands run on tiny worlds; the commands that only read are run again at 200 and
must say the same, word for word. `serve` is started as a process writing to files, and its
start lines must each be one whole line on stderr.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policy.model import DEFAULT_POLICY_PATH
from refund_risk.cli import app
from tests.shop_export import write_shop_export

pytestmark = pytest.mark.slow

NARROW, WIDE = 40, 200
NUMBER = re.compile(r"\d+\.\d+")
PROGRESS = re.compile(r"━+ +\d+%|: done in \d+\.\d s$", re.MULTILINE)
"""A progress bar, or the line a stage's progress ends with in a log."""


@dataclass
class Ran:
    """What one command wrote."""

    args: list[str]
    exit_code: int
    stdout: str
    stderr: str


def _run(args: list[str], env: dict[str, str | None], columns: int) -> Ran:
    result = CliRunner().invoke(app, args, env={**env, "COLUMNS": str(columns)})
    ran = Ran(args, result.exit_code, result.stdout, result.stderr)
    assert ran.exit_code == 0, (args, ran.stdout, ran.stderr, result.exception)
    return ran


READ_ONLY = [
    ["data", "report"],
    ["data", "check"],
    ["features", "describe"],
    ["models", "list"],
    ["keys", "list"],
    ["policy", "validate", str(DEFAULT_POLICY_PATH)],
    ["policy", "show"],
]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Ran], dict[str, str | None]]:
    """Each command of the job, run once at 40 columns, by its words; and the environment."""
    tmp = tmp_path_factory.mktemp("command-output")
    env = {
        "REFUND_RISK_DATA_DIR": str(tmp / "world"),
        "REFUND_RISK_MLRUNS_DIR": str(tmp / "mlruns"),
        "REFUND_RISK_MLFLOW_TRACKING_URI": None,
    }
    raw = str(tmp / "world" / "raw")
    handwritten = str(DEFAULT_POLICY_PATH.with_name("handwritten.yaml"))
    commands = [
        ["data", "generate", "--customers", "8000", "--seed", "4"],
        ["features", "build"],
        ["features", "ingest", raw, "--replace"],
        ["train", "abuse", "--promote"],
        ["train", "tier", "--promote"],
        ["policy", "simulate", "--policy", str(DEFAULT_POLICY_PATH), "--compare", handwritten],
        ["policy", "tune", "--policy", str(DEFAULT_POLICY_PATH), "--output", str(tmp / "t.yaml")],
        ["keys", "create", "--role", "scorer", "--name", "log"],
        ["events", "export", "--to", str(tmp / "export")],
        ["data", "benchmark", "--customers", "400"],
        [
            "features",
            "benchmark",
            "--customers",
            "300",
            "--online-customers",
            "300",
            "--requests",
            "20",
            "--no-snapshots",
        ],
        *READ_ONLY,
    ]
    ran = {" ".join(c[:2]): _run(c, env, NARROW) for c in commands}
    # A shop's own files, imported into a folder of their own (an import replaces the world).
    export = write_shop_export(tmp / "shop-export")
    shop = {**env, "REFUND_RISK_DATA_DIR": str(tmp / "shop")}
    imported = ["data", "import", str(export.folder), "--mapping", str(export.mapping)]
    ran["data import"] = _run(imported, shop, NARROW)
    return ran, env


def test_no_result_is_cut_and_no_progress_reaches_stdout(
    job: tuple[dict[str, Ran], dict[str, str | None]],
) -> None:
    ran, _ = job
    for name, r in ran.items():
        assert r.stdout.strip(), name
        assert "…" not in r.stdout and "…" not in r.stderr, name
        assert "\x1b[" not in r.stdout, name  # no colour codes in a log
        assert not PROGRESS.search(r.stdout), name


def test_each_command_puts_its_results_on_stdout_and_not_on_stderr(
    job: tuple[dict[str, Ran], dict[str, str | None]],
) -> None:
    ran, _ = job
    results = {
        "data generate": ["refund_requests"],
        "features build": ["feature version"],
        "features ingest": ["event store at"],
        "train abuse": ["split:", "rows:", "roc_auc", "calibration_error", "trained in"],
        "train tier": ["split:", "tier cut-offs", "trained in"],
        "policy simulate": ["decided without a person"],
        "policy tune": ["out of sample", "tuned policy"],
        "data import": ["customers", "refund_requests", "rejected"],
        "data benchmark": ["rows/s", "peak RSS"],
        "features benchmark": ["requests/s", "predicts"],
        "models list": ["refund-abuse"],
        "policy show": ["rule", "refund before return"],
    }
    for name, words in results.items():
        for word in words:
            assert word in ran[name].stdout, (name, word, ran[name].stdout)
            assert word not in ran[name].stderr, (name, word, ran[name].stderr)
    # The key's token is the result; the sentence about it is a note.
    created = ran["keys create"]
    assert len(created.stdout.split()) == 1 and "shown only now" in created.stderr


def test_every_row_of_the_abuse_figures_is_one_line_with_a_figure_per_model(
    job: tuple[dict[str, Ran], dict[str, str | None]],
) -> None:
    out = job[0]["train abuse"].stdout
    header = next(line for line in out.splitlines() if "figure" in line)
    models = len([c for c in header.split("┃") if c.strip()]) - 1
    assert models >= 2, header
    for key in ("roc_auc", "average_precision", "calibration_error", "at_capacity_money_recall"):
        row = next(line for line in out.splitlines() if re.search(rf"\b{key}\b", line))
        assert len(NUMBER.findall(row)) + row.count(" - ") >= models, (key, row)


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_a_command_that_only_reads_says_the_same_at_any_width(
    job: tuple[dict[str, Ran], dict[str, str | None]], args: list[str]
) -> None:
    ran, env = job
    wide = _run(args, env, WIDE)
    assert wide.stdout == ran[" ".join(args[:2])].stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_says_where_it_listens_on_whole_lines_of_stderr(tmp_path: Path) -> None:
    # No world and no models: the start lines are the same, and the warnings about what is
    # missing must be whole lines too.
    port = _free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if k != "REFUND_RISK_MLFLOW_TRACKING_URI"},
        "REFUND_RISK_DATA_DIR": str(tmp_path / "world"),
        "REFUND_RISK_MLRUNS_DIR": str(tmp_path / "mlruns"),
        "COLUMNS": str(NARROW),
    }
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with stdout.open("w") as out, stderr.open("w") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "refund_risk.cli", "serve", "--port", str(port)],
            stdout=out,
            stderr=err,
            env=environ,
        )
        try:
            deadline = time.monotonic() + 180
            while not all(
                line in stderr.read_text()
                for line in ("Application startup complete.", "credit-tier not loaded")
            ):
                assert server.poll() is None, stderr.read_text()
                assert time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.2)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
                assert answer.status == 200
        finally:
            server.terminate()
            server.wait(timeout=60)
    lines = stderr.read_text().splitlines()
    where = f"http://127.0.0.1:{port}"
    assert f"serving on {where} with one worker (docs: {where}/docs)" in lines, lines
    assert any(line.endswith("Application startup complete.") for line in lines), lines
    missing = "refund-abuse not loaded: no model registry at "
    assert any(line.startswith(missing) for line in lines), lines
    assert not any("…" in line or "\x1b[" in line for line in lines), lines
    assert stdout.read_text() == ""
