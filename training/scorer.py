"""Score past refund requests with the registered champion models, for the policy simulator.

The result has the layout of `policy.scored`: each request's context, the abuse model's
calibrated score and its top contributions, the credit-tier model's loss probability, the label
known at the end of the data and, for a synthetic world, the truth. By default only requests
from the abuse model's deployment date on are replayed: the months it never saw in training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from data.schema import CATEGORIES, ORDER_STAGES, REASON_DETAILS, REASONS, REFUND_TYPES
from refund_risk.errors import ConfigurationError, NotFoundError
from refund_risk.model_contract.card import (
    ABUSE_MODEL,
    CHAMPION,
    TIER_MODEL,
    ScoringCard,
    card_cutoffs,
    client_for,
    download_scoring,
)
from refund_risk.model_contract.explain import ContributionTables
from refund_risk.settings import Settings
from training.data_source import TrainingInputs, load_training_inputs
from training.run_abuse import score_with_card

TOP_CONTRIBUTIONS = 3

_DECODE: dict[str, tuple[str, tuple[str, ...]]] = {
    "order_stage": ("request_order_stage", ORDER_STAGES),
    "category": ("order_category", CATEGORIES),
    "reason": ("request_reason", REASONS),
    "reason_detail": ("request_reason_detail", tuple(REASON_DETAILS)),
    "refund_type": ("request_type", REFUND_TYPES),
}


def _decode(codes: pd.Series, values: tuple[str, ...]) -> np.ndarray:
    """Integer codes back to the schema's names (the features store enums as codes)."""
    table = np.array(values, dtype=object)
    return table[codes.to_numpy(dtype=np.int64)]


def _matrix(rows: pd.DataFrame, card: ScoringCard) -> np.ndarray:
    return rows.loc[:, list(card.card["features"])].to_numpy(dtype=np.float64)


def top_contributions(
    tables: ContributionTables, X: np.ndarray, top: int = TOP_CONTRIBUTIONS
) -> list[list[dict[str, Any]]]:
    """Per row, the `top` features pushing the abuse score up most, with their values."""
    out: list[list[dict[str, Any]]] = []
    for x in X:
        contrib = tables.explain(x)
        best = np.argsort(contrib)[::-1][:top]
        out.append(
            [
                {
                    "feature": tables.names[j],
                    "value": float(x[j]),
                    "contribution": float(contrib[j]),
                }
                for j in best
                if contrib[j] > 0
            ]
        )
    return out


def snapshot_tier_scores(
    inputs: TrainingInputs, tier: ScoringCard, requests: pd.DataFrame
) -> np.ndarray:
    """Each request's customer's tier score from the latest monthly snapshot before it.

    Tiers summarise a customer's history and change slowly; they are computed on the monthly
    snapshots the tier model was trained on, not at the request's instant (when every
    requester has just ordered, which the model reads as risk). NaN: no snapshot yet, or no
    history at it; the policy then uses the default tier.
    """
    from features.batch import build_credit_snapshots, snapshot_dates

    if requests.empty:
        return np.zeros(0)
    # Only the months a replayed request can fall back on: from the one before the first.
    first = pd.Timestamp(requests["requested_at"].min())
    earliest = first.to_period("M").to_timestamp() - pd.DateOffset(months=1)
    dates = [d for d in snapshot_dates(inputs.tables) if d >= earliest]
    snapshots = pd.concat(list(build_credit_snapshots(inputs.tables, dates)), ignore_index=True)
    history = snapshots[tier.card["history_feature"]].to_numpy(dtype=float) > 0
    scores = score_with_card(tier.model_file, tier.card, _matrix(snapshots, tier))
    scored = pd.DataFrame(
        {
            "customer_id": snapshots["customer_id"].to_numpy(),
            "snapshot_at": snapshots["snapshot_at"].to_numpy(dtype="datetime64[us]"),
            "tier_score": np.where(history, scores, np.nan),
        }
    ).sort_values("snapshot_at", kind="stable")
    left = pd.DataFrame(
        {
            "position": np.arange(len(requests)),
            "customer_id": requests["customer_id"].to_numpy(),
            "requested_at": requests["requested_at"].to_numpy(dtype="datetime64[us]"),
        }
    ).sort_values("requested_at", kind="stable")
    joined = pd.merge_asof(
        left,
        scored,
        left_on="requested_at",
        right_on="snapshot_at",
        by="customer_id",
        direction="backward",
        allow_exact_matches=False,
    )
    return joined.sort_values("position")["tier_score"].to_numpy(dtype=float)


