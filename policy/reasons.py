"""Reviewer reasons: the features that pushed an abuse score up, written as plain sentences.

The model layer gives, for one scored request, its top contributions: (feature name, feature
value, contribution to the score). A reviewer should not have to read feature names, so each
feature gets a sentence from a template in `reasons.yaml` beside this module. A template key is
a feature name or a family of names with `{window}` (the history window: 7d, 30d, 90d, 365d,
all_time) or `{link}` (device, address, payment, any) standing for a part of the name.

Placeholders a template may use:

    {value}    the value written for its unit     {count}   a whole number
    {money}    an amount, 2 decimals              {percent} a share as a percentage
    {days}     a number of days                   {label}   a category code's name
    {s}        "s" when the count is not 1        {window}  "in the last 30 days" / "ever"
    {link}     "a device", "a delivery address", ...

A template may add `missing:`, the sentence used when the value is empty. A feature with no
template falls back to its description from `features.definitions` followed by its value, so a
new feature is readable from the day it is added.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from features.definitions import BY_NAME, Feature
from policy.documents import PolicyError
from policy.templates import render_template, template_fields, template_pieces
from refund_risk.errors import NotFoundError

DEFAULT_REASONS_PATH = Path(__file__).resolve().parent / "reasons.yaml"

WINDOW_WORDS: dict[str, str] = {
    "7d": "in the last 7 days",
    "30d": "in the last 30 days",
    "90d": "in the last 90 days",
    "365d": "in the last year",
    "all_time": "ever",
}
LINK_WORDS: dict[str, str] = {
    "device": "a device",
    "address": "a delivery address",
    "payment": "a payment instrument",
    "any": "a device, address or payment instrument",
}
_FAMILY_PARTS: dict[str, dict[str, str]] = {"window": WINDOW_WORDS, "link": LINK_WORDS}


class Contribution(NamedTuple):
    """How much one feature pushed one request's abuse score (positive: towards abuse)."""

    feature: str
    value: float
    contribution: float


@dataclass(frozen=True)
class Template:
    """A reviewer sentence for one feature or family of features."""

    key: str
    text: str
    missing: str | None
    pattern: re.Pattern[str]
    parts: tuple[str, ...]


@dataclass(frozen=True)
class ReasonTemplates:
    """All templates, exact names first, then families in file order."""

    templates: tuple[Template, ...]

    def find(self, feature: str) -> tuple[Template, dict[str, str]] | None:
        """The template for `feature` and the family parts its name filled in, if any."""
        for template in self.templates:
            match = template.pattern.fullmatch(feature)
            if match:
                return template, match.groupdict()
        return None


EMPTY_TEMPLATES = ReasonTemplates(())
"""No templates: every feature is written from its description."""


