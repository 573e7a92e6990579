"""`.ci/run` on machines made of stubs: what it installs, starts and requires, with and without CI.

Each test builds a folder of commands: a few real tools the script needs (bash, sed, awk...)
and stand-ins for apt-get, the PostgreSQL cluster tools, psql, chromium, promtool and make,
which record what they were asked and keep a tiny machine state in files (what is installed,
which clusters exist, whether the server answers). The script runs with only that folder on
PATH, so nothing on the real machine is installed, started or changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from services import services_required, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "run"

REAL_TOOLS = (
    "bash",
    "env",
    "dirname",
    "ls",
    "sort",
    "tail",
    "head",
    "awk",
    "sed",
    "grep",
    "seq",
    "sleep",
    "id",
    "cat",
    "touch",
    "mkdir",
    "cp",
    "chmod",
    "rm",
)

# Stand-ins. $STATE is the machine's state folder, $LOG the record of calls, $PKG the folder
# of commands that apt-get "installs" into $BIN.
STUBS = {
    "apt-get": r"""
echo "apt-get $*" >> "$LOG"
[ "$1" = install ] || exit 0
for pkg in "$@"; do
    case "$pkg" in
        postgresql)
            for tool in pg_isready pg_lsclusters pg_createcluster pg_ctlcluster psql; do
                cp "$PKG/$tool" "$BIN/$tool"
            done
            # Debian's package creates cluster "main" with password auth on TCP, stopped here.
            echo "15 main" > "$STATE/clusters"
            mkdir -p "$PG_CLUSTER_CONF_ROOT/15/main"
            echo "host all all 127.0.0.1/32 scram-sha-256" \
                > "$PG_CLUSTER_CONF_ROOT/15/main/pg_hba.conf"
            mkdir -p "$LIBPG/15"
            ;;
        chromium) cp "$PKG/chromium" "$BIN/chromium" ;;
        prometheus) cp "$PKG/promtool" "$BIN/promtool" ;;
    esac
done
""",
    "pg_isready": r"""[ -f "$STATE/running" ]""",
    "pg_lsclusters": r"""
[ -f "$STATE/clusters" ] || exit 0
while read -r v n; do
    echo "$v $n 5432 down postgres /var/lib/postgresql/$v/$n log"
done < "$STATE/clusters"
""",
    "pg_createcluster": r"""
echo "pg_createcluster $*" >> "$LOG"
echo "15 main" > "$STATE/clusters"
mkdir -p "$PG_CLUSTER_CONF_ROOT/15/main"
echo "host all all 127.0.0.1/32 trust" > "$PG_CLUSTER_CONF_ROOT/15/main/pg_hba.conf"
""",
    "pg_ctlcluster": r"""
echo "pg_ctlcluster $*" >> "$LOG"
touch "$STATE/running"
""",
    "psql": r"""
echo "psql $*" >> "$LOG"
case "$*" in *"CREATE DATABASE test"*) touch "$STATE/test-db" ;; esac
case "$*" in *"SELECT 1"*) [ -f "$STATE/test-db" ] && echo 1 ;; esac
exit 0
""",
    "chromium": "exit 0",
    "promtool": "exit 0",
    "make": r"""
echo "make $* require=${REFUND_RISK_REQUIRE_SERVICES:-unset}" \
    "url=${REFUND_RISK_TEST_POSTGRES_URL:-}" >> "$LOG"
""",
}


@dataclass
class Machine:
    """A machine of stubs; `run` runs `.ci/run` on it."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def hba(self) -> Path:
        return self.root / "etc" / "15" / "main" / "pg_hba.conf"

    def install(self, *tools: str) -> None:
        """Put these stand-ins on PATH, as if their packages were installed."""
        for tool in tools:
            shutil.copy(self.root / "pkg" / tool, self.bin / tool)

    def calls(self) -> list[str]:
        log = self.root / "log"
        return log.read_text().splitlines() if log.exists() else []

    def run(self, ci: str | None) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": str(self.bin),
            "HOME": str(self.root),
            "STATE": str(self.state),
            "LOG": str(self.root / "log"),
            "PKG": str(self.root / "pkg"),
            "BIN": str(self.bin),
            "LIBPG": str(self.root / "lib"),
            "PG_CLUSTER_CONF_ROOT": str(self.root / "etc"),
        }
        if ci is not None:
            env["CI"] = ci
        return subprocess.run(
            ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
        )


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    """A bare machine: the real tools the script needs, apt-get, and nothing else."""
    m = Machine(tmp_path)
    for folder in (m.bin, m.state, tmp_path / "pkg"):
        folder.mkdir()
    for tool in REAL_TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        os.symlink(found, m.bin / tool)
    for name, body in STUBS.items():
        path = tmp_path / "pkg" / name
        path.write_text(f"#!{shutil.which('bash')}\n{body.strip()}\n")
        path.chmod(0o755)
    m.install("apt-get", "make")
    return m


def _make_calls(m: Machine) -> list[str]:
    return [c for c in m.calls() if c.startswith("make ")]


