"""`refund-risk features ...` end to end on a small world written to disk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from data.schema import TABLES
from data.storage import write_table
from features.cli import app
from features.definitions import CUSTOMER_FEATURES, FEATURE_NAMES, FEATURE_VERSION
from features.manifest import read_manifest, require_feature_version
from refund_risk.errors import ConfigurationError

Tables = dict[str, pd.DataFrame]
runner = CliRunner()


@pytest.fixture
def raw_dir(
    random_world: Callable[..., Tables], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A random world stored as raw Parquet tables, with the data folder pointed at tmp_path."""
    monkeypatch.setenv("REFUND_RISK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("REFUND_RISK_DATABASE_URL", raising=False)
    directory = tmp_path / "data" / "raw"
    for name, frame in random_world(seed=41, n_customers=40).items():
        write_table(frame, TABLES[name], directory)
    return directory


def test_build_writes_tables_and_manifest(raw_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["build"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "data" / "features"
    manifest = read_manifest(out)
    assert manifest["feature_version"] == FEATURE_VERSION
    assert [f["name"] for f in manifest["features"]] == list(FEATURE_NAMES)
    refunds = pd.read_parquet(out / manifest["tables"]["refund_features"]["file"])
    raw_refunds = pd.read_parquet(raw_dir / "refund_requests.parquet")
    assert manifest["tables"]["refund_features"]["rows"] == len(refunds) == len(raw_refunds)
    first, last = manifest["tables"]["refund_features"]["time_range"]
    assert pd.Timestamp(first) == raw_refunds["requested_at"].min()
    assert pd.Timestamp(last) == raw_refunds["requested_at"].max()
    snapshots = pd.read_parquet(out / manifest["tables"]["credit_snapshots"]["file"])
    assert manifest["tables"]["credit_snapshots"]["rows"] == len(snapshots) > 0
    assert set(f.name for f in CUSTOMER_FEATURES) <= set(snapshots.columns)
    assert snapshots["snapshot_at"].nunique() == len(
        manifest["tables"]["credit_snapshots"]["snapshot_dates"]
    )
    require_feature_version(manifest["feature_version"])
    with pytest.raises(ConfigurationError, match="rebuild the features"):
        require_feature_version("0000000000000000")


def test_describe_prints_every_feature(raw_dir: Path) -> None:
    result = runner.invoke(app, ["describe"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in FEATURE_NAMES:
        assert name in result.output
    as_json = json.loads(runner.invoke(app, ["describe", "--json"]).output)
    assert as_json["feature_version"] == FEATURE_VERSION
    assert all(f["description"] for f in as_json["features"])


def test_ingest_twice_leaves_one_copy(raw_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    for _ in range(2):
        result = runner.invoke(app, ["ingest", str(raw_dir), "--database-url", url])
        assert result.exit_code == 0, result.output
    from features.store import EventStore

    store = EventStore.open(url)
    expected = {name: len(pd.read_parquet(raw_dir / f"{name}.parquet")) for name in TABLES}
    assert store.counts() == expected
    store.dispose()


def test_ingest_of_a_missing_folder_is_one_sentence(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["ingest", str(tmp_path / "nowhere"), "--database-url", f"sqlite:///{tmp_path / 'e.db'}"],
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_benchmark_prints_figures(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--customers",
            "300",
            "--online-customers",
            "300",
            "--requests",
            "20",
            "--no-snapshots",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    batch, online = figures["batch"][0], figures["online"][0]
    assert batch["customers"] == 300 and batch["requests_per_second"] > 0
    assert batch["peak_rss_mb"] > 0
    assert online["row_median_us"] > 0 and online["predict_median_us"] > 0
