"""A world's vital signs: the figures that say whether data looks like a real shop's.

Works on any raw world, generated or imported; the oracle figures appear only when the world
is synthetic and its oracle is present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from data.schema import FINGERPRINT_COLUMNS, REASONS

FIELD_REASON_MIX: dict[str, float] = {
    "mistake": 0.38,
    "not_as_described": 0.22,
    "logistics": 0.18,
    "changed_mind": 0.15,
    "other": 0.07,
}
"""Refund reason shares in a 500-order sample of one shop (field figure)."""


@dataclass
class VitalSigns:
    """Figures computed from a world's tables; plain data, ready to print or plot."""

    orders: int
    refunds: int
    refund_rate: float
    refund_rate_by_month: pd.Series
    reason_mix: pd.Series
    labelled_share: float
    labelled_abusive_share: float
    label_delay_days: pd.DataFrame
    early_claim_abuse_ratio: float
    high_value_claim_ratio: float
    abuse_by_category: pd.Series
    true_abusive_share: float | None = None
    true_abusive_money_share: float | None = None
    detected_share_of_abuse: float | None = None
    abuse_by_pattern: pd.Series | None = None
    oracle_auc: float | None = None
    fingerprint_coverage: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def latest_labels(outcomes: pd.DataFrame) -> pd.Series:
    """Each refund's latest known outcome (is_abusive), indexed by refund_id."""
    ordered = outcomes.sort_values(["known_at", "outcome_id"], kind="stable")
    return ordered.groupby("refund_id")["is_abusive"].last()


def vital_signs(
    tables: dict[str, pd.DataFrame], oracle_refunds: pd.DataFrame | None = None
) -> VitalSigns:
    """Compute the vital signs of a world; `oracle_refunds` adds the ground-truth figures."""
    orders, refunds, outcomes = tables["orders"], tables["refund_requests"], tables["outcomes"]
    month = refunds["requested_at"].dt.to_period("M")
    orders_by_month = orders.groupby(orders["ordered_at"].dt.to_period("M")).size()
    rate_by_month = (refunds.groupby(month).size() / orders_by_month).fillna(0.0)
    reason_mix = refunds["reason"].value_counts(normalize=True).reindex(REASONS, fill_value=0.0)

    labels = latest_labels(outcomes)
    labelled = refunds["refund_id"].isin(labels.index)
    observed = labels.reindex(refunds["refund_id"]).to_numpy(dtype=float, na_value=np.nan)

    timed = outcomes.merge(refunds[["refund_id", "requested_at"]], on="refund_id")
    timed["delay_days"] = (timed["known_at"] - timed["requested_at"]).dt.total_seconds() / 86_400
    delays = timed.groupby("source")["delay_days"].describe(percentiles=[0.5, 0.9])

    joined = refunds.merge(
        orders[["order_id", "delivered_at", "amount", "category"]], on="order_id", how="left"
    )
    since_delivery = (joined["requested_at"] - joined["delivered_at"]).dt.total_seconds() / 86_400
    delivered = joined["order_stage"].eq("delivered") & since_delivery.notna()

    claimed = orders["order_id"].isin(refunds["order_id"])
    high, low = orders["amount"] > 2000, orders["amount"] < 100
    high_ratio = (
        float(claimed[high].mean() / claimed[low].mean()) if high.any() and low.any() else np.nan
    )

    signs = VitalSigns(
        orders=len(orders),
        refunds=len(refunds),
        refund_rate=len(refunds) / max(len(orders), 1),
        refund_rate_by_month=rate_by_month,
        reason_mix=reason_mix,
        labelled_share=float(labelled.mean()) if len(refunds) else 0.0,
        labelled_abusive_share=float(np.nanmean(observed)) if labelled.any() else 0.0,
        label_delay_days=delays,
        early_claim_abuse_ratio=np.nan,
        high_value_claim_ratio=high_ratio,
        abuse_by_category=pd.Series(dtype=float),
        fingerprint_coverage={
            c: float(orders[c].notna().mean()) if len(orders) else 0.0
            for c in FINGERPRINT_COLUMNS.values()
        },
    )

    # Abuse figures use the oracle's truth when there is one, the labels known so far otherwise.
    if oracle_refunds is not None:
        truth = oracle_refunds.set_index("refund_id").reindex(refunds["refund_id"])
        abusive = truth["is_abusive_true"].to_numpy(dtype=bool)
        money = refunds["amount_requested"].to_numpy()
        signs.true_abusive_share = float(abusive.mean())
        signs.true_abusive_money_share = float(money[abusive].sum() / money.sum())
        detected = np.nan_to_num(observed, nan=0.0).astype(bool)
        signs.detected_share_of_abuse = float(detected[abusive].mean()) if abusive.any() else 0.0
        signs.abuse_by_pattern = truth["pattern"].value_counts()
        if 0 < abusive.sum() < len(abusive):
            signs.oracle_auc = float(roc_auc_score(abusive, truth["true_abuse_probability"]))
        flag = pd.Series(abusive, index=joined.index, dtype=float)
    else:
        flag = pd.Series(observed, index=joined.index)

    early = flag[delivered & (since_delivery < 7)].mean()
    later = flag[delivered & (since_delivery >= 7)].mean()
    signs.early_claim_abuse_ratio = float(early / later) if later > 0 else np.nan
    signs.abuse_by_category = flag.groupby(joined["category"]).mean().sort_values(ascending=False)

    if not 0.02 <= signs.refund_rate <= 0.05:
        signs.warnings.append(
            f"refund rate {signs.refund_rate:.1%} is outside the 2-5% seen in the field"
        )
    return signs


