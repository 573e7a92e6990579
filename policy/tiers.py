"""Credit tiers: the tiers file validated, and the tier of a customer's loss probability.

A tier summarises how far the shop trusts a customer with money before goods come back; each
carries its privileges (refund before return, an auto-approve limit, an exposure limit). The
file lists the tiers best first; loading refuses a file whose tiers do not get stricter from
the best to the worst, with every problem found.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from policy.documents import FileModel, PolicyError, content_hash, read_yaml, validate_document

DEFAULT_TIERS_PATH = Path(__file__).resolve().parent / "tiers.yaml"
"""The shipped credit tiers."""


class Tier(FileModel):
    """A credit tier and its privileges."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    max_loss_probability: float = Field(
        gt=0.0,
        le=1.0,
        description="Upper bound of the predicted 90-day loss probability, used only with a "
        "tier model that stored no cut-offs of its own (one fitted at the `share`s replaces it).",
    )
    share: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Share of the training population's scored customers the tier holds; "
        "training fits each tier's upper bound at these score percentiles, best tier first.",
    )
    refund_before_return_allowed: bool
    auto_approve_limit: float = Field(ge=0.0)
    max_outstanding_unreturned: float = Field(ge=0.0)

    @property
    def has_privileges(self) -> bool:
        """Whether the tier gets anything beyond the standard process."""
        return (
            self.refund_before_return_allowed
            or self.auto_approve_limit > 0
            or self.max_outstanding_unreturned > 0
        )


class TiersDocument(FileModel):
    """The tiers file, as written."""

    version: int = Field(ge=1)
    description: str = ""
    default_tier: str
    tiers: list[Tier] = Field(min_length=1)


@dataclass(frozen=True)
class Tiers:
    """Validated credit tiers, best first."""

    tiers: tuple[Tier, ...]
    default: Tier
    version: int
    content_hash: str
    source: str = "<tiers>"

    @property
    def names(self) -> tuple[str, ...]:
        """Tier names, best first."""
        return tuple(t.name for t in self.tiers)

    @property
    def shares(self) -> tuple[float, ...] | None:
        """Each tier's share of the scored customers, best first; None when the file has none."""
        if self.tiers[0].share is None:
            return None
        return tuple(float(t.share or 0.0) for t in self.tiers)

    def get(self, name: str) -> Tier:
        """The tier called `name`."""
        for t in self.tiers:
            if t.name == name:
                return t
        raise PolicyError(self.source, [f"unknown tier {name!r}; tiers are {list(self.names)}"])


def assign_tier(score: float | None, tiers: Tiers) -> Tier:
    """The tier of a customer whose predicted 90-day loss probability is `score`.

    The best tier whose `max_loss_probability` is at least the score; a customer without a
    score (new, or never scored) gets the default tier.
    """
    if score is None or math.isnan(score):
        return tiers.default
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"a loss probability must be in [0, 1], got {score}")
    for tier in tiers.tiers:
        if score <= tier.max_loss_probability:
            return tier
    return tiers.tiers[-1]


def with_bounds(tiers: Tiers, bounds: Mapping[str, float], source: str | None = None) -> Tiers:
    """The same tiers with other upper bounds (by tier name), validated as a tiers file is.

    How a tier model's fitted cut-offs are put in force: names absent from `bounds` keep the
    file's bound; bounds that do not rise from the best tier to the worst, or a worst tier that
    does not take every customer, are refused with the file's own messages.
    """
    raw = {
        "version": tiers.version,
        "default_tier": tiers.default.name,
        "tiers": [
            {
                **t.model_dump(mode="json"),
                "max_loss_probability": float(bounds.get(t.name, t.max_loss_probability)),
            }
            for t in tiers.tiers
        ],
    }
    return parse_tiers(raw, source=source or f"{tiers.source} (fitted cut-offs)")


