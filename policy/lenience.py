"""Checking a policy's direction: a riskier request should never get a more lenient action.

`policy validate` warns (without refusing the file) where the rules send a riskier abuse band
to a more lenient action than a safer band gets for the same request.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from data.schema import CATEGORIES, ORDER_STAGES, REASON_DETAILS, REFUND_TYPES
from policy.conditions import Ref
from policy.context import context_arrays
from policy.evaluate import decide_arrays
from policy.model import Policy
from policy.tiers import Tiers
from policy.vocabulary import CONTEXT_FIELDS, Action, Unit

LENIENCE: dict[Action, int] = {
    Action.AUTO_APPROVE: 0,
    Action.REFUND_BEFORE_RETURN: 1,
    Action.PARTIAL_REFUND_OFFER: 2,
    Action.STANDARD_RETURN: 3,
    Action.MANUAL_REVIEW: 4,
}
"""Actions from most lenient (0) to least: a riskier request should never move up this list."""


def _probe_contexts(policy: Policy, tiers: Tiers, n: int, seed: int) -> pd.DataFrame:
    """Requests spread over every enum value, tier, and the money boundaries the rules and the
    tiers draw (each boundary, and a cent either side), drawn at random with a fixed seed."""
    rng = np.random.default_rng(seed)
    edges: set[float] = {5.0, 50.0, 150.0, 500.0, 2000.0}
    for rule in policy.rules:
        for cond in rule.conditions:
            if CONTEXT_FIELDS[cond.field].unit != Unit.MONEY:
                continue
            operand = cond.operand
            if isinstance(operand, Ref) and operand.name.startswith("thresholds."):
                operand = policy.thresholds[operand.name.removeprefix("thresholds.")]
            if isinstance(operand, float):
                edges.add(operand)
    for tier in tiers.tiers:
        edges.update({tier.auto_approve_limit, tier.max_outstanding_unreturned})
    money = np.array(sorted({round(max(e + d, 0.01), 2) for e in edges for d in (-0.01, 0, 0.01)}))
    outstanding = np.concatenate([[0.0], money])
    details = list(REASON_DETAILS)
    frame = pd.DataFrame(
        {
            "order_stage": rng.choice(ORDER_STAGES, n),
            "category": rng.choice(CATEGORIES, n),
            "reason_detail": rng.choice(details, n),
            "refund_type": rng.choice(REFUND_TYPES, n),
            "photo_count": rng.integers(0, 3, n),
            "days_since_delivery": rng.choice([np.nan, 0.5, 3.0, 30.0], n),
            "outstanding_unreturned_value": rng.choice(outstanding, n),
            "watchlisted": rng.random(n) < 0.2,
            "linked_abusive_accounts": rng.choice([0, 0, 1, 3], n),
            "customer_confirmed_abusive_refunds": rng.choice([0, 0, 1, 3], n),
            "tier": rng.choice(np.asarray(tiers.names, dtype=object), n),
            "amount_requested": rng.choice(money, n),
        }
    )
    frame["reason"] = frame["reason_detail"].map(REASON_DETAILS)
    frame["order_amount"] = frame["amount_requested"]
    frame["abuse_score"] = 0.0
    return frame


def lenience_inversions(
    policy: Policy, tiers: Tiers, samples: int = 4000, seed: int = 0, limit: int = 5
) -> list[str]:
    """Warnings for rules that send a riskier band to a more lenient action than a safer band
    gets for the same request, each naming the two rules (at most `limit`, most common first).

    The same requests are decided at scores spread through every band (each band's floor,
    middle and top); a riskier score that gets a more lenient action is an inversion. It is a
    search over requests at the rules' and tiers' boundaries, not a proof: silence means none
    was found.
    """
    frame = _probe_contexts(policy, tiers, samples, seed)
    arrays = context_arrays(frame, policy, tiers)
    points = sorted(
        {
            s
            for b in policy.bands
            for s in (b.lower, (b.lower + b.upper) / 2, np.nextafter(b.upper, b.lower))
        }
    )
    rank = {a.value: r for a, r in LENIENCE.items()}
    decided = []
    for score in points:
        out = decide_arrays({**arrays, "abuse_score": np.full(len(frame), score)}, policy)
        decided.append(
            (
                out["abuse_band"].to_numpy(),
                out["action"].map(rank).to_numpy(),
                out["action"].to_numpy(),
                out["rule_id"].to_numpy(),
            )
        )
    found: dict[tuple[str, str, str, str], int] = {}
    for i, (band_lo, rank_lo, action_lo, rule_lo) in enumerate(decided):
        for band_hi, rank_hi, action_hi, rule_hi in decided[i + 1 :]:
            worse = (rank_hi < rank_lo) & (band_hi != band_lo)
            for k in np.flatnonzero(worse):
                key = (
                    f"rule '{rule_hi[k]}' sends band '{band_hi[k]}' to {action_hi[k]}",
                    f"rule '{rule_lo[k]}' sends the safer band '{band_lo[k]}' to {action_lo[k]}",
                    str(frame["tier"].iloc[k]),
                    str(frame["order_stage"].iloc[k]),
                )
                found[key] = found.get(key, 0) + 1
    ranked = sorted(found.items(), key=lambda item: -item[1])
    pairs: dict[tuple[str, str], tuple[str, str]] = {}
    for (riskier, safer, tier, stage), _ in ranked:
        pairs.setdefault((riskier, safer), (tier, stage))
    return [
        f"{riskier}, more lenient than {safer} for the same request (e.g. order stage "
        f"{stage}, tier {tier})"
        for (riskier, safer), (tier, stage) in itertools.islice(pairs.items(), limit)
    ]
