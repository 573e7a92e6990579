"""The test months' figures: the tier table, whether loss rises across tiers, the oracle."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from policy.tiers import Tiers
from training.metrics import safe_auc

ABUSIVE_TYPES: tuple[str, ...] = ("wardrober", "false_claimer", "swapper", "ring_member")
"""The oracle's latent types that abuse as a habit (evaluation only, never a feature)."""
HONEST_TYPE = "honest"
OPPORTUNIST_TYPE = "opportunist"
LATENT_TYPES: tuple[str, ...] = (HONEST_TYPE, OPPORTUNIST_TYPE, *ABUSIVE_TYPES)


def tier_table(
    tiers: Tiers,
    tier: np.ndarray,
    loss: np.ndarray,
    score: np.ndarray,
    latent_type: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per tier, best first: customer share, realised loss rate, mean score, latent types.

    Counts are customer-months (a customer appears once per test snapshot). `new_share` is the
    share of the tier's customers with no history (always in the default tier); `scored` and
    `scored_loss_rate` count only the customers the model scored, whom the cut-offs placed.
    With the oracle's `latent_type`, one `type_<name>` column per type holds its share of the
    tier.
    """
    frame = pd.DataFrame(
        {"tier": tier, "loss": np.asarray(loss, dtype=bool), "score": score, "new": np.isnan(score)}
    )
    if latent_type is not None:
        frame["latent"] = np.asarray(latent_type, dtype=object)
    rows = []
    for name in tiers.names:
        part = frame[frame["tier"] == name]
        row: dict[str, Any] = {
            "tier": name,
            "customers": len(part),
            "share": len(part) / len(frame) if len(frame) else math.nan,
            "loss_rate": float(part["loss"].mean()) if len(part) else math.nan,
            "losses": int(part["loss"].sum()),
            "mean_score": float(part["score"].mean()) if part["score"].notna().any() else math.nan,
            "new_share": float(part["new"].mean()) if len(part) else math.nan,
            "scored": int((~part["new"]).sum()),
            "scored_loss_rate": (
                float(part.loc[~part["new"], "loss"].mean()) if (~part["new"]).any() else math.nan
            ),
        }
        if latent_type is not None:
            for t in LATENT_TYPES:
                row[f"type_{t}"] = float((part["latent"] == t).mean()) if len(part) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def rises_strictly(table: pd.DataFrame) -> bool:
    """Whether every tier has scored customers and their realised loss rate rises from the best
    tier to the worst.

    Scored customers only: the cut-offs place them, while new customers are put in the default
    tier by rule, whatever their loss (a tier table without the `scored` columns counts all).
    """
    counts, rates = _ordering_columns(table)
    return bool((counts > 0).all() and np.all(np.diff(rates) > 0))


def _ordering_columns(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    if "scored_loss_rate" in table:
        return table["scored"].to_numpy(), table["scored_loss_rate"].to_numpy(dtype=np.float64)
    return table["customers"].to_numpy(), table["loss_rate"].to_numpy(dtype=np.float64)


def oracle_agreement(
    score: np.ndarray, tier: np.ndarray, latent_type: np.ndarray, tiers: Tiers, worst: int = 2
) -> dict[str, float]:
    """How well the score and the tiers agree with the oracle's latent customer types.

    * `oracle_auc_abusive_vs_honest`: ROC-AUC of the score, habitual abusers against honest
      customers (customers with a score only);
    * `oracle_auc_opportunist_vs_honest`: the same for opportunists, who abuse rarely;
    * `abusive_share_best_tier` / `_worst_tiers`: habitual abusers' share of the best tier, and
      of the `worst` worst tiers together, and their ratio (`abusive_lift_worst_vs_best`);
    * `abusive_in_worst_tiers`: the share of habitual abusers' customer-months that landed in
      the worst tiers.
    """
    latent = np.asarray(latent_type, dtype=object)
    known = ~np.isnan(score)
    abusive = np.isin(latent, ABUSIVE_TYPES)
    honest = latent == HONEST_TYPE
    opportunist = latent == OPPORTUNIST_TYPE
    out: dict[str, float] = {}
    pair = known & (abusive | honest)
    out["oracle_auc_abusive_vs_honest"] = safe_auc(abusive[pair], score[pair])
    pair = known & (opportunist | honest)
    out["oracle_auc_opportunist_vs_honest"] = safe_auc(opportunist[pair], score[pair])
    best = tier == tiers.names[0]
    bottom = np.isin(tier, tiers.names[-worst:])
    out["abusive_share_best_tier"] = float(abusive[best].mean()) if best.any() else math.nan
    out["abusive_share_worst_tiers"] = float(abusive[bottom].mean()) if bottom.any() else math.nan
    lift = out["abusive_share_worst_tiers"] / out["abusive_share_best_tier"]
    out["abusive_lift_worst_vs_best"] = lift if math.isfinite(lift) else math.nan
    out["abusive_in_worst_tiers"] = float(bottom[abusive].mean()) if abusive.any() else math.nan
    return out


def ordering_problem(table: pd.DataFrame, loss: str = "kept") -> str | None:
    """None when realised loss rises strictly from the best tier to the worst; else a sentence
    naming the first tiers out of order and what to try (`loss`: the definition trained on)."""
    counts, rates = _ordering_columns(table)
    names = list(table["tier"])
    empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
    if empty:
        what = f"tier(s) {', '.join(empty)} hold no scored test customer"
    else:
        i = next((k for k in range(len(rates) - 1) if not rates[k + 1] > rates[k]), None)
        if i is None:
            return None
        what = (
            f"tier '{names[i + 1]}' lost {rates[i + 1]:.2%} of its scored customers, not more "
            f"than the better tier '{names[i]}' ({rates[i]:.2%})"
        )
    return (
        f"realised loss does not rise strictly from the best tier to the worst on the test "
        f"months: {what}. Try: fewer tiers or larger shares for the small ones in the tiers file "
        "(a tier of a few hundred customers has a noisy loss rate), a longer history or more "
        "test months (--test-months), or "
        + (
            "--loss kept if the data has outcomes or refund-only claims on delivered goods"
            if loss == "refunds"
            else "--loss refunds if few customers have a kept-goods loss"
        )
    )
