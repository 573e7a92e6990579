"""Every feature, defined once as data: what it describes, where it comes from, how it is computed.

Both builders interpret these definitions: the batch builder (`features.batch`) over whole tables
at once, the online builder (`features.online`) for one request from the event store. Neither has
a hand-written copy of any feature; each has one evaluator per aggregation kind.

Time rule, everywhere: a feature computed "as of" time `t` (the request's `requested_at`, or a
credit snapshot's date) sees only events strictly before `t`. An event at exactly `t` is not yet
visible. A window of `d` days covers `[t - d days, t)`.

`FEATURE_VERSION` is a hash of these definitions (and of the builders' semantics version). A
trained model records it, so the service can refuse a model built on different features.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from enum import StrEnum

from data.schema import (
    CATEGORIES,
    DELIVERY_EVIDENCE,
    LINK_KINDS,
    NON_RETURNABLE_CATEGORIES,
    ORDER_STAGES,
    PAYMENT_METHODS,
    REASON_DETAILS,
    REASONS,
    REFUND_TYPES,
)

SEMANTICS_VERSION = "1"
"""Bumped when the builders' interpretation of a definition changes; part of the version hash."""

DAY_US = 86_400 * 1_000_000
"""Microseconds per day: all times are handled as integer microseconds since the epoch."""

UNKNOWN_CODE = -1
"""Code of a categorical value that is not in the schema's list, or not known at `t`."""


class Entity(StrEnum):
    """What a feature describes."""

    REQUEST = "request"
    ORDER = "order"
    CUSTOMER = "customer"
    LINKED_ACCOUNTS = "linked_accounts"


class Aggregation(StrEnum):
    """How a feature's value is computed; each builder has one evaluator per kind."""

    # Properties of the subject row (the request, its order, the customer) as of `t`.
    FIELD = "field"
    """The numeric `column` of the subject row."""
    CODE = "code"
    """The enum `column` of the subject row as its index in `values`; -1 if unknown, or if
    `visible_after` names a time column that is empty or not before `t`."""
    MATCHES = "matches"
    """1 if the subject row passes every filter, else 0."""
    AGE_DAYS = "age_days"
    """Days from the subject's own creation time `column` to `t`."""
    HAPPENED = "happened"
    """1 if the subject's time `column` is set and before `t`, else 0."""
    DAYS_SINCE_EVENT = "days_since_event"
    """Days from the subject's time `column` to `t`; `empty` if it is empty or not before `t`."""
    RATIO = "ratio"
    """Feature `numerator` divided by feature `denominator`; `empty` when the denominator is 0."""

    # History of an entity: the `source` events in the window that pass the filters.
    COUNT = "count"
    """Number of events."""
    SUM = "sum"
    """Sum of `column` over the events."""
    MEAN = "mean"
    """Mean of `column` over the events where it is set; `empty` if there are none."""
    DISTINCT = "distinct"
    """Number of different `values` of `column` seen among the events."""
    DAYS_SINCE_LAST = "days_since_last"
    """Days from the latest event to `t`; `empty` if there is none."""

    # Linked accounts: other customers sharing a fingerprint with this one, both seen before `t`.
    LINKED_ACCOUNTS = "linked_accounts"
    """Number of other accounts sharing a fingerprint of `link_kind` (any kind if None)."""
    LINKED_SUM = "linked_sum"
    """Sum of `column` over all `source` events before `t` of those linked accounts."""


SUBJECT_AGGREGATIONS = frozenset(
    {
        Aggregation.FIELD,
        Aggregation.CODE,
        Aggregation.MATCHES,
        Aggregation.AGE_DAYS,
        Aggregation.HAPPENED,
        Aggregation.DAYS_SINCE_EVENT,
    }
)
HISTORY_AGGREGATIONS = frozenset(
    {
        Aggregation.COUNT,
        Aggregation.SUM,
        Aggregation.MEAN,
        Aggregation.DISTINCT,
        Aggregation.DAYS_SINCE_LAST,
    }
)
LINK_AGGREGATIONS = frozenset({Aggregation.LINKED_ACCOUNTS, Aggregation.LINKED_SUM})