def tiers_by_cutoffs(scores: np.ndarray, cutoffs: dict[str, float]) -> np.ndarray:
    """Tier names by a tier model's cut-offs (best first; a score at a bound is in its tier, as
    `policy.tiers.assign_tier` has it); None where there is no score (the default tier)."""
    bounds = np.asarray(list(cutoffs.values()), dtype=np.float64)
    names = np.asarray(list(cutoffs), dtype=object)
    scores = np.asarray(scores, dtype=np.float64)
    out = np.full(len(scores), None, dtype=object)
    known = ~np.isnan(scores)
    index = np.minimum(np.searchsorted(bounds, scores[known], side="left"), len(bounds) - 1)
    out[known] = names[index]
    return out


def score_requests(
    inputs: TrainingInputs,
    abuse: ScoringCard,
    tier: ScoringCard | None,
    since: pd.Timestamp | None,
) -> pd.DataFrame:
    """The scored-requests table for the requests made at or after `since`."""
    rows = inputs.rows
    if since is not None:
        rows = rows[rows["requested_at"] >= since]
    rows = rows.reset_index(drop=True)
    X = _matrix(rows, abuse)
    out = pd.DataFrame(
        {
            "refund_id": rows["refund_id"].to_numpy(),
            "customer_id": rows["customer_id"].to_numpy(),
            "requested_at": rows["requested_at"].to_numpy(),
            "order_amount": rows["order_amount"].to_numpy(dtype=float),
            "amount_requested": rows["request_amount"].to_numpy(dtype=float),
            "photo_count": rows["request_photo_count"].to_numpy(dtype=np.int64),
            "days_since_delivery": rows["order_days_since_delivery"].to_numpy(dtype=float),
            "linked_abusive_accounts": rows[
                "linked_accounts_confirmed_abusive_refunds_by_any"
            ].to_numpy(dtype=np.int64),
            "customer_confirmed_abusive_refunds": rows["customer_confirmed_abusive_refunds"]
            .fillna(0)
            .to_numpy(dtype=np.int64),
        }
    )
    for column, (feature, values) in _DECODE.items():
        out[column] = _decode(rows[feature], values)
    out["abuse_score"] = score_with_card(abuse.model_file, abuse.card, X)
    explainer = ContributionTables.from_json(abuse.card["explainer"])
    out["contributions"] = pd.Series(top_contributions(explainer, X), dtype=object)
    if tier is not None:
        out["tier_loss_probability"] = snapshot_tier_scores(inputs, tier, out)
        cutoffs = card_cutoffs(tier.card, f"{TIER_MODEL} v{tier.version}")
        if cutoffs is not None:  # the tiers the service gives: by the model's own cut-offs
            out["tier"] = tiers_by_cutoffs(out["tier_loss_probability"].to_numpy(), cutoffs)
    labels = rows["label_is_abusive_final"].astype("boolean").fillna(False)
    out["is_abusive"] = labels.to_numpy(dtype=bool)
    if inputs.oracle_refunds is not None:
        truth = inputs.oracle_refunds.set_index("refund_id")["is_abusive_true"]
        out["is_abusive_true"] = truth.reindex(out["refund_id"]).to_numpy(dtype=bool)
    return out


def score_history(settings: Settings, all_requests: bool = False) -> pd.DataFrame:
    """Score the world's past requests with the champion models (test months by default)."""
    from features.definitions import FEATURE_VERSION

    client = client_for(settings)
    try:
        abuse = download_scoring(client, ABUSE_MODEL, CHAMPION)
    except NotFoundError as exc:
        raise NotFoundError(f"{exc}, or pass --scores FILE.parquet") from None
    if abuse.feature_version != FEATURE_VERSION:
        raise ConfigurationError(
            f"the champion {ABUSE_MODEL} v{abuse.version} was trained on features "
            f"{abuse.feature_version}, these are {FEATURE_VERSION}: retrain it"
        )
    try:
        tier: ScoringCard | None = download_scoring(client, TIER_MODEL, CHAMPION)
    except Exception:  # no tier model yet: every customer gets the default tier
        tier = None
    inputs = load_training_inputs(settings)
    since = None if all_requests else pd.Timestamp(abuse.card["split"]["deploy_at"])
    return score_requests(inputs, abuse, tier, since)
