"""Pricing a policy on past requests: what it would have done, and what that would have cost.

The simulator replays a table of scored past requests (see `policy.scored`) through a policy and
counts, per policy: the share of each action; the share decided without a person; the reviewers'
workload per day against their capacity; abusive refund money paid out without a check, caught
by a check, and lost; honest customers delayed or sent to a person; and the total cost in money.

How money is counted (the cost model's figures are in `CostModel`):

* Paid without a check: the amount of an abusive request that is auto-approved or refunded
  before return, and the offered amount of an abusive request given a partial offer. This money
  is lost.
* Caught: a check stops a share of the abusive money that reaches it: the reviewers'
  `review_catch_rate` for manual review, `check_catch_rate` for the standard process (warehouse
  check of the returned item, or the delivery-evidence check of a refund-only claim). The rest
  is lost too.
* Reviewer time: each manual review costs `review_minutes` at `reviewer_cost_per_hour`.
* Return shipping: paid when goods come back, i.e. for return-and-refund requests of returnable
  goods that are refunded before return, follow the standard return, or go to review.
* Friction: each honest customer who waits (standard process or review) costs
  `friction_cost_per_delayed_honest`, the goodwill a delay loses.

Refunds paid to honest customers are not a cost: that is the deal the shop offers. The value of
goods that come back is not priced either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from data.schema import NON_RETURNABLE_CATEGORIES
from policy.context import context_arrays
from policy.documents import PolicyError
from policy.evaluate import decide_arrays
from policy.model import Policy
from policy.tiers import Tiers
from policy.vocabulary import ACTIONS, Action
from refund_risk.errors import DataValidationError, NotFoundError

FIELD_AUTOMATION_TARGET = 0.85
"""Share of refunds decided without a person that one shop reached with automated rules."""


class CostModel(BaseModel):
    """What each outcome costs; override any figure with a YAML file of the same keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    review_minutes: float = Field(default=8.0, ge=0, description="Reviewer minutes per case.")
    reviewer_cost_per_hour: float = Field(default=36.0, ge=0, description="Loaded hourly cost.")
    reviewer_capacity_per_day: float = Field(
        default=20.0, gt=0, description="Cases the review team can work per day."
    )
    return_shipping_cost: float = Field(default=7.0, ge=0, description="Cost of one return.")
    friction_cost_per_delayed_honest: float = Field(
        default=4.0, ge=0, description="Goodwill lost per honest customer kept waiting."
    )
    review_catch_rate: float = Field(
        default=0.9, ge=0, le=1, description="Share of abusive money reviewers stop."
    )
    check_catch_rate: float = Field(
        default=0.6, ge=0, le=1, description="Share of abusive money the standard check stops."
    )