def load_tiers(path: Path | str = DEFAULT_TIERS_PATH) -> Tiers:
    """Read and validate a credit tiers file."""
    path = Path(path)
    return parse_tiers(read_yaml(path), source=str(path))


def parse_tiers(raw: Any, source: str = "<tiers>") -> Tiers:
    """Validate tiers already read from YAML (a mapping)."""
    document: TiersDocument = validate_document(TiersDocument, raw, source)
    tiers = document.tiers
    names = [t.name for t in tiers]
    problems = [
        f"tier '{name}' is defined more than once"
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    problems.extend(_order_problems(tiers))
    problems.extend(_share_problems(tiers))
    if tiers[-1].max_loss_probability != 1.0:
        problems.append(
            f"tier '{tiers[-1].name}', field 'max_loss_probability': the worst tier must take "
            f"every customer (1.0), not {tiers[-1].max_loss_probability}"
        )
    default = next((t for t in tiers if t.name == document.default_tier), None)
    if default is None:
        problems.append(
            f"field 'default_tier': {document.default_tier!r} is not one of the tiers {names}"
        )
    else:
        problems.extend(_default_problems(default, tiers))
    for tier in tiers:
        if tier.refund_before_return_allowed and tier.max_outstanding_unreturned <= 0:
            problems.append(
                f"tier '{tier.name}', field 'max_outstanding_unreturned': refund before return "
                "is allowed but the exposure limit is 0, so it can never be used"
            )
    if problems:
        raise PolicyError(source, problems)
    assert default is not None
    return Tiers(
        tiers=tuple(tiers),
        default=default,
        version=document.version,
        content_hash=content_hash(document),
        source=source,
    )


def _order_problems(tiers: Sequence[Tier]) -> list[str]:
    """Each tier, from the best to the worst, takes riskier customers and gives no more."""
    problems: list[str] = []
    for better, worse in itertools.pairwise(tiers):
        if worse.max_loss_probability <= better.max_loss_probability:
            problems.append(
                f"tier '{worse.name}', field 'max_loss_probability': "
                f"{worse.max_loss_probability} must be above the better tier "
                f"'{better.name}' ({better.max_loss_probability}); tiers go best to worst"
            )
        for privilege in ("auto_approve_limit", "max_outstanding_unreturned"):
            if getattr(worse, privilege) > getattr(better, privilege):
                problems.append(
                    f"tier '{worse.name}', field '{privilege}': {getattr(worse, privilege)} is "
                    f"more than the better tier '{better.name}' gets "
                    f"({getattr(better, privilege)})"
                )
        if worse.refund_before_return_allowed and not better.refund_before_return_allowed:
            problems.append(
                f"tier '{worse.name}', field 'refund_before_return_allowed': allowed, but not "
                f"for the better tier '{better.name}'"
            )
    return problems


def _share_problems(tiers: Sequence[Tier]) -> list[str]:
    """Shares are given for every tier or none, and then add up to 1."""
    given = [t.share for t in tiers if t.share is not None]
    if given and len(given) != len(tiers):
        missing = [t.name for t in tiers if t.share is None]
        return [f"field 'share': every tier needs a share when one has it; missing for {missing}"]
    if given and not math.isclose(sum(given), 1.0, abs_tol=1e-6):
        return [
            f"field 'share': the tiers' shares must add up to 1 (every scored customer is in "
            f"one tier), they add up to {sum(given):g}"
        ]
    return []


def _default_problems(default: Tier, tiers: Sequence[Tier]) -> list[str]:
    """New customers start without refund before return, and not in the best tier."""
    problems: list[str] = []
    if default.refund_before_return_allowed:
        problems.append(
            f"field 'default_tier': new customers' tier '{default.name}' must not allow "
            "refund before return"
        )
    if default is tiers[0] and len(tiers) > 1:
        problems.append(
            f"field 'default_tier': new customers cannot start in the best tier '{default.name}'"
        )
    return problems
