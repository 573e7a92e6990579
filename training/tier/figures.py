"""The two figures a tier training run logs: realised loss per tier, scores per group."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from policy.tiers import Tiers


def tier_loss_figure(table: pd.DataFrame) -> Figure:
    """Realised loss rate per tier, best to worst, with each tier's customer share."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    positions = np.arange(len(table))
    rates = table["loss_rate"].fillna(0.0).to_numpy() * 100
    ax.bar(positions, rates, color="#4477aa")
    for x, rate, share in zip(positions, rates, table["share"], strict=True):
        ax.annotate(
            f"{rate:.1f}%\n{share:.0%} of customers",
            (x, rate),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(positions, list(table["tier"]))
    ax.set_ylabel("customers with a refund loss in 90 days (%)")
    ax.set_title("Realised loss by credit tier, test months")
    ax.margins(y=0.25)
    fig.tight_layout()
    return fig


def score_distribution_figure(
    score: np.ndarray, groups: np.ndarray, order: Sequence[str], tiers: Tiers
) -> Figure:
    """Score distribution per group (latent type, or realised loss), with the tier bounds."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    known = ~np.isnan(score)
    present = [g for g in order if (known & (groups == g)).any()]
    for g in present:
        values = np.log10(np.clip(score[known & (groups == g)], 1e-4, 1.0))
        ax.hist(
            values,
            bins=60,
            range=(-4.0, 0.0),
            density=True,
            histtype="step",
            linewidth=1.5,
            label=g,
        )
    if present:
        ax.legend(fontsize=8)
    for tier in tiers.tiers[:-1]:
        bound = math.log10(tier.max_loss_probability)
        ax.axvline(bound, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            tier.name,
            (bound, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            va="top",
            ha="right",
        )
    ax.set_xlabel("predicted 90-day loss probability (log10); dotted: upper bound of each tier")
    ax.set_ylabel("density")
    ax.set_title("Scores by customer group, test months")
    fig.tight_layout()
    return fig