def load_cost_model(path: Path | str | None = None) -> CostModel:
    """The default cost model, with the figures of a YAML file (if given) overriding it."""
    if path is None:
        return CostModel()
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return CostModel.model_validate(raw)
    except yaml.YAMLError as exc:
        raise PolicyError(str(path), [f"not valid YAML: {exc}"]) from None
    except ValidationError as exc:
        raise PolicyError(
            str(path),
            [f"field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors()],
        ) from None


@dataclass(frozen=True)
class SimulationResult:
    """Every figure of one policy on one set of past requests."""

    policy: str
    label: str
    requests: int
    days: int
    action_counts: Mapping[str, int]
    automated_share: float
    reviews_per_day: float
    peak_reviews_per_day: int
    capacity_per_day: float
    days_over_capacity: int
    abusive_requests: int
    abusive_money: float
    unchecked_abusive_money: float
    caught_abusive_money: float
    lost_abusive_money: float
    honest_requests: int
    honest_delayed: int
    honest_reviewed: int
    cost_abuse: float
    cost_review: float
    cost_shipping: float
    cost_friction: float
    decisions: pd.DataFrame = field(repr=False, compare=False)

    @property
    def action_shares(self) -> dict[str, float]:
        """Share of requests given each action."""
        n = max(self.requests, 1)
        return {a: self.action_counts.get(a, 0) / n for a in self.action_counts}

    @property
    def unchecked_abuse_share(self) -> float:
        """Share of abusive money paid out without a check."""
        return self.unchecked_abusive_money / self.abusive_money if self.abusive_money else 0.0

    @property
    def caught_abuse_share(self) -> float:
        """Share of abusive money stopped by a check."""
        return self.caught_abusive_money / self.abusive_money if self.abusive_money else 0.0

    @property
    def friction_share(self) -> float:
        """Share of honest customers kept waiting (standard process or review)."""
        delayed = self.honest_delayed + self.honest_reviewed
        return delayed / self.honest_requests if self.honest_requests else 0.0

    @property
    def total_cost(self) -> float:
        """Abuse lost, reviewer time, return shipping and friction, in money."""
        return self.cost_abuse + self.cost_review + self.cost_shipping + self.cost_friction


def pick_label(frame: pd.DataFrame, label: str = "auto") -> str:
    """The label column to count abuse by: `known`, `oracle`, or `auto` (oracle if present)."""
    if label == "known":
        return "is_abusive"
    if label == "oracle":
        if "is_abusive_true" not in frame:
            raise DataValidationError("no is_abusive_true column: this is not a synthetic world")
        return "is_abusive_true"
    if label == "auto":
        return "is_abusive_true" if "is_abusive_true" in frame else "is_abusive"
    raise DataValidationError(f"unknown label {label!r}; use auto, known or oracle")


@dataclass(frozen=True)
class Replay:
    """Past requests prepared once, so many policies can be priced on them quickly."""

    frame: pd.DataFrame
    tiers: Tiers
    label: str
    arrays: Mapping[str, np.ndarray]
    amount: np.ndarray
    abusive: np.ndarray
    returns_goods: np.ndarray
    day: np.ndarray
    days: int

    @classmethod
    def prepare(
        cls, frame: pd.DataFrame, policy: Policy, tiers: Tiers, label: str = "auto"
    ) -> Replay:
        """Check and index the requests; `policy` only fixes how bands are computed here."""
        if len(frame) == 0:
            raise DataValidationError("no past requests to simulate")
        column = pick_label(frame, label)
        arrays = context_arrays(frame, policy, tiers)
        when = pd.to_datetime(frame["requested_at"]).dt.normalize()
        day = ((when - when.min()).dt.days).to_numpy(dtype=np.int64)
        returns_goods = (arrays["refund_type"] == "return_and_refund") & ~np.isin(
            arrays["category"], list(NON_RETURNABLE_CATEGORIES)
        )
        return cls(
            frame=frame,
            tiers=tiers,
            label=column,
            arrays=arrays,
            amount=arrays["amount_requested"],
            abusive=frame[column].to_numpy(dtype=bool),
            returns_goods=returns_goods,
            day=day,
            days=int(day.max()) + 1,
        )


def simulate(
    frame: pd.DataFrame,
    policy: Policy,
    tiers: Tiers,
    costs: CostModel | None = None,
    label: str = "auto",
) -> SimulationResult:
    """Replay past scored requests through a policy and price the outcome."""
    replay = Replay.prepare(frame, policy, tiers, label)
    return simulate_replay(replay, policy, costs or CostModel())


@dataclass(frozen=True)
class Periods:
    """Past requests cut in two by time: the earlier to fit a policy on, the later to report."""

    fit: pd.DataFrame
    report: pd.DataFrame
    report_from: pd.Timestamp

    def describe(self) -> str:
        """One line saying where the periods are cut."""
        return (
            f"fit on {len(self.fit):,} requests before {self.report_from:%Y-%m-%d}, "
            f"reported on {len(self.report):,} from then on (out of sample)"
        )


def split_periods(
    frame: pd.DataFrame, report_from: pd.Timestamp | None = None, report_share: float = 0.5
) -> Periods:
    """Cut past requests by time: requests before `report_from` to fit on, the rest to report.

    Without `report_from`, the cut is the first midnight at or after the time by which
    `1 - report_share` of the requests were made, so both periods hold whole days. Fitting a
    threshold and reporting its figures on the same requests flatters it; the later period is
    what a shop would have seen after switching the policy on.
    """
    if not 0.0 < report_share < 1.0:
        raise DataValidationError(f"report_share must be between 0 and 1, got {report_share}")
    times = pd.to_datetime(frame["requested_at"])
    if report_from is None:
        ordered = np.sort(times.to_numpy(dtype="datetime64[ns]"))
        cut = ordered[min(int(len(ordered) * (1.0 - report_share)), len(ordered) - 1)]
        report_from = pd.Timestamp(cut).ceil("D")
    report_from = pd.Timestamp(report_from)
    later = (times >= report_from).to_numpy()
    fit, report = frame[~later], frame[later]
    if fit.empty or report.empty:
        raise DataValidationError(
            f"cutting at {report_from:%Y-%m-%d} leaves "
            f"{'no earlier' if fit.empty else 'no later'} requests: past requests run from "
            f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"
        )
    return Periods(fit.reset_index(drop=True), report.reset_index(drop=True), report_from)


def simulate_replay(replay: Replay, policy: Policy, costs: CostModel) -> SimulationResult:
    """Price a policy on requests already prepared (used by the tuner, which prices many)."""
    decisions = decide_arrays(replay.arrays, policy, replay.frame.index)
    return summarise(replay, decisions, policy.label, costs)


def summarise(
    replay: Replay, decisions: pd.DataFrame, policy_label: str, costs: CostModel
) -> SimulationResult:
    """The figures of a set of decisions on prepared requests."""
    action = decisions["action"].to_numpy(dtype=object)
    offered = decisions["offered_amount"].to_numpy(dtype=float)
    amount, abusive, honest = replay.amount, replay.abusive, ~replay.abusive

    is_ = {a: action == a.value for a in ACTIONS}
    paid_full = is_[Action.AUTO_APPROVE] | is_[Action.REFUND_BEFORE_RETURN]
    unchecked = float(amount[paid_full & abusive].sum())
    unchecked += float(np.nan_to_num(offered[is_[Action.PARTIAL_REFUND_OFFER] & abusive]).sum())
    reviewed_abuse = float(amount[is_[Action.MANUAL_REVIEW] & abusive].sum())
    checked_abuse = float(amount[is_[Action.STANDARD_RETURN] & abusive].sum())
    caught = costs.review_catch_rate * reviewed_abuse + costs.check_catch_rate * checked_abuse
    lost = unchecked + reviewed_abuse + checked_abuse - caught

    review = is_[Action.MANUAL_REVIEW]
    per_day = np.bincount(replay.day[review], minlength=replay.days)
    n_review = int(review.sum())
    ships = replay.returns_goods & (
        is_[Action.STANDARD_RETURN] | is_[Action.REFUND_BEFORE_RETURN] | review
    )
    delayed = honest & is_[Action.STANDARD_RETURN]
    reviewed_honest = honest & review
    n = len(action)
    return SimulationResult(
        policy=policy_label,
        label=replay.label,
        requests=n,
        days=replay.days,
        action_counts={a.value: int(is_[a].sum()) for a in ACTIONS},
        automated_share=1.0 - n_review / n,
        reviews_per_day=n_review / replay.days,
        peak_reviews_per_day=int(per_day.max()) if len(per_day) else 0,
        capacity_per_day=costs.reviewer_capacity_per_day,
        days_over_capacity=int((per_day > costs.reviewer_capacity_per_day).sum()),
        abusive_requests=int(abusive.sum()),
        abusive_money=float(amount[abusive].sum()),
        unchecked_abusive_money=unchecked,
        caught_abusive_money=caught,
        lost_abusive_money=lost,
        honest_requests=int(honest.sum()),
        honest_delayed=int(delayed.sum()),
        honest_reviewed=int(reviewed_honest.sum()),
        cost_abuse=lost,
        cost_review=n_review * costs.review_minutes * costs.reviewer_cost_per_hour / 60.0,
        cost_shipping=int(ships.sum()) * costs.return_shipping_cost,
        cost_friction=int((delayed | reviewed_honest).sum())
        * costs.friction_cost_per_delayed_honest,
        decisions=decisions,
    )


# --- printing and plotting -----------------------------------------------------------------------


def _rows(result: SimulationResult) -> list[tuple[str, str]]:
    rows = [(f"share {a}", f"{s:.1%}") for a, s in result.action_shares.items()]
    target = FIELD_AUTOMATION_TARGET
    rows += [
        (f"decided without a person (field: {target:.0%})", f"{result.automated_share:.1%}"),
        ("reviews per day (mean)", f"{result.reviews_per_day:.1f}"),
        ("reviews per day (peak)", f"{result.peak_reviews_per_day}"),
        (f"days over capacity ({result.capacity_per_day:g}/day)", f"{result.days_over_capacity}"),
        ("abusive money", f"{result.abusive_money:,.0f}"),
        (
            "  paid out without a check",
            f"{result.unchecked_abusive_money:,.0f} ({result.unchecked_abuse_share:.1%})",
        ),
        (
            "  caught by a check",
            f"{result.caught_abusive_money:,.0f} ({result.caught_abuse_share:.1%})",
        ),
        ("  lost", f"{result.lost_abusive_money:,.0f}"),
        ("honest customers delayed", f"{result.honest_delayed:,}"),
        ("honest customers sent to review", f"{result.honest_reviewed:,}"),
        ("  friction (share of honest)", f"{result.friction_share:.1%}"),
        ("cost: abuse lost", f"{result.cost_abuse:,.0f}"),
        ("cost: reviewer time", f"{result.cost_review:,.0f}"),
        ("cost: return shipping", f"{result.cost_shipping:,.0f}"),
        ("cost: friction", f"{result.cost_friction:,.0f}"),
        ("total cost", f"{result.total_cost:,.0f}"),
    ]
    return rows


def format_comparison(results: Sequence[SimulationResult]) -> str:
    """The figures of several policies side by side, as a plain-text table."""
    if not results:
        return ""
    first = results[0]
    header = (
        f"{first.requests:,} past requests over {first.days} days; abuse counted by {first.label}"
    )
    table = [_rows(r) for r in results]
    names = [r.policy for r in results]
    width = max(len(label) for label, _ in table[0])
    cols = [max(len(names[i]), *(len(v) for _, v in table[i])) for i in range(len(results))]
    lines = [header, ""]
    lines.append(
        " " * width + "  " + "  ".join(n.rjust(c) for n, c in zip(names, cols, strict=True))
    )
    for k, (label, _) in enumerate(table[0]):
        cells = "  ".join(table[i][k][1].rjust(cols[i]) for i in range(len(results)))
        lines.append(f"{label.ljust(width)}  {cells}")
    return "\n".join(lines)


def plot_comparison(results: Sequence[SimulationResult], path: Path) -> Path:
    """Save the policies' figures side by side as a six-panel PNG chart (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data.storage import atomic_path

    names = [r.policy for r in results]
    x = np.arange(len(results))
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))

    ax = axes[0, 0]
    width = 0.8 / len(ACTIONS)
    for k, action in enumerate(ACTIONS):
        shares = [r.action_shares[action.value] * 100 for r in results]
        ax.bar(x + (k - (len(ACTIONS) - 1) / 2) * width, shares, width=width, label=action.value)
    ax.set_xticks(x, names, rotation=10)
    ax.set_title("Share of each action (%)")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    ax.bar(x, [r.automated_share * 100 for r in results], color="#4477aa")
    ax.axhline(FIELD_AUTOMATION_TARGET * 100, color="black", ls="--", label="field figure 85%")
    ax.set_xticks(x, names, rotation=10)
    ax.set_ylim(0, 100)
    ax.set_title("Decided without a person (%)")
    ax.legend()

    ax = axes[0, 2]
    ax.bar(x - 0.2, [r.reviews_per_day for r in results], width=0.4, label="mean")
    ax.bar(x + 0.2, [r.peak_reviews_per_day for r in results], width=0.4, label="peak")
    ax.axhline(results[0].capacity_per_day, color="black", ls="--", label="capacity")
    ax.set_xticks(x, names, rotation=10)
    ax.set_title("Reviews per day")
    ax.legend()

    ax = axes[1, 0]
    unchecked = np.array([r.unchecked_abusive_money for r in results])
    caught = np.array([r.caught_abusive_money for r in results])
    missed = np.array([r.lost_abusive_money - r.unchecked_abusive_money for r in results])
    ax.bar(x, unchecked, color="#cc6677", label="paid without a check")
    ax.bar(x, missed, bottom=unchecked, color="#ddaa33", label="missed by a check")
    ax.bar(x, caught, bottom=unchecked + missed, color="#228833", label="caught")
    ax.set_xticks(x, names, rotation=10)
    ax.set_title("Abusive refund money")
    ax.legend()

    ax = axes[1, 1]
    delayed = [r.honest_delayed / max(r.honest_requests, 1) * 100 for r in results]
    reviewed = [r.honest_reviewed / max(r.honest_requests, 1) * 100 for r in results]
    ax.bar(x, delayed, color="#88ccee", label="standard process")
    ax.bar(x, reviewed, bottom=delayed, color="#332288", label="sent to review")
    ax.set_xticks(x, names, rotation=10)
    ax.set_title("Honest customers kept waiting (%)")
    ax.legend()

    ax = axes[1, 2]
    bottom = np.zeros(len(results))
    parts: dict[str, list[float]] = {
        "abuse lost": [r.cost_abuse for r in results],
        "reviewer time": [r.cost_review for r in results],
        "return shipping": [r.cost_shipping for r in results],
        "friction": [r.cost_friction for r in results],
    }
    for label, values in parts.items():
        ax.bar(x, values, bottom=bottom, label=label)
        bottom += np.array(values)
    ax.set_xticks(x, names, rotation=10)
    ax.set_title("Total cost (money)")
    ax.legend()

    first = results[0]
    fig.suptitle(
        f"Policy simulation: {first.requests:,} past requests over {first.days} days "
        f"(abuse by {first.label})"
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path


def result_figures(result: SimulationResult) -> dict[str, Any]:
    """The headline figures as plain data (for JSON, logs and tests)."""
    return {
        "policy": result.policy,
        "requests": result.requests,
        "automated_share": result.automated_share,
        "reviews_per_day": result.reviews_per_day,
        "unchecked_abuse_share": result.unchecked_abuse_share,
        "caught_abuse_share": result.caught_abuse_share,
        "friction_share": result.friction_share,
        "total_cost": result.total_cost,
        "action_shares": result.action_shares,
    }