def test_under_ci_a_bare_machine_gets_postgresql_installed_started_and_required(
    machine: Machine,
) -> None:
    done = machine.run("true")
    assert done.returncode == 0, done.stderr
    calls = machine.calls()
    installs = [c for c in calls if c.startswith("apt-get") and " install " in f"{c} "]
    assert any(c.endswith(" postgresql") for c in installs), calls
    assert any(c.endswith(" chromium") for c in installs), calls
    assert any(c.endswith(" prometheus") for c in installs), calls
    # The cluster Debian created lets 127.0.0.1 in without a password, before any other rule.
    assert machine.hba.read_text().splitlines()[0] == "host all all 127.0.0.1/32 trust"
    assert any(c.startswith("pg_ctlcluster") and "15 main" in c for c in calls), calls
    assert any("CREATE DATABASE test" in c for c in calls), calls
    assert _make_calls(machine) == [
        "make lint types require=1 url=postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "make test require=1 url=postgresql+psycopg://postgres@127.0.0.1:5432/test",
    ]


def test_under_ci_services_are_required_even_when_all_are_already_running(
    machine: Machine,
) -> None:
    machine.install("pg_isready", "pg_lsclusters", "pg_ctlcluster", "psql", "chromium", "promtool")
    (machine.state / "running").touch()
    (machine.state / "test-db").touch()
    done = machine.run("true")
    assert done.returncode == 0, done.stderr
    assert not [c for c in machine.calls() if c.startswith(("apt-get", "pg_ctlcluster"))]
    assert [c.split(" require=")[1].split()[0] for c in _make_calls(machine)] == ["1", "1"]


def test_under_ci_an_installed_but_stopped_server_is_started_not_reinstalled(
    machine: Machine,
) -> None:
    machine.install("pg_isready", "pg_lsclusters", "pg_ctlcluster", "psql", "chromium", "promtool")
    (machine.state / "clusters").write_text("15 main\n")
    machine.hba.parent.mkdir(parents=True)
    machine.hba.write_text("host all all 127.0.0.1/32 scram-sha-256\n")
    done = machine.run("true")
    assert done.returncode == 0, done.stderr
    calls = machine.calls()
    assert not [c for c in calls if c.startswith("apt-get")], calls
    assert "pg_ctlcluster --skip-systemctl-redirect 15 main restart" in calls
    assert machine.hba.read_text().splitlines()[0] == "host all all 127.0.0.1/32 trust"


def test_under_ci_a_machine_that_cannot_install_postgresql_fails_before_the_tests(
    machine: Machine,
) -> None:
    (machine.bin / "apt-get").unlink()  # not Debian: nothing can be installed
    done = machine.run("true")
    assert done.returncode != 0
    assert "PostgreSQL" in done.stderr
    assert _make_calls(machine) == []


def test_outside_ci_a_bare_machine_is_left_alone_and_service_tests_may_skip(
    machine: Machine,
) -> None:
    (machine.bin / "apt-get").unlink()
    done = machine.run(None)
    assert done.returncode == 0, done.stderr
    assert "the database tests will skip" in done.stderr
    assert "the browser tests will skip" in done.stderr
    assert [c.split(" require=")[1].split()[0] for c in _make_calls(machine)] == [
        "unset",
        "unset",
    ]


def test_outside_ci_postgresql_is_never_installed_nor_its_access_rules_changed(
    machine: Machine,
) -> None:
    done = machine.run("false")
    assert done.returncode == 0, done.stderr
    calls = machine.calls()
    assert not [c for c in calls if c.startswith("apt-get install") and "postgresql" in c]
    assert not [c for c in calls if c.startswith("apt-get") and c.endswith("prometheus")]
    # Chromium is installed as before, wherever apt-get is.
    assert any(c.endswith(" chromium") for c in calls), calls
    assert "require=unset" in _make_calls(machine)[-1]


@pytest.mark.parametrize(
    ("environ", "required"),
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "1"}, True),
        ({"CI": "false"}, False),
        ({"REFUND_RISK_REQUIRE_SERVICES": "1"}, True),
        ({"REFUND_RISK_REQUIRE_SERVICES": "0", "CI": "true"}, False),
        ({"REFUND_RISK_REQUIRE_SERVICES": "", "CI": "true"}, True),
    ],
)
def test_a_missing_service_fails_a_test_under_ci_and_skips_it_elsewhere(
    environ: dict[str, str], required: bool
) -> None:
    assert services_required(environ) is required


def test_skip_or_fail_fails_when_services_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFUND_RISK_REQUIRE_SERVICES", raising=False)
    outcomes = []
    for ci in ("true", "false"):
        monkeypatch.setenv("CI", ci)
        # Caught as BaseException: a skip raised where a failure is due must not skip this test.
        with pytest.raises(BaseException) as caught:
            skip_or_fail("no browser")
        outcomes.append((type(caught.value), str(caught.value)))
    assert outcomes == [
        (pytest.fail.Exception, "required service missing: no browser"),
        (pytest.skip.Exception, "no browser"),
    ]
