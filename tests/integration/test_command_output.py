"""Every main command, run as in a log (output not a terminal, $COLUMNS 40 or 200): its results
on stdout, whole (no table cut to "…" or wrapped into broken rows), and only diagnostics
(progress, notes) on stderr.

One small world goes through the README's job (generate, report, features, train, simulate,
keys, export) at 40 columns; the commands that only read are run again at 200 and must say
the same, word for word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from policy.model import DEFAULT_POLICY_PATH
from refund_risk.cli import app

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
        ["keys", "create", "--role", "scorer", "--name", "log"],
        ["events", "export", "--to", str(tmp / "export")],
        *READ_ONLY,
    ]
    return {" ".join(c[:2]): _run(c, env, NARROW) for c in commands}, env


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