SUBJECT_TABLES: dict[Entity, str] = {
    Entity.REQUEST: "refund_requests",
    Entity.ORDER: "orders",
    Entity.CUSTOMER: "customers",
}
"""The raw table holding the subject row of each entity."""


@dataclass(frozen=True)
class Filter:
    """Keep a row only if `column` is one of `values`, or, with `present`, if it is set."""

    column: str
    values: tuple[str, ...] = ()
    present: bool = False

    def describe(self) -> str:
        """The filter in words."""
        if self.present:
            return f"{self.column} is known"
        return f"{self.column} in {{{', '.join(self.values)}}}"


@dataclass(frozen=True)
class EventSource:
    """A stream of timestamped events that history features aggregate.

    `entity_columns` says which column keys the events to each entity they belong to.
    `columns` are the numeric columns that can be summed; `integer_columns` those of them that
    hold whole numbers (their sums stay integers).
    """

    name: str
    table: str
    time_column: str
    id_column: str
    entity_columns: tuple[tuple[Entity, str], ...]
    columns: tuple[str, ...]
    integer_columns: tuple[str, ...]
    description: str

    def entity_column(self, entity: Entity) -> str:
        """The column keying these events to `entity`."""
        for ent, column in self.entity_columns:
            if ent == entity:
                return column
        raise KeyError(f"source {self.name!r} has no events keyed by {entity}")


SOURCES: dict[str, EventSource] = {
    s.name: s
    for s in (
        EventSource(
            name="orders",
            table="orders",
            time_column="ordered_at",
            id_column="order_id",
            entity_columns=((Entity.CUSTOMER, "customer_id"),),
            columns=("amount", "item_count"),
            integer_columns=("item_count",),
            description="Orders, at the moment they were placed.",
        ),
        EventSource(
            name="refund_requests",
            table="refund_requests",
            time_column="requested_at",
            id_column="refund_id",
            entity_columns=((Entity.CUSTOMER, "customer_id"), (Entity.ORDER, "order_id")),
            columns=("amount_requested", "days_from_delivery_to_claim"),
            integer_columns=(),
            description=(
                "Refund requests, at the moment they were made. `days_from_delivery_to_claim` "
                "is the time from the order's delivery to the request, set only when the order "
                "was delivered before the request."
            ),
        ),
        EventSource(
            name="outcome_changes",
            table="outcomes",
            time_column="known_at",
            id_column="outcome_id",
            entity_columns=((Entity.CUSTOMER, "customer_id"),),
            columns=("abusive_change", "abusive_amount_change", "resolved_change"),
            integer_columns=("abusive_change", "resolved_change"),
            description=(
                "Outcomes, at the moment they became known, as changes to what is known about "
                "the refund: `abusive_change` is +1 when the refund's latest known outcome turns "
                "abusive, -1 when it stops being abusive, 0 otherwise (outcomes of one refund "
                "taken in order of known_at, then outcome_id); `abusive_amount_change` is that "
                "times the amount requested; `resolved_change` is 1 for a refund's first outcome. "
                "Summed up to `t` they give what was known at `t`."
            ),
        ),
    )
}


@dataclass(frozen=True)
class Feature:
    """One feature: a name, the entity it describes, and how to compute it as of time `t`.

    `empty` is the value when there is nothing to compute from (no events, a zero denominator,
    a time not yet reached): a defined value, never an error. `integer` features are whole
    numbers; `categorical` ones (aggregation CODE) are integer codes, -1 for unknown.
    """

    name: str
    entity: Entity
    aggregation: Aggregation
    source: str
    description: str
    column: str | None = None
    window_days: int | None = None
    filters: tuple[Filter, ...] = ()
    values: tuple[str, ...] = ()
    visible_after: str | None = None
    link_kind: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    empty: float = 0.0
    integer: bool = False

    @property
    def categorical(self) -> bool:
        """Whether the value is a category code (for LightGBM's `categorical_feature`)."""
        return self.aggregation == Aggregation.CODE

    @property
    def window_start_us(self) -> int | None:
        """How far back the window reaches, in microseconds; None for all history."""
        return None if self.window_days is None else self.window_days * DAY_US


