"""Loading policy and tiers files: every bad file is refused, naming the rule and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy.documents import PolicyError
from policy.model import DEFAULT_POLICY_PATH, HANDWRITTEN_POLICY_PATH, load_policy, parse_policy
from policy.tiers import DEFAULT_TIERS_PATH, Tiers, assign_tier, load_tiers, parse_tiers
from policy.vocabulary import Action
from refund_risk.errors import ConfigurationError, NotFoundError


@pytest.fixture(scope="module")
def tiers() -> Tiers:
    return load_tiers(DEFAULT_TIERS_PATH)


def minimal() -> dict[str, Any]:
    return {
        "name": "test",
        "version": 3,
        "bands": {"low": [0.0, 0.2], "high": [0.2, 1.0]},
        "thresholds": {"review_amount": 500.0},
        "messages": {a.value: "We have your request." for a in Action},
        "rules": [
            {
                "id": "risky",
                "when": {"abuse_band": "high"},
                "action": "manual_review",
                "reason": "Risky: {abuse_score}.",
            },
            {
                "id": "big",
                "when": {"amount_requested": {">=": "thresholds.review_amount"}},
                "action": "manual_review",
                "reason": "Big.",
            },
        ],
        "default": {"action": "standard_return", "reason": "Standard."},
    }


def refused(raw: dict[str, Any], tiers: Tiers | None = None) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(raw, source="test.yaml", tiers=tiers)
    assert isinstance(info.value, ConfigurationError)
    return str(info.value)


def test_shipped_files_load(tiers: Tiers) -> None:
    policy = load_policy(DEFAULT_POLICY_PATH, tiers=tiers)
    assert policy.version >= 1 and len(policy.content_hash) == 12
    assert policy.default.action == Action.STANDARD_RETURN
    assert {r.action for r in policy.all_rules} == set(Action)
    load_policy(HANDWRITTEN_POLICY_PATH, tiers=tiers)
    assert tiers.default.name == "standard"
    assert not tiers.default.has_privileges
    assert tiers.names[0] != tiers.default.name != tiers.names[-1]


def test_minimal_policy_compiles() -> None:
    policy = parse_policy(minimal())
    assert [r.id for r in policy.all_rules] == ["risky", "big", "default"]
    assert policy.band_of(0.0) == "low"
    assert policy.band_of(0.2) == "high"
    assert policy.band_of(1.0) == "high"


def test_unknown_action_names_rule_and_field() -> None:
    raw = minimal()
    raw["rules"][1]["action"] = "refund_twice"
    message = refused(raw)
    assert "rule 'big', field 'action'" in message


def test_unknown_field_names_rule_and_field() -> None:
    raw = minimal()
    raw["rules"][1]["when"] = {"amount_requestd": {">=": 10}}
    message = refused(raw)
    assert "rule 'big', field 'amount_requestd': unknown field" in message


def test_unknown_key_in_rule_is_refused() -> None:
    raw = minimal()
    raw["rules"][0]["wen"] = {}
    assert "rule 'risky', field 'wen': unknown key" in refused(raw)


@pytest.mark.parametrize(
    ("bands", "words"),
    [
        ({"low": [0.0, 0.3], "high": [0.2, 1.0]}, "band 'high' [0.2, 1.0) overlaps band 'low'"),
        ({"low": [0.0, 0.2], "high": [0.3, 1.0]}, "gap"),
        ({"low": [0.1, 0.2], "high": [0.2, 1.0]}, "must start at 0"),
        ({"low": [0.0, 0.2], "high": [0.2, 0.9]}, "must end at 1"),
    ],
)
def test_bad_bands_are_refused(bands: dict[str, list[float]], words: str) -> None:
    raw = minimal()
    raw["bands"] = bands
    assert words in refused(raw)


def test_unreachable_rule_names_both_rules() -> None:
    raw = minimal()
    raw["rules"].append(
        {
            "id": "very_risky_and_big",
            "when": {"abuse_score": {">=": 0.5}, "amount_requested": {">": 900}},
            "action": "auto_approve",
            "reason": "Never.",
        }
    )
    message = refused(raw)
    assert "rule 'very_risky_and_big', field 'when': unreachable" in message
    assert "earlier rule 'risky'" in message


def test_rule_covered_by_a_threshold_is_unreachable() -> None:
    raw = minimal()
    raw["rules"].append(
        {
            "id": "huge",
            "when": {"amount_requested": {">": 2000}, "category": "electronics"},
            "action": "manual_review",
            "reason": "Huge.",
        }
    )
    assert "earlier rule 'big'" in refused(raw)


def test_narrower_earlier_rule_does_not_make_later_unreachable() -> None:
    raw = minimal()
    raw["rules"].append(
        {
            "id": "small_refund_only",
            "when": {"amount_requested": {"<": 50}, "refund_type": "refund_only"},
            "action": "auto_approve",
            "reason": "Small.",
        }
    )
    raw["rules"].append(
        {
            "id": "small",
            "when": {"amount_requested": {"<": 50}},
            "action": "auto_approve",
            "reason": "Small.",
        }
    )
    parse_policy(raw)


def test_contradictory_conditions_are_refused() -> None:
    raw = minimal()
    raw["rules"].append(
        {
            "id": "impossible",
            "when": {"abuse_score": {"<": 0.1}, "abuse_band": "high"},
            "action": "auto_approve",
            "reason": "Never.",
        }
    )
    assert "rule 'impossible', field 'when': its conditions contradict" in refused(raw)


def test_missing_default_is_refused() -> None:
    raw = minimal()
    del raw["default"]
    assert "field 'default': missing" in refused(raw)


def test_unconditional_rule_is_refused() -> None:
    raw = minimal()
    raw["rules"].append({"id": "all", "action": "auto_approve", "reason": "All."})
    assert "rule 'all', field 'when': matches every request" in refused(raw)


@pytest.mark.parametrize(
    ("when", "words"),
    [
        ({"category": "shoes"}, "field 'category': unknown value 'shoes'"),
        ({"abuse_band": "medium"}, "field 'abuse_band': unknown value 'medium'"),
        ({"category": {"<": "home"}}, "'<' compares numbers"),
        ({"amount_requested": {">=": "thresholds.nope"}}, "unknown threshold 'nope'"),
        ({"amount_requested": {">=": "tier.nope"}}, "'tier.nope' is neither"),
        ({"amount_requested": {"~": 3}}, "unknown test '~'"),
        ({"watchlisted": "yes"}, "'yes' is not true or false"),
        ({"reason": {"in": []}}, "non-empty list"),
        ({"amount_requested": None}, "never empty"),
    ],
)
def test_bad_conditions_name_rule_and_field(when: dict[str, Any], words: str) -> None:
    raw = minimal()
    raw["rules"][1]["when"] = when
    message = refused(raw)
    assert "rule 'big'" in message
    assert words in message


def test_unknown_tier_name_is_refused_when_tiers_are_known(tiers: Tiers) -> None:
    raw = minimal()
    raw["rules"][1]["when"] = {"tier": "platinum"}
    parse_policy(raw)  # without tiers the name cannot be checked
    assert "field 'tier': unknown value 'platinum'" in refused(raw, tiers)


def test_unknown_placeholder_and_missing_message_are_refused() -> None:
    raw = minimal()
    raw["rules"][0]["reason"] = "Score {abuse_scor}."
    raw["messages"].pop("standard_return")
    message = refused(raw)
    assert "rule 'risky', field 'reason': unknown placeholder {abuse_scor}" in message
    assert "no customer message for standard_return" in message


def test_customer_message_may_not_reveal_the_score() -> None:
    raw = minimal()
    raw["messages"]["manual_review"] = "Your risk is {abuse_score}."
    assert "field 'messages.manual_review': unknown placeholder {abuse_score}" in refused(raw)


def test_partial_offer_needs_its_parameters() -> None:
    raw = minimal()
    raw["rules"][1]["action"] = "partial_refund_offer"
    assert "field 'partial_offer': missing" in refused(raw)


def test_duplicate_rule_ids_are_refused() -> None:
    raw = minimal()
    raw["rules"][1]["id"] = "risky"
    raw["rules"][1]["when"] = {"category": "home"}
    assert "rule 'risky', field 'id': used more than once" in refused(raw)


def test_all_problems_are_reported_at_once() -> None:
    raw = minimal()
    raw["rules"][0]["when"] = {"colour": "red"}
    raw["rules"][1]["when"] = {"category": "shoes"}
    with pytest.raises(PolicyError) as info:
        parse_policy(raw)
    assert len(info.value.problems) == 2


def test_tuning_range_must_hold_the_value() -> None:
    raw = minimal()
    raw["tuning"] = {"review_amount": [600, 900], "nothing": [0, 1]}
    message = refused(raw)
    assert "field 'tuning.review_amount'" in message
    assert "field 'tuning.nothing'" in message


def test_hash_ignores_comments_and_key_order(tmp_path: Path) -> None:
    raw = minimal()
    a = tmp_path / "a.yaml"
    a.write_text("# a comment\n" + yaml.safe_dump(raw, sort_keys=True))
    b = tmp_path / "b.yaml"
    b.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_policy(a).content_hash == load_policy(b).content_hash
    changed = copy.deepcopy(raw)
    changed["thresholds"]["review_amount"] = 501.0
    assert parse_policy(changed).content_hash != load_policy(a).content_hash


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML at line"):
        load_policy(bad)
    with pytest.raises(NotFoundError):
        load_policy(tmp_path / "absent.yaml")


# --- tiers ------------------------------------------------------------------------------------


def tiers_raw() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_TIERS_PATH.read_text())


def tiers_refused(raw: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as info:
        parse_tiers(raw, source="tiers.yaml")
    return str(info.value)


def test_tiers_out_of_order_are_refused() -> None:
    raw = tiers_raw()
    raw["tiers"][1]["max_loss_probability"] = raw["tiers"][0]["max_loss_probability"] / 2
    assert "tier 'silver', field 'max_loss_probability'" in tiers_refused(raw)


def test_worst_tier_must_take_everyone() -> None:
    raw = tiers_raw()
    raw["tiers"][-1]["max_loss_probability"] = 0.9
    assert "the worst tier must take every customer" in tiers_refused(raw)


def test_unknown_default_tier_and_privileged_default_are_refused() -> None:
    raw = tiers_raw()
    raw["default_tier"] = "bronze"
    assert "'bronze' is not one of the tiers" in tiers_refused(raw)
    raw["default_tier"] = "silver"
    assert "must not allow refund before return" in tiers_refused(raw)


def test_worse_tier_with_more_privilege_is_refused() -> None:
    raw = tiers_raw()
    raw["tiers"][3]["auto_approve_limit"] = 1000
    assert "tier 'watch', field 'auto_approve_limit'" in tiers_refused(raw)


def test_tier_field_errors_name_tier_and_field() -> None:
    raw = tiers_raw()
    raw["tiers"][0]["auto_approve_limit"] = -5
    raw["tiers"][0]["colour"] = "gold"
    message = tiers_refused(raw)
    assert "tier 'gold', field 'auto_approve_limit'" in message
    assert "tier 'gold', field 'colour': unknown key" in message


def test_assign_tier(tiers: Tiers) -> None:
    gold = tiers.get("gold").max_loss_probability
    assert assign_tier(0.0, tiers).name == "gold"
    assert assign_tier(gold, tiers).name == "gold"  # bounds belong to their tier
    assert assign_tier(gold + 1e-6, tiers).name == "silver"
    assert assign_tier(0.5, tiers).name == "restricted"
    assert assign_tier(1.0, tiers).name == "restricted"
    assert assign_tier(None, tiers) is tiers.default
    assert assign_tier(float("nan"), tiers) is tiers.default
    with pytest.raises(ValueError):
        assign_tier(1.5, tiers)
