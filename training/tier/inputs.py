"""The tier model's inputs: which customer features it reads, and the directions it keeps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from features.definitions import FEATURES, Entity, Feature

HISTORY_FEATURE = "customer_orders_all_time"
"""A customer with no order before the snapshot is new: no score, the default tier."""

TIER_ENTITIES: frozenset[Entity] = frozenset({Entity.CUSTOMER, Entity.LINKED_ACCOUNTS})
"""Entities whose features describe a customer alone; request and order features do not exist
at a snapshot (there is no request), so they are never tier-model inputs."""


NOT_TIER_INPUTS: dict[str, str] = {
    "customer_days_since_last_refund_request": (
        "missing for a customer who never asked for a refund, and a monotone constraint orders "
        "only the values, not 'never' against them: a first claim moved it from missing to a "
        "value the trees read as safer, and lifted the customer's tier. How recently the "
        "customer claimed is carried by the windowed refund counts, which are constrained"
    ),
    **{
        f"customer_mean_days_from_delivery_to_claim_{window}": (
            "one more claim moves a mean either way (and from missing to a value), so it has "
            "no direction a tier could honestly keep: evidence would buy trust"
        )
        for window in ("7d", "30d", "90d", "365d", "all_time")
    },
    **{
        name: (
            "a description of what the customer buys and how it claims, read by the abuse "
            "model: a share or a mean moves either way with one more order, and the claim "
            "counts repeat the windowed refund counts the tier already reads under its "
            "constraints; the tiers were validated without them"
        )
        for name in (
            "customer_orders_apparel_all_time",
            "customer_share_of_orders_apparel_all_time",
            "customer_orders_electronics_all_time",
            "customer_share_of_orders_electronics_all_time",
            "customer_orders_paid_disputably_all_time",
            "customer_share_of_orders_paid_disputably_all_time",
            "customer_mean_order_amount_all_time",
            "customer_damage_claims_all_time",
            "customer_claims_after_delivery_all_time",
        )
    },
}
"""Customer features the tier model does not read, each with the reason."""


def _tier_input(feature: Feature) -> bool:
    return feature.entity in TIER_ENTITIES and feature.name not in NOT_TIER_INPUTS


def tier_feature_names(features: Iterable[Feature] = FEATURES) -> tuple[str, ...]:
    """The tier model's inputs: the customer and linked-account features, in definition order,
    but for those in `NOT_TIER_INPUTS`."""
    return tuple(f.name for f in features if _tier_input(f))


def tier_categorical_features(features: Iterable[Feature] = FEATURES) -> tuple[str, ...]:
    """Which tier inputs are category codes (given to LightGBM as integer codes)."""
    return tuple(f.name for f in features if _tier_input(f) and f.categorical)


# Directions the model may not contradict, with the reason; every other feature is learnt
# freely. Behavioural counts (orders, refund requests, refund-only claims) are left free on
# purpose: an honest customer who shops more also claims more, so their direction is a finding
# of the data, not a rule of the business.
MONOTONE: dict[str, tuple[int, str]] = {
    "customer_confirmed_abusive_refunds": (
        +1,
        "another refund confirmed abusive never makes a customer more trustworthy",
    ),
    "customer_confirmed_abusive_amount": (
        +1,
        "more money in confirmed abusive refunds never makes a customer more trustworthy",
    ),
    "customer_confirmed_abuse_rate": (
        +1,
        "a larger share of refunds confirmed abusive never makes a customer more trustworthy",
    ),
    "linked_accounts_confirmed_abusive_refunds_by_device": (
        +1,
        "confirmed abuse by accounts on the same device never vouches for this one",
    ),
    "linked_accounts_confirmed_abusive_refunds_by_address": (
        +1,
        "confirmed abuse by accounts at the same address never vouches for this one",
    ),
    "linked_accounts_confirmed_abusive_refunds_by_payment": (
        +1,
        "confirmed abuse by accounts paying with the same card never vouches for this one",
    ),
    "linked_accounts_confirmed_abusive_refunds_by_any": (
        +1,
        "confirmed abuse by any linked account never vouches for this one",
    ),
    # A new refund request arriving as events (a "not received" claim, one later confirmed
    # abusive) moves these; whatever the habits of honest heavy shoppers, one more claim by
    # the same customer is never evidence that they deserve more trust.
    **{
        f"customer_{what}_{window}": (+1, f"{words} never makes a customer more trustworthy")
        for what, words in (
            ("refund_requests", "another refund request"),
            ("refund_amount", "more money asked back"),
            ("refund_rate_by_count", "more refund requests per order"),
            ("refund_rate_by_amount", "more money asked back per money spent"),
            ("refund_only_requests", "another refund without sending the goods back"),
            ("not_received_claims", "another claim that a parcel never arrived"),
            ("refund_reasons_used", "one more reason given for refunds"),
        )
        for window in ("7d", "30d", "90d", "365d", "all_time")
    },
    "customer_not_received_claims_on_delivered_all_time": (
        +1,
        "another 'not received' claim on a parcel the carrier delivered never makes a customer "
        "more trustworthy",
    ),
    "customer_refunds_with_known_outcome": (
        +1,
        "an outcome found on an earlier refund never makes a customer more trustworthy: the "
        "share found abusive is constrained on its own",
    ),
    **{
        f"linked_accounts_by_{kind}": (
            +1,
            "another account sharing a fingerprint never makes a customer more trustworthy",
        )
        for kind in ("device", "address", "payment", "any")
    },
    "customer_tenure_days": (
        -1,
        "with everything else equal, a longer clean history never makes a customer riskier",
    ),
}


def monotone_constraints(names: Sequence[str]) -> list[int]:
    """LightGBM's `monotone_constraints` for the features `names`, in their order."""
    return [MONOTONE[n][0] if n in MONOTONE else 0 for n in names]