@dataclass(frozen=True)
class SubStream:
    """The events of one source, for one entity, that pass some filters.

    History features are evaluated on sub-streams; several features share one (counts and sums
    over the same events), so each builder prepares each sub-stream once.
    """

    entity: Entity
    source: str
    filters: tuple[Filter, ...]


def substreams_of(feature: Feature) -> tuple[SubStream, ...]:
    """The sub-streams a history or linkage feature reads, in a fixed order."""
    if feature.aggregation in SUBJECT_AGGREGATIONS or feature.aggregation == Aggregation.RATIO:
        return ()
    if feature.aggregation == Aggregation.LINKED_ACCOUNTS:
        return ()
    entity = Entity.CUSTOMER if feature.entity == Entity.LINKED_ACCOUNTS else feature.entity
    if feature.aggregation == Aggregation.DISTINCT:
        assert feature.column is not None
        # One sub-stream per value: the value was used if its sub-stream has an event.
        return tuple(
            SubStream(entity, feature.source, (*feature.filters, Filter(feature.column, (v,))))
            for v in feature.values
        )
    if feature.aggregation == Aggregation.MEAN:
        assert feature.column is not None
        present = Filter(feature.column, present=True)
        return (SubStream(entity, feature.source, (*feature.filters, present)),)
    return (SubStream(entity, feature.source, feature.filters),)


def substreams(features: tuple[Feature, ...]) -> tuple[SubStream, ...]:
    """All sub-streams the features read, without repeats, in first-use order."""
    return tuple(dict.fromkeys(s for f in features for s in substreams_of(f)))


# --- the definitions ------------------------------------------------------------------------

WINDOWS: tuple[int | None, ...] = (7, 30, 90, 365, None)
"""History windows in days; None is all history before the request."""


def _window_suffix(days: int | None) -> str:
    return "all_time" if days is None else f"{days}d"


def _window_words(days: int | None) -> str:
    return "ever before this request" if days is None else f"in the {days} days before this request"


def _request_and_order() -> list[Feature]:
    req, order = Entity.REQUEST, Entity.ORDER
    rr, orders = "refund_requests", "orders"
    return [
        Feature(
            "request_type",
            req,
            Aggregation.CODE,
            rr,
            "Refund only (0) or return and refund (1).",
            column="refund_type",
            values=REFUND_TYPES,
            integer=True,
        ),
        Feature(
            "request_reason",
            req,
            Aggregation.CODE,
            rr,
            f"Reason the customer chose, as a code: {', '.join(REASONS)} (0 to "
            f"{len(REASONS) - 1}).",
            column="reason",
            values=REASONS,
            integer=True,
        ),
        Feature(
            "request_reason_detail",
            req,
            Aggregation.CODE,
            rr,
            f"Detailed reason, as a code: {', '.join(REASON_DETAILS)}.",
            column="reason_detail",
            values=tuple(REASON_DETAILS),
            integer=True,
        ),
        Feature(
            "request_order_stage",
            req,
            Aggregation.CODE,
            rr,
            f"Where the order was when the customer asked: {', '.join(ORDER_STAGES)}.",
            column="order_stage",
            values=ORDER_STAGES,
            integer=True,
        ),
        Feature(
            "request_amount",
            req,
            Aggregation.FIELD,
            rr,
            "Money asked back.",
            column="amount_requested",
        ),
        Feature(
            "request_photo_count",
            req,
            Aggregation.FIELD,
            rr,
            "Photos attached as evidence.",
            column="photo_count",
            integer=True,
        ),
        Feature(
            "order_amount",
            order,
            Aggregation.FIELD,
            orders,
            "Value of the order the request is about.",
            column="amount",
        ),
        Feature(
            "request_share_of_order_amount",
            req,
            Aggregation.RATIO,
            rr,
            "Money asked back as a share of the order's value (1 = everything).",
            numerator="request_amount",
            denominator="order_amount",
        ),
        Feature(
            "order_item_count",
            order,
            Aggregation.FIELD,
            orders,
            "Items in the order.",
            column="item_count",
            integer=True,
        ),
        Feature(
            "order_category",
            order,
            Aggregation.CODE,
            orders,
            f"Goods category, as a code: {', '.join(CATEGORIES)}.",
            column="category",
            values=CATEGORIES,
            integer=True,
        ),
        Feature(
            "order_is_non_returnable",
            order,
            Aggregation.MATCHES,
            orders,
            "1 if the goods are not shipped back (perishable, digital or made to order).",
            filters=(Filter("category", tuple(sorted(NON_RETURNABLE_CATEGORIES))),),
            integer=True,
        ),
        Feature(
            "order_payment_method",
            order,
            Aggregation.CODE,
            orders,
            f"How the order was paid, as a code: {', '.join(PAYMENT_METHODS)}.",
            column="payment_method",
            values=PAYMENT_METHODS,
            integer=True,
        ),
        Feature(
            "order_age_days",
            order,
            Aggregation.AGE_DAYS,
            orders,
            "Days from placing the order to this request.",
            column="ordered_at",
        ),
        Feature(
            "order_shipped_before_request",
            order,
            Aggregation.HAPPENED,
            orders,
            "1 if the order had left the warehouse before this request.",
            column="shipped_at",
            integer=True,
        ),
        Feature(
            "order_delivered_before_request",
            order,
            Aggregation.HAPPENED,
            orders,
            "1 if the carrier had marked the order delivered before this request.",
            column="delivered_at",
            integer=True,
        ),
        Feature(
            "order_days_since_delivery",
            order,
            Aggregation.DAYS_SINCE_EVENT,
            orders,
            "Days from delivery to this request; missing if not delivered before it.",
            column="delivered_at",
            empty=float("nan"),
        ),
        Feature(
            "order_delivery_evidence",
            order,
            Aggregation.CODE,
            orders,
            f"Carrier's proof of delivery, as a code: {', '.join(DELIVERY_EVIDENCE)}; "
            "-1 if the order was not delivered before this request.",
            column="delivery_evidence",
            values=DELIVERY_EVIDENCE,
            visible_after="delivered_at",
            integer=True,
        ),
        Feature(
            "request_refund_only_after_delivery",
            req,
            Aggregation.MATCHES,
            rr,
            "1 if the customer keeps goods the carrier delivered and asks for the money alone.",
            filters=(
                Filter("refund_type", ("refund_only",)),
                Filter("order_stage", ("delivered",)),
            ),
            integer=True,
        ),
        Feature(
            "request_not_received_after_delivery",
            req,
            Aggregation.MATCHES,
            rr,
            "1 if the customer says the parcel never arrived after the carrier delivered it.",
            filters=(
                Filter("reason_detail", ("not_received",)),
                Filter("order_stage", ("delivered",)),
            ),
            integer=True,
        ),
        Feature(
            "request_claims_a_fault",
            req,
            Aggregation.MATCHES,
            rr,
            "1 if the customer says the goods were damaged, not as described or the wrong size "
            "(claims that photos can back).",
            filters=(Filter("reason_detail", ("damaged", "not_as_described", "wrong_size")),),
            integer=True,
        ),
        Feature(
            "order_earlier_refund_requests",
            order,
            Aggregation.COUNT,
            "refund_requests",
            "Refund requests on this same order made before this one.",
            integer=True,
        ),
    ]


def _customer_history() -> list[Feature]:
    cust = Entity.CUSTOMER
    feats = [
        Feature(
            "customer_tenure_days",
            cust,
            Aggregation.AGE_DAYS,
            "customers",
            "Days since the account was created.",
            column="signup_at",
        ),
        Feature(
            "customer_days_since_last_order",
            cust,
            Aggregation.DAYS_SINCE_LAST,
            "orders",
            "Days since the customer's latest earlier order; missing if none.",
            empty=float("nan"),
        ),
        Feature(
            "customer_days_since_last_refund_request",
            cust,
            Aggregation.DAYS_SINCE_LAST,
            "refund_requests",
            "Days since the customer's latest earlier refund request; missing if none.",
            empty=float("nan"),
        ),
    ]
    refund_only = Filter("refund_type", ("refund_only",))
    not_received = Filter("reason_detail", ("not_received",))
    for days in WINDOWS:
        sfx, words = _window_suffix(days), _window_words(days)
        orders_n, spend = f"customer_orders_{sfx}", f"customer_spend_{sfx}"
        refunds_n, refunds_amt = f"customer_refund_requests_{sfx}", f"customer_refund_amount_{sfx}"
        feats += [
            Feature(
                orders_n,
                cust,
                Aggregation.COUNT,
                "orders",
                f"Orders the customer placed {words}.",
                window_days=days,
                integer=True,
            ),
            Feature(
                spend,
                cust,
                Aggregation.SUM,
                "orders",
                f"Money the customer spent on orders {words}.",
                column="amount",
                window_days=days,
            ),
            Feature(
                refunds_n,
                cust,
                Aggregation.COUNT,
                "refund_requests",
                f"Refund requests the customer made {words}.",
                window_days=days,
                integer=True,
            ),
            Feature(
                refunds_amt,
                cust,
                Aggregation.SUM,
                "refund_requests",
                f"Money the customer asked back {words}.",
                column="amount_requested",
                window_days=days,
            ),
            Feature(
                f"customer_refund_rate_by_count_{sfx}",
                cust,
                Aggregation.RATIO,
                "refund_requests",
                f"Refund requests per order, both {words}; 0 if no orders.",
                numerator=refunds_n,
                denominator=orders_n,
                window_days=days,
            ),
            Feature(
                f"customer_refund_rate_by_amount_{sfx}",
                cust,
                Aggregation.RATIO,
                "refund_requests",
                f"Money asked back per money spent, both {words}; 0 if nothing spent.",
                numerator=refunds_amt,
                denominator=spend,
                window_days=days,
            ),
            Feature(
                f"customer_refund_only_requests_{sfx}",
                cust,
                Aggregation.COUNT,
                "refund_requests",
                f"Refund requests without sending the goods back, {words}.",
                filters=(refund_only,),
                window_days=days,
                integer=True,
            ),
            Feature(
                f"customer_not_received_claims_{sfx}",
                cust,
                Aggregation.COUNT,
                "refund_requests",
                f"Claims that a parcel never arrived, {words}.",
                filters=(not_received,),
                window_days=days,
                integer=True,
            ),
            Feature(
                f"customer_refund_reasons_used_{sfx}",
                cust,
                Aggregation.DISTINCT,
                "refund_requests",
                f"How many different reasons the customer gave for refunds {words}.",
                column="reason",
                values=REASONS,
                window_days=days,
                integer=True,
            ),
            Feature(
                f"customer_mean_days_from_delivery_to_claim_{sfx}",
                cust,
                Aggregation.MEAN,
                "refund_requests",
                f"Average days from delivery to refund request, over requests {words} on "
                "delivered orders; missing if none.",
                column="days_from_delivery_to_claim",
                window_days=days,
                empty=float("nan"),
            ),
        ]
    feats.append(
        Feature(
            "customer_not_received_claims_on_delivered_all_time",
            cust,
            Aggregation.COUNT,
            "refund_requests",
            "Claims that a parcel never arrived although the carrier had marked it delivered "
            "before the claim, ever before this request.",
            filters=(not_received, Filter("days_from_delivery_to_claim", present=True)),
            integer=True,
        )
    )
    abusive, resolved = "customer_confirmed_abusive_refunds", "customer_refunds_with_known_outcome"
    feats += [
        Feature(
            abusive,
            cust,
            Aggregation.SUM,
            "outcome_changes",
            "The customer's refunds confirmed abusive by what was known before this request.",
            column="abusive_change",
            integer=True,
        ),
        Feature(
            "customer_confirmed_abusive_amount",
            cust,
            Aggregation.SUM,
            "outcome_changes",
            "Money asked back on the customer's refunds confirmed abusive before this request.",
            column="abusive_amount_change",
        ),
        Feature(
            resolved,
            cust,
            Aggregation.SUM,
            "outcome_changes",
            "The customer's refunds with any outcome (abusive or not) known before this request.",
            column="resolved_change",
            integer=True,
        ),
        Feature(
            "customer_confirmed_abuse_rate",
            cust,
            Aggregation.RATIO,
            "outcome_changes",
            "Share of the customer's refunds with a known outcome that were confirmed "
            "abusive; 0 if none has an outcome yet.",
            numerator=abusive,
            denominator=resolved,
        ),
    ]
    feats += _customer_profile()
    return feats


PROFILE_CATEGORIES: tuple[str, ...] = ("apparel", "electronics")
"""Categories whose share of a customer's orders is a feature of its own: serial returners buy
clothes to wear once, swappers and rings buy electronics to send back something else."""

DISPUTABLE_PAYMENT_METHODS: tuple[str, ...] = ("bnpl", "gift_card")
"""Payment methods that are easy to dispute or hard to trace back to a person."""


def _customer_profile() -> list[Feature]:
    """What the customer buys and how, and how its refund claims look, over all its history.

    Abuse is a habit of a few customers, so a request's risk depends on what kind of customer
    asks: these describe the habit from the customer's own earlier orders and claims.
    """
    cust = Entity.CUSTOMER
    orders_n = "customer_orders_all_time"
    feats: list[Feature] = []
    for category in PROFILE_CATEGORIES:
        count = f"customer_orders_{category}_all_time"
        feats += [
            Feature(
                count,
                cust,
                Aggregation.COUNT,
                "orders",
                f"Orders of {category} the customer placed ever before this request.",
                filters=(Filter("category", (category,)),),
                integer=True,
            ),
            Feature(
                f"customer_share_of_orders_{category}_all_time",
                cust,
                Aggregation.RATIO,
                "orders",
                f"Share of the customer's orders ever before this request that were {category}; "
                "0 if no orders.",
                numerator=count,
                denominator=orders_n,
            ),
        ]
    disputable = "customer_orders_paid_disputably_all_time"
    feats += [
        Feature(
            disputable,
            cust,
            Aggregation.COUNT,
            "orders",
            f"Orders paid by {' or '.join(DISPUTABLE_PAYMENT_METHODS)} ever before this request.",
            filters=(Filter("payment_method", DISPUTABLE_PAYMENT_METHODS),),
            integer=True,
        ),
        Feature(
            "customer_share_of_orders_paid_disputably_all_time",
            cust,
            Aggregation.RATIO,
            "orders",
            f"Share of the customer's orders paid by {' or '.join(DISPUTABLE_PAYMENT_METHODS)}, "
            "ever before this request; 0 if no orders.",
            numerator=disputable,
            denominator=orders_n,
        ),
        Feature(
            "customer_mean_order_amount_all_time",
            cust,
            Aggregation.RATIO,
            "orders",
            "Money spent per order, over the customer's orders ever before this request; "
            "0 if no orders.",
            numerator="customer_spend_all_time",
            denominator=orders_n,
        ),
        Feature(
            "customer_damage_claims_all_time",
            cust,
            Aggregation.COUNT,
            "refund_requests",
            "Claims that goods arrived damaged or not as described, ever before this request.",
            filters=(Filter("reason_detail", ("damaged", "not_as_described")),),
            integer=True,
        ),
        Feature(
            "customer_claims_after_delivery_all_time",
            cust,
            Aggregation.COUNT,
            "refund_requests",
            "Refund requests on orders the carrier had delivered before the request, ever "
            "before this request.",
            filters=(Filter("days_from_delivery_to_claim", present=True),),
            integer=True,
        ),
    ]
    return feats


_LINK_WORDS = {
    "device": "devices",
    "address": "delivery addresses",
    "payment": "payment instruments",
}


_LINK_FINGERPRINT: dict[str | None, str] = {
    "device": "device",
    "address": "address",
    "payment": "payment instrument",
    None: "device, address or payment instrument",
}


def _linkage() -> list[Feature]:
    linked = Entity.LINKED_ACCOUNTS
    feats: list[Feature] = []
    for kind in (*LINK_KINDS, None):
        sfx = "any" if kind is None else kind
        what = (
            "a device, address or payment instrument"
            if kind is None
            else (f"one of its {_LINK_WORDS[kind]}")
        )
        # Missing, not 0, when the customer has no fingerprint of this kind known yet (a shop
        # that records no devices, say): "shares with nobody" and "unknown" differ.
        unknown = f" Missing if no {_LINK_FINGERPRINT[kind]} of the customer is known yet."
        feats += [
            Feature(
                f"linked_accounts_by_{sfx}",
                linked,
                Aggregation.LINKED_ACCOUNTS,
                "identity_links",
                f"Other accounts sharing {what} with this customer, as seen before this request."
                + unknown,
                link_kind=kind,
                empty=math.nan,
            ),
            Feature(
                f"linked_accounts_confirmed_abusive_refunds_by_{sfx}",
                linked,
                Aggregation.LINKED_SUM,
                "outcome_changes",
                f"Refunds confirmed abusive, by what was known before this request, of the "
                f"other accounts sharing {what} with this customer." + unknown,
                column="abusive_change",
                link_kind=kind,
                empty=math.nan,
            ),
        ]
    return feats


FEATURES: tuple[Feature, ...] = (*_request_and_order(), *_customer_history(), *_linkage())
"""Every feature of a refund request's row, in column order."""

CUSTOMER_FEATURES: tuple[Feature, ...] = tuple(
    f for f in FEATURES if f.entity in (Entity.CUSTOMER, Entity.LINKED_ACCOUNTS)
)
"""The features describing a customer alone: the columns of a credit-tier snapshot row."""

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.categorical)

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


def check_definitions(features: tuple[Feature, ...]) -> None:
    """Raise ValueError if the definitions are inconsistent; both builders rely on these rules."""
    seen: set[str] = set()
    for f in features:
        if f.name in seen:
            raise ValueError(f"feature {f.name!r} is defined twice")
        agg = f.aggregation
        if agg == Aggregation.RATIO:
            for ref in (f.numerator, f.denominator):
                if ref not in seen:
                    raise ValueError(f"{f.name}: ratio input {ref!r} must be defined before it")
        elif agg in SUBJECT_AGGREGATIONS:
            if f.entity not in SUBJECT_TABLES or SUBJECT_TABLES[f.entity] != f.source:
                raise ValueError(f"{f.name}: subject features read their entity's own table")
            if agg != Aggregation.MATCHES and f.column is None:
                raise ValueError(f"{f.name}: needs a column")
        elif agg in HISTORY_AGGREGATIONS or agg == Aggregation.LINKED_SUM:
            source = SOURCES.get(f.source)
            if source is None:
                raise ValueError(f"{f.name}: unknown event source {f.source!r}")
            entity = Entity.CUSTOMER if f.entity == Entity.LINKED_ACCOUNTS else f.entity
            source.entity_column(entity)
            needs_numeric = agg in (Aggregation.SUM, Aggregation.MEAN, Aggregation.LINKED_SUM)
            if needs_numeric and f.column not in source.columns:
                raise ValueError(f"{f.name}: {f.column!r} is not a numeric column of {f.source}")
            if agg == Aggregation.LINKED_SUM and f.window_days is not None:
                raise ValueError(f"{f.name}: linked sums cover all history")
            if agg == Aggregation.LINKED_SUM and f.column not in source.integer_columns:
                # Whole numbers add up the same in any order, so the builders, which add the
                # linked accounts' events in different orders, agree exactly.
                raise ValueError(f"{f.name}: linked sums need a whole-number column")
        if f.link_kind is not None and f.link_kind not in LINK_KINDS:
            raise ValueError(f"{f.name}: unknown link kind {f.link_kind!r}")
        if f.entity == Entity.LINKED_ACCOUNTS and agg not in LINK_AGGREGATIONS:
            raise ValueError(f"{f.name}: linked-account features use a linked aggregation")
        seen.add(f.name)


def definitions_payload(features: tuple[Feature, ...] = FEATURES) -> dict[str, object]:
    """The definitions as plain JSON-ready data: what the version hash is computed over."""
    return {
        "semantics_version": SEMANTICS_VERSION,
        "sources": [asdict(s) for s in SOURCES.values()],
        "features": [asdict(f) for f in features],
    }


def definitions_hash(features: tuple[Feature, ...] = FEATURES) -> str:
    """A stable hash of the definitions' content (16 hex digits)."""
    text = json.dumps(definitions_payload(features), sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


check_definitions(FEATURES)
FEATURE_VERSION: str = definitions_hash(FEATURES)
"""The version of the feature definitions a model must have been trained with."""