def _compile_key(key: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    parts: list[str] = []
    pattern = ""
    for literal, name, _, _ in string.Formatter().parse(key):
        pattern += re.escape(literal)
        if name is not None:
            if name not in _FAMILY_PARTS:
                raise ValueError(f"unknown family part {{{name}}}; use {{window}} or {{link}}")
            parts.append(name)
            pattern += f"(?P<{name}>{'|'.join(map(re.escape, _FAMILY_PARTS[name]))})"
    return re.compile(pattern), tuple(parts)


def parse_reason_templates(
    raw: Any, source: str = "<reasons>", features: Iterable[str] | None = None
) -> ReasonTemplates:
    """Validate templates read from YAML; each key must name at least one known feature."""
    known = list(BY_NAME) if features is None else list(features)
    if not isinstance(raw, dict) or not isinstance(raw.get("features"), dict):
        raise PolicyError(source, ["the file must have a 'features' mapping of key to template"])
    problems: list[str] = []
    exact: list[Template] = []
    families: list[Template] = []
    for key, body in raw["features"].items():
        where = f"template '{key}'"
        if isinstance(body, str):
            text, missing = body, None
        elif isinstance(body, dict) and set(body) <= {"text", "missing"} and "text" in body:
            text, missing = str(body["text"]), body.get("missing")
        else:
            problems.append(f"{where}: give a sentence, or a mapping with 'text' and 'missing'")
            continue
        try:
            pattern, parts = _compile_key(str(key))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for field_name, sentence in (("text", text), ("missing", missing)):
            if sentence is not None:
                problems.extend(
                    _placeholder_problems(
                        f"{where}, field '{field_name}'", sentence, parts, field_name == "missing"
                    )
                )
        if not any(pattern.fullmatch(name) for name in known):
            problems.append(f"{where}: matches no known feature")
        (families if parts else exact).append(
            Template(str(key), text, None if missing is None else str(missing), pattern, parts)
        )
    if problems:
        raise PolicyError(source, problems)
    return ReasonTemplates((*exact, *families))


def _placeholder_problems(
    where: str, sentence: str, parts: tuple[str, ...], missing: bool
) -> list[str]:
    """A template sentence's placeholders are value fields or its key's family parts; the
    `missing` sentence, said when there is no value, may use only the family parts."""
    try:
        names = template_fields(sentence)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    problems = []
    for name in names:
        if name not in _VALUE_FIELDS and name not in parts:
            problems.append(f"{where}: unknown placeholder {{{name}}}")
        elif missing and name not in parts:
            problems.append(f"{where}: {{{name}}} has no value to show when the value is missing")
    return problems


def load_reason_templates(path: Path | str = DEFAULT_REASONS_PATH) -> ReasonTemplates:
    """Read and validate a reason templates file (the shipped one by default)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PolicyError(str(path), [f"not valid YAML: {exc}"]) from None
    return parse_reason_templates(raw, source=str(path))


def _is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == round(value) else f"{value:,.1f}"


def _label(feature: Feature | None, value: float) -> str:
    if feature is None or not feature.values:
        return _number(value)
    code = int(value)
    if 0 <= code < len(feature.values) and code == value:
        return feature.values[code].replace("_", " ")
    return "unknown"


def _value_words(feature: Feature | None, name: str, value: float) -> str:
    """The value written as its feature's unit suggests."""
    if feature is not None and feature.categorical:
        return _label(feature, value)
    if "rate" in name or "share" in name:
        return f"{value:.0%}"
    if "amount" in name or "spend" in name:
        return f"{value:,.2f}"
    return _number(value)


_VALUES: dict[str, Callable[[Feature | None, str, float], str]] = {
    "value": _value_words,
    "count": lambda _f, _n, value: f"{round(value):,d}",
    "money": lambda _f, _n, value: f"{value:,.2f}",
    "percent": lambda _f, _n, value: f"{value:.0%}",
    "days": lambda _f, _n, value: _number(value),
    "label": lambda feature, _n, value: _label(feature, value),
    "s": lambda _f, _n, value: "" if round(value) == 1 else "s",
}
"""How a template's value placeholders are written, from the feature, its name and value."""

_VALUE_FIELDS = frozenset(_VALUES)


def describe_contribution(
    contribution: Contribution, templates: ReasonTemplates = EMPTY_TEMPLATES
) -> str:
    """One reviewer sentence for one feature's contribution."""
    return sentence_writer(contribution.feature, templates)(contribution.value)


def sentence_writer(
    name: str, templates: ReasonTemplates = EMPTY_TEMPLATES
) -> Callable[[float], str]:
    """The sentence of feature `name` for any value, with its template found and split once.

    A feature with a template is written by it (by its `missing:` sentence when the value is
    empty, if it has one); any other is written as its description and its value.
    """
    feature = BY_NAME.get(name)
    if feature is not None:
        # Descriptions may add a note after a semicolon (how emptiness is coded): not for people.
        summary = feature.description.split(";")[0].rstrip(".")
    else:
        summary = name.replace("_", " ")
    unknown = _sentence(f"{summary}: unknown")

    def plain(value: float) -> str:
        if _is_missing(value):
            return unknown
        return _sentence(f"{summary}: {_value_words(feature, name, value)}")

    found = templates.find(name)
    if found is None:
        return plain
    template, parts = found
    fixed = {part: _FAMILY_PARTS[part][word] for part, word in parts.items()}
    missing = (
        unknown if template.missing is None else _sentence(render_template(template.missing, fixed))
    )
    # The template as literal text and the value's formatters, in order ("" between them).
    pieces: list[str | Callable[[Feature | None, str, float], str]] = []
    for literal, placeholder in template_pieces(template.text):
        pieces.append(literal)
        if placeholder is not None:
            pieces.append(fixed[placeholder] if placeholder in fixed else _VALUES[placeholder])

    def templated(value: float) -> str:
        if _is_missing(value):
            return missing
        return _sentence(
            "".join([p if isinstance(p, str) else p(feature, name, value) for p in pieces])
        )

    return templated


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:]


def _said_in(sentence: str, said: str) -> bool:
    """Whether `said` already states `sentence` (as a whole phrase, case and final stop aside)."""
    phrase = sentence.rstrip(" .").casefold()
    if not phrase:
        return True
    text = said.casefold()
    start = text.find(phrase)
    while start >= 0:
        end = start + len(phrase)
        before = text[start - 1] if start else " "
        after = text[end : end + 2]
        # A whole phrase: "124.87 spent" is not said by "3,124.87 spent", nor "1,114.6" by
        # "1,114.62". Plain string search: this runs on every decision with a new amount in
        # it, where a regular expression would be compiled afresh.
        if not (before.isalnum() or before in "_.,") and not (
            after[:1].isalnum() or after[:1] == "_" or (after[:1] in ".," and after[1:2].isdigit())
        ):
            return True
        start = text.find(phrase, start + 1)
    return False


def without_repeats(first: Sequence[str], more: Iterable[str]) -> list[str]:
    """`first` (the rule's reason, notes), then each of `more` that no earlier reason states.

    A rule's reason may quote a request field that is also a feature ("Asks back 1,114.62, at or
    above the review limit" and the feature sentence "Asks back 1,114.62"): a reviewer reads it
    once.
    """
    reasons = list(first)
    for sentence in more:
        if not any(_said_in(sentence, earlier) for earlier in reasons):
            reasons.append(sentence)
    return reasons


def explain(
    contributions: Sequence[Contribution] | Sequence[tuple[str, float, float]],
    templates: ReasonTemplates = EMPTY_TEMPLATES,
    top: int = 3,
) -> list[str]:
    """Sentences for the `top` features that pushed the score up most, largest first.

    Features that pulled the score down are left out: a reviewer asks why a request looks
    risky, not why it looks safe.
    """
    items = [Contribution(*c) for c in contributions]
    pushing = sorted(
        (c for c in items if c.contribution > 0), key=lambda c: c.contribution, reverse=True
    )
    return [describe_contribution(c, templates) for c in pushing[:top]]


def template_keys(templates: ReasonTemplates) -> Mapping[str, Template]:
    """Templates by key, for listing and tests."""
    return {t.key: t for t in templates.templates}