def format_report(signs: VitalSigns) -> str:
    """The vital signs as plain text, one figure a line, with the field figure beside it."""
    lines = [
        f"orders                         {signs.orders:,}",
        f"refund requests                {signs.refunds:,}",
        f"refund rate                    {signs.refund_rate:.2%}   (field: 2.1% to 4.2%)",
        "refund rate by month           "
        + " ".join(f"{v:.1%}" for v in signs.refund_rate_by_month.to_numpy()),
        "reason mix                     share    field",
    ]
    for reason, share in signs.reason_mix.items():
        lines.append(f"  {reason:<28} {share:6.1%}   {FIELD_REASON_MIX.get(str(reason), 0.0):5.0%}")
    lines += [
        f"requests with a label so far   {signs.labelled_share:.1%}",
        f"labelled abusive (known)       {signs.labelled_abusive_share:.1%}",
        "claims <7 days after delivery are "
        + _times(
            signs.early_claim_abuse_ratio,
            "no labelled claim 7 days or more after delivery was abusive, or none is labelled",
        )
        + " as often abusive (field: over 1.2x)",
        "orders over 2,000 claim "
        + _times(signs.high_value_claim_ratio, "no order over 2,000 or none under 100 to compare")
        + " as often as orders under 100 (field: 2.5x)",
        "abuse share by category       "
        + (
            ", ".join(f"{k} {_share(v, 'no label')}" for k, v in signs.abuse_by_category.items())
            or "n/a (no refund request)"
        ),
        "fingerprints on orders        "
        + ", ".join(f"{c} {v:.1%}" for c, v in signs.fingerprint_coverage.items())
        + "   (linked-account features are missing where there is none)",
        "label delay (days from request to outcome) by source:",
    ]
    for source, row in signs.label_delay_days.iterrows():
        lines.append(
            f"  {source!s:<28} n={int(row['count']):<7} median {row['50%']:5.1f}   "
            f"p90 {row['90%']:5.1f}"
        )
    if signs.true_abusive_share is not None:
        lines += [
            f"truly abusive (oracle)         {signs.true_abusive_share:.1%} of requests, "
            f"{signs.true_abusive_money_share:.1%} of refund money   (field: ~10%, ~25%)",
            f"abuse ever detected            {signs.detected_share_of_abuse:.1%}",
            "oracle ROC-AUC                 "
            + (
                f"{signs.oracle_auc:.3f}"
                if signs.oracle_auc is not None
                else "n/a (every request or none is abusive)"
            )
            + "   (a hard world: 0.85-0.95)",
        ]
        if signs.abuse_by_pattern is not None:
            lines.append(
                "requests by pattern           "
                + ", ".join(f"{k} {v}" for k, v in signs.abuse_by_pattern.items())
            )
    lines += [f"warning: {w}" for w in signs.warnings]
    return "\n".join(lines)


