"""The shipped Prometheus rules watch series the service really exports, with their labels,
and pass `promtool check rules` where promtool is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from services import skip_or_fail

from serving.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "serving" / "prometheus" / "refund-risk-rules.yml"


def _exported() -> dict[str, set[str]]:
    """Every metric family the service exports, with its label names."""
    metrics = Metrics()
    metrics.count_refund("apparel", "mistake", "ordered_twice", 10.0)
    metrics.count_decision("auto_approve", False)
    families: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            families.setdefault(sample.name, set()).update(sample.labels)
    return families


def test_every_series_and_label_in_the_rules_is_exported() -> None:
    exported = _exported()
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "RefundMoneyJump",
        "RefundReasonSpike",
        "RefundCategorySpike",
    }
    for rule in rules:
        names = set(re.findall(r"refund_risk_[a-z_]+", rule["expr"]))
        assert names, rule["alert"]
        for name in names:
            assert name in exported, (rule["alert"], name, sorted(exported))
        for group in re.findall(r"by \(([^)]*)\)", rule["expr"]):
            for label in (x.strip() for x in group.split(",")):
                assert any(label in exported[n] for n in names), (rule["alert"], label)


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool is not installed (Debian: apt-get install prometheus)")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout
