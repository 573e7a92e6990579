"""Reviewer reasons: every template renders, the fallback is readable, bad templates are refused."""

from __future__ import annotations

import math

import pytest

from features.definitions import FEATURES
from policy.documents import PolicyError
from policy.reasons import (
    Contribution,
    ReasonTemplates,
    describe_contribution,
    explain,
    load_reason_templates,
    parse_reason_templates,
    template_keys,
    without_repeats,
)

TYPICAL_VALUES = (0.0, 1.0, 3.0, 12.5, 0.35, math.nan)


@pytest.fixture(scope="module")
def templates() -> ReasonTemplates:
    return load_reason_templates()


def test_every_template_matches_a_feature(templates: ReasonTemplates) -> None:
    names = [f.name for f in FEATURES]
    for key, template in template_keys(templates).items():
        assert any(template.pattern.fullmatch(n) for n in names), key


@pytest.mark.parametrize("feature", [f.name for f in FEATURES])
def test_every_feature_renders_with_typical_values(
    templates: ReasonTemplates, feature: str
) -> None:
    for value in TYPICAL_VALUES:
        sentence = describe_contribution(Contribution(feature, value, 0.1), templates)
        assert sentence and not sentence[0].islower()
        assert "{" not in sentence and "}" not in sentence
        assert feature not in sentence  # people read words, not feature names
        assert "nan" not in sentence.lower().split()


def test_templated_sentences_read_as_facts(templates: ReasonTemplates) -> None:
    assert (
        describe_contribution(Contribution("customer_not_received_claims_30d", 3, 0.2), templates)
        == "3 'not received' claims in the last 30 days"
    )
    assert (
        describe_contribution(
            Contribution("customer_not_received_claims_all_time", 1, 0.2), templates
        )
        == "1 'not received' claim ever"
    )
    assert (
        describe_contribution(Contribution("linked_accounts_by_device", 2, 0.2), templates)
        == "Shares a device with 2 other accounts"
    )
    assert (
        describe_contribution(Contribution("request_reason_detail", 6, 0.2), templates)
        == "Detailed reason given: not received"
    )
    assert (
        describe_contribution(Contribution("order_days_since_delivery", math.nan, 0.2), templates)
        == "The order had not been delivered when the customer asked"
    )


def test_fallback_uses_the_feature_description() -> None:
    sentence = describe_contribution(Contribution("customer_refund_requests_30d", 4, 0.2))
    assert sentence == "Refund requests the customer made in the 30 days before this request: 4"
    unknown = describe_contribution(Contribution("brand_new_signal", 2.5, 0.2))
    assert unknown == "Brand new signal: 2.5"


def test_explain_keeps_the_top_features_that_pushed_the_score_up(
    templates: ReasonTemplates,
) -> None:
    sentences = explain(
        [
            ("customer_tenure_days", 900, -0.5),
            ("customer_refund_requests_7d", 2, 0.05),
            ("customer_not_received_claims_30d", 3, 0.4),
            ("linked_accounts_by_any", 1, 0.2),
            ("request_amount", 80, 0.01),
        ],
        templates,
        top=3,
    )
    assert sentences == [
        "3 'not received' claims in the last 30 days",
        "Shares a device, address or payment instrument with 1 other account",
        "2 refund requests in the last 7 days",
    ]


def test_a_feature_sentence_an_earlier_reason_already_states_is_left_out() -> None:
    rule = "Asks back 1,114.62, at or above the review limit of 1,000.00."
    more = [
        "Asks back 1,114.62",
        "Asks back 114.62",  # another amount, not said: kept
        "Asks back 1,114.6",  # a prefix of the amount is not the amount
        "3 photos attached as evidence",
        "3 photos attached as evidence",
        "Order value 1,114.62",
    ]
    assert without_repeats([rule, "Pinned to gold"], more) == [
        rule,
        "Pinned to gold",
        "Asks back 114.62",
        "Asks back 1,114.6",
        "3 photos attached as evidence",
        "Order value 1,114.62",
    ]
    assert without_repeats([], ["Asks back 5.00."]) == ["Asks back 5.00."]
    # Nor is the tail of a larger number the number.
    spent = "3,124.87 spent in the last year"
    assert without_repeats([spent], ["124.87 spent in the last year"])[1:] == [
        "124.87 spent in the last year"
    ]
    assert without_repeats(["ASKS BACK 5.00."], ["Asks back 5.00"]) == ["ASKS BACK 5.00."]


def test_bad_templates_are_refused() -> None:
    with pytest.raises(PolicyError) as info:
        parse_reason_templates(
            {
                "features": {
                    "customer_orders_{window}": "{count} orders {windw}",
                    "no_such_feature": "x",
                    "linked_accounts_by_{colour}": "x",
                    "customer_refund_requests_{window}": {
                        "text": "{count} refund request{s} {window}",
                        "missing": "no count {window}: {count}",
                    },
                }
            }
        )
    problems = " ".join(info.value.problems)
    assert "template 'customer_orders_{window}', field 'text': unknown placeholder" in problems
    assert "template 'no_such_feature': matches no known feature" in problems
    assert "unknown family part {colour}" in problems
    assert (
        "template 'customer_refund_requests_{window}', field 'missing': {count} has no value"
    ) in problems