def _times(value: float, why: str) -> str:
    """A ratio as '1.23x', or 'n/a' and why when it cannot be computed."""
    return f"{value:.2f}x" if np.isfinite(value) else f"n/a ({why})"


def _share(value: float, why: str) -> str:
    """A share as '12.3%', or 'n/a' and why when it cannot be computed."""
    return f"{value:.1%}" if np.isfinite(value) else f"n/a ({why})"


def plot_report(signs: VitalSigns, path: Path) -> Path:
    """Save the vital signs as a six-panel PNG chart at `path` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data.storage import atomic_path

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax = axes[0, 0]
    rates = signs.refund_rate_by_month
    ax.bar([str(p) for p in rates.index], rates.to_numpy() * 100, color="#4477aa")
    ax.axhspan(2.1, 4.2, color="#cccccc", alpha=0.4, label="field range", zorder=0)
    ax.set_title("Refund rate by month (%)")
    ax.tick_params(axis="x", rotation=60)
    ax.legend()

    ax = axes[0, 1]
    x = np.arange(len(signs.reason_mix))
    ax.bar(x - 0.2, signs.reason_mix.to_numpy() * 100, width=0.4, label="world")
    field_mix = [FIELD_REASON_MIX.get(str(r), 0.0) * 100 for r in signs.reason_mix.index]
    ax.bar(x + 0.2, field_mix, width=0.4, label="field")
    ax.set_xticks(x, [str(r) for r in signs.reason_mix.index], rotation=30)
    ax.set_title("Reason mix (%)")
    ax.legend()

    ax = axes[0, 2]
    cats = signs.abuse_by_category
    ax.barh([str(c) for c in cats.index], cats.to_numpy() * 100, color="#cc6677")
    ax.set_title("Abusive share of requests by category (%)")

    ax = axes[1, 0]
    if signs.abuse_by_pattern is not None:
        pats = signs.abuse_by_pattern.drop("honest", errors="ignore")
        ax.barh([str(p) for p in pats.index], pats.to_numpy(), color="#aa3377")
        ax.set_title("Abusive requests by pattern (oracle)")
    else:
        ax.text(0.5, 0.5, "no oracle: not a synthetic world", ha="center")
        ax.set_axis_off()

    ax = axes[1, 1]
    delays = signs.label_delay_days
    ax.barh([str(s) for s in delays.index], delays["50%"], color="#228833", label="median")
    ax.scatter(delays["90%"], np.arange(len(delays)), color="black", marker="|", s=200, label="p90")
    ax.set_title("Label delay by source (days)")
    ax.legend()

    ax = axes[1, 2]
    ax.set_axis_off()
    summary = [
        f"refund rate {signs.refund_rate:.2%}",
        f"labelled {signs.labelled_share:.1%} of requests",
        "early-claim abuse ratio " + _times(signs.early_claim_abuse_ratio, "no labels"),
        "high-value claim ratio " + _times(signs.high_value_claim_ratio, "no orders to compare"),
    ]
    if signs.oracle_auc is not None:
        summary += [
            f"truly abusive {signs.true_abusive_share:.1%} of requests",
            f"  and {signs.true_abusive_money_share:.1%} of money",
            f"abuse ever detected {signs.detected_share_of_abuse:.1%}",
            f"oracle ROC-AUC {signs.oracle_auc:.3f}",
        ]
    ax.text(0.0, 1.0, "\n".join(summary), va="top", family="monospace", fontsize=12)
    fig.suptitle("World vital signs")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path
