"""Reason and message templates: `{placeholder}`s filled with values already written for people.

One parser and one renderer serve the policy's reasons and customer messages and the reviewer
sentences of `policy.reasons`; nothing is evaluated, a placeholder is only looked up by name.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Mapping

from policy.documents import PolicyDocument
from policy.vocabulary import CONTEXT_FIELDS

MESSAGE_FIELDS = frozenset({"amount_requested", "offered_amount", "offered_share"})
"""What a customer may be told: never a score, band or tier."""

Pieces = tuple[tuple[str, str | None], ...]
"""A template as (literal, placeholder) pairs; the placeholder is None after the last literal."""


def reason_fields(document: PolicyDocument) -> frozenset[str]:
    """Placeholders a rule's reason may use: context fields, offers and named thresholds."""
    return frozenset(
        {*CONTEXT_FIELDS, "offered_amount", "offered_share"}
        | {f"thresholds.{t}" for t in document.thresholds}
    )


def template_fields(template: str) -> list[str]:
    """The `{placeholder}` names of a template; raises ValueError on a malformed one."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} must not carry a format or conversion")
        if not name:
            raise ValueError("empty placeholder {}")
        names.append(name)
    return names


@functools.lru_cache(maxsize=4096)
def template_pieces(template: str) -> Pieces:
    """A template split into (literal, placeholder) pairs; parsed once per template text,
    because reasons are rendered on every decision."""
    return tuple((literal, name) for literal, name, _, _ in string.Formatter().parse(template))


def fill(pieces: Pieces, words: Mapping[str, str]) -> str:
    """A parsed template with its placeholders replaced by `words`, its whitespace collapsed
    (templates are folded YAML, so a line break in the file is a space)."""
    text = "".join(literal if name is None else literal + words[name] for literal, name in pieces)
    return " ".join(text.split())


def render_template(template: str, words: Mapping[str, str]) -> str:
    """Fill `{placeholder}`s from already formatted values (no attribute access, no eval)."""
    return fill(template_pieces(template), words)


def check_template(problems: list[str], where: str, template: str, allowed: frozenset[str]) -> None:
    """Add a problem for a malformed template or a placeholder not in `allowed`."""
    try:
        names = template_fields(template)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return
    for name in names:
        if name not in allowed:
            problems.append(f"{where}: unknown placeholder {{{name}}}")
