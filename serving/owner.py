"""The shop owner's figures: refund rate, money, reasons and categories, and time to a decision.

Refund rate here is refund requests over orders placed in the same period, each counted by its
own time (a request in March for a February order counts in March), the way shops report it.
Orders, requests and reasons come from the event store, so a shop sees its whole imported
history, not only what the service decided; the time to a decision comes from the decision log
and the review queue.

The shop's period ends at its latest refund request on record, not at the wall clock, so an
imported history (or the generated world) shows its own last weeks. Every read is an aggregate
over days, so the cost grows with the number of days and categories, not with orders.

Products (orders that carry a product id) get the same figures per product over the period, and
a test of whether a product's refund rate stands out against the rest of its category: the
chance of as many requests or more if the product were refunded at its category's rate
(Poisson), with the Benjamini-Hochberg correction over every product tested, so that among a
few hundred ordinary products about one in twenty flagged is flagged by chance, not a dozen.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from data.schema import REASON_DETAILS, REASONS
from features.store import EVENT_TABLES
from serving.db import DECISIONS, REVIEW_ACTION, REVIEW_CASES
from serving.forecast import MIN_WEEKS, Forecast, forecast

TREND_WEEKS = 26
"""Weeks of refund rate shown as a trend, ending with the period's last week."""

FIELD_REFUND_RATE = (0.021, 0.042)
"""Refund rate one shop saw over a year (refunded orders over orders), lowest and highest month."""

FIELD_AUTOMATED_SHARE = 0.85
"""Share of refunds a shop decided without a person once its rules were automated."""

FIELD_MEAN_HOURS_AUTOMATED = 1.5
"""That shop's mean handling time after automation (28 h before)."""

SETTLE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("within 24 h", 24.0),
    ("1-3 days", 72.0),
    ("3-7 days", 168.0),
    ("over 7 days", float("inf")),
)
"""Time-to-decision buckets, with their upper bounds in hours, as shops report them."""

FIELD_SETTLE_SHARES: dict[str, float] = {
    "within 24 h": 0.42,
    "1-3 days": 0.35,
    "3-7 days": 0.18,
    "over 7 days": 0.05,
}
"""How fast one shop's refunds were handled before automation."""

PRODUCT_MIN_ORDERS = 20
"""Orders in the period a product needs before its refund rate is tested against its
category's: with fewer, no rate could stand out however many came back."""

PRODUCT_FALSE_DISCOVERY = 0.05
"""Largest expected share of products flagged as standing out by chance alone (BH q-value)."""

PRODUCTS_SHOWN = 15
"""Products listed on the dashboard: those standing out first, then the most refunded."""

PRODUCTS_EXPLAINED = 5
"""Products whose reasons are set out against their category's: those standing out (or, when
none does, the most refunded)."""

PRODUCT_REASONS_SHOWN = 4
"""Detailed reasons shown for each of those products, the most common first."""


@dataclass
class Totals:
    """Orders and refund requests in one period, and the rates between them."""

    orders: int = 0
    sales: float = 0.0
    requests: int = 0
    refund_money: float = 0.0

    @property
    def rate(self) -> float | None:
        """Refund requests per order placed in the same period."""
        return self.requests / self.orders if self.orders else None

    @property
    def money_share(self) -> float | None:
        """Money asked back per unit of sales in the same period."""
        return self.refund_money / self.sales if self.sales else None

    def add(self, other: Totals) -> None:
        """Add another period's (or category's) counts to these."""
        self.orders += other.orders
        self.sales += other.sales
        self.requests += other.requests
        self.refund_money += other.refund_money


@dataclass
class Week:
    """One week (Monday first) of the trend."""

    start: str
    totals: Totals = field(default_factory=Totals)
    reasons: Counter[str] = field(default_factory=Counter)
    days: int = 7
    """Days of the week up to the period's last day: fewer than 7 for the week still going."""

    @property
    def complete(self) -> bool:
        """Whether the week has ended: a week still going is not a dip in refunds."""
        return self.days >= 7


@dataclass
class CategoryRow:
    """One goods category in the period."""

    category: str
    totals: Totals
    top_details: list[tuple[str, float]]
    """The most common detailed reasons, with their share of the category's requests."""
    stands_out: bool
    """Refund rate over twice the shop's, on at least ten requests."""


@dataclass(frozen=True)
class ReasonShare:
    """One detailed reason a product comes back for, against the rest of its category."""

    detail: str
    count: int
    share: float
    """Of the product's refund requests in the period."""
    category_share: float | None
    """Of the requests on the rest of its category in the period; None if there are none."""

    @property
    def above_category(self) -> bool:
        """The reason is at least twice as common on the product as on the rest of its
        category (or the category has none of it): where a product page or supplier is off."""
        return self.category_share is None or self.share >= 2 * self.category_share


@dataclass
class ProductRow:
    """One product in the period, against the rest of its category."""

    product_id: str
    name: str | None
    category: str
    """The category most of its orders in the period were in."""
    totals: Totals
    top_details: list[tuple[str, float]]
    category_rate: float | None
    """Refund requests per order of the category's other products (and of orders with none)."""
    p_value: float | None
    """Chance of this many requests or more at the category's rate; None: not tested."""
    q_value: float | None
    """The p-value after the Benjamini-Hochberg correction over every product tested."""
    stands_out: bool
    reasons: list[ReasonShare] = field(default_factory=list)
    """Every detailed reason it was refunded for, most common first, with the category's."""


@dataclass
class Products:
    """Per-product figures for the period."""

    rows: list[ProductRow]
    """Standing out first (most significant first), then by requests."""
    with_product: int
    """Orders in the period that name a product."""
    tested: int
    """Products with at least `PRODUCT_MIN_ORDERS` orders, tested against their category."""

    @property
    def standing_out(self) -> list[ProductRow]:
        """The products whose refund rate stands out against their category."""
        return [r for r in self.rows if r.stands_out]


@dataclass(frozen=True)
class ProductCounts:
    """What the stand-out test needs of one product: its orders and requests, and those of the
    rest of its category in the same period."""

    orders: int
    requests: int
    category_orders: int
    category_requests: int


def stand_out(
    counts: list[ProductCounts],
    min_orders: int = PRODUCT_MIN_ORDERS,
    fdr: float = PRODUCT_FALSE_DISCOVERY,
) -> list[tuple[float | None, float | None, bool]]:
    """For each product: (p, q, stands out). p is the one-sided Poisson chance of at least its
    requests at the rest of the category's rate; q its Benjamini-Hochberg adjusted value over
    the products tested; it stands out when q is at most `fdr`. A product with fewer than
    `min_orders` orders, or a category with no other order or request, is not tested."""
    # Imported here: scipy.stats and statsmodels take seconds to import, which would hold the
    # port closed at start-up (liveness); only the owner's pages need them.
    from scipy.stats import poisson
    from statsmodels.stats.multitest import multipletests

    tested: list[int] = []
    p_values: list[float] = []
    for i, c in enumerate(counts):
        if c.orders < min_orders or c.category_orders <= 0 or c.category_requests <= 0:
            continue
        expected = c.orders * c.category_requests / c.category_orders
        tested.append(i)
        p_values.append(float(poisson.sf(c.requests - 1, expected)))
    out: list[tuple[float | None, float | None, bool]] = [(None, None, False)] * len(counts)
    if not tested:
        return out
    flags, q_values, _, _ = multipletests(p_values, alpha=fdr, method="fdr_bh")
    for i, p, q, flag in zip(tested, p_values, q_values, flags, strict=True):
        out[i] = (p, float(q), bool(flag))
    return out


@dataclass
class ReasonRow:
    """One detailed reason's share of the period's requests, and of the period before."""

    reason: str
    detail: str
    count: int
    share: float
    previous_share: float | None


@dataclass
class Settling:
    """How long requests decided in the window waited for a decision."""

    decided: int = 0
    automated: int = 0
    reviewed: int = 0
    still_open: int = 0
    buckets: dict[str, int] = field(default_factory=dict)
    mean_hours: float | None = None
    reviewed_within_sla: float | None = None
    """Share of reviewed requests decided within the review SLA."""

    @property
    def automated_share(self) -> float | None:
        """Share of decisions made without a person."""
        return self.automated / self.decided if self.decided else None

    def bucket_shares(self) -> dict[str, float]:
        """Each bucket's share of the requests that have their decision."""
        done = sum(self.buckets.values())
        return {k: (v / done if done else 0.0) for k, v in self.buckets.items()}


@dataclass
class OwnerView:
    """Everything the owner's part of the dashboard shows."""

    as_of: datetime | None
    start: datetime | None
    days: int
    totals: Totals
    previous: Totals
    weeks: list[Week]
    daily: list[tuple[str, Totals]]
    categories: list[CategoryRow]
    reasons: list[ReasonRow]
    settling: Settling
    forecast: Forecast | None = None
    forecast_note: str | None = None
    products: Products = field(default_factory=lambda: Products([], 0, 0))

    @property
    def complete_weeks(self) -> list[Week]:
        """The trend's weeks that have ended, drawn as the weekly charts."""
        return [w for w in self.weeks if w.complete]

    @property
    def week_so_far(self) -> Week | None:
        """The week still going at the period's end, if the period ends before a Sunday."""
        return self.weeks[-1] if self.weeks and not self.weeks[-1].complete else None

    @property
    def empty(self) -> bool:
        """No refund request on record: nothing to report on the shop yet."""
        return self.as_of is None


def _day(value: Any) -> date:
    """A `date()` result as a date (SQLite gives text, PostgreSQL a date)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def build(engine: Engine, days: int, now: datetime, review_sla_hours: float) -> OwnerView:
    """The owner's figures for the `days` days up to the latest refund request on record, the
    trend of the weeks before, and the time to a decision of requests decided in the `days`
    days up to `now` (UTC, naive)."""
    orders, refunds = EVENT_TABLES["orders"], EVENT_TABLES["refund_requests"]
    settling = _settling(engine, now - timedelta(days=days), now, review_sla_hours)
    with engine.connect() as connection:
        latest = connection.execute(sa.select(sa.func.max(refunds.c.requested_at))).scalar()
        if latest is None:
            return OwnerView(None, None, days, Totals(), Totals(), [], [], [], [], settling)
        as_of = latest if isinstance(latest, datetime) else datetime.fromisoformat(str(latest))
        last_day = as_of.date()
        first_day = last_day - timedelta(days=days - 1)
        trend_start = min(_monday(last_day) - timedelta(weeks=TREND_WEEKS - 1), first_day)
        previous_start = first_day - timedelta(days=days)
        since = datetime.combine(min(trend_start, previous_start), datetime.min.time())
        order_day = sa.func.date(orders.c.ordered_at)
        placed = connection.execute(
            sa.select(order_day, orders.c.category, sa.func.count(), sa.func.sum(orders.c.amount))
            .where(orders.c.ordered_at >= since)
            .group_by(order_day, orders.c.category)
        ).all()
        request_day = sa.func.date(refunds.c.requested_at)
        asked = connection.execute(
            sa.select(
                request_day,
                orders.c.category,
                refunds.c.reason_detail,
                sa.func.count(),
                sa.func.sum(refunds.c.amount_requested),
            )
            .select_from(refunds.join(orders, orders.c.order_id == refunds.c.order_id))
            .where(refunds.c.requested_at >= since)
            .group_by(request_day, orders.c.category, refunds.c.reason_detail)
        ).all()
        window = (
            datetime.combine(first_day, datetime.min.time()),
            datetime.combine(last_day + timedelta(days=1), datetime.min.time()),
        )
        product_orders, product_requests = _product_counts(connection, *window)
    # (day, category) -> counts; every figure below is a sum over these cells.
    cells: dict[tuple[date, str], Totals] = defaultdict(Totals)
    details: dict[tuple[date, str], Counter[str]] = defaultdict(Counter)
    for when, category, count, amount in placed:
        cell = cells[(_day(when), category)]
        cell.orders += int(count)
        cell.sales += float(amount or 0.0)
    for when, category, detail, count, amount in asked:
        key = (_day(when), category)
        cells[key].requests += int(count)
        cells[key].refund_money += float(amount or 0.0)
        details[key][detail] += int(count)

    def in_range(lo: date, hi: date) -> tuple[Totals, Counter[str], dict[str, Totals]]:
        total, reasons = Totals(), Counter[str]()
        by_category: defaultdict[str, Totals] = defaultdict(Totals)
        for (day, category), cell in cells.items():
            if lo <= day <= hi:
                total.add(cell)
                by_category[category].add(cell)
                reasons.update(details.get((day, category), Counter()))
        return total, reasons, by_category

    totals, reasons, by_category = in_range(first_day, last_day)
    previous, previous_reasons, _ = in_range(previous_start, first_day - timedelta(days=1))
    weeks = []
    for i in range(TREND_WEEKS):
        monday = _monday(last_day) - timedelta(weeks=TREND_WEEKS - 1 - i)
        week_total, week_reasons, _ = in_range(monday, monday + timedelta(days=6))
        parents: Counter[str] = Counter()
        for detail, count in week_reasons.items():
            parents[REASON_DETAILS.get(detail, "other")] += count
        seen = min((last_day - monday).days + 1, 7)
        weeks.append(Week(monday.isoformat(), week_total, parents, seen))
    daily = []
    for i in range(days):
        day = first_day + timedelta(days=i)
        daily.append((day.isoformat(), in_range(day, day)[0]))
    category_rows = _categories(by_category, details, first_day, last_day, totals)
    reason_rows = _reasons(reasons, previous_reasons)
    start = datetime.combine(first_day, datetime.min.time())
    ahead, note = _forecast(weeks)
    category_details: dict[str, Counter[str]] = defaultdict(Counter)
    for (day, category), counts in details.items():
        if first_day <= day <= last_day:
            category_details[category].update(counts)
    product_view = _products(product_orders, product_requests, by_category, category_details)
    return OwnerView(
        as_of,
        start,
        days,
        totals,
        previous,
        weeks,
        daily,
        category_rows,
        reason_rows,
        settling,
        ahead,
        note,
        product_view,
    )


def _forecast(weeks: list[Week]) -> tuple[Forecast | None, str | None]:
    """The forecast from the trend's complete weeks: from the first with any order or request
    (weeks before the history starts are not zeros), to the last that has ended."""
    complete = [w for w in weeks if w.complete]
    while complete and not (complete[0].totals.orders or complete[0].totals.requests):
        complete.pop(0)
    made = forecast(
        [w.start for w in complete],
        [float(w.totals.requests) for w in complete],
        [w.totals.refund_money for w in complete],
    )
    if made is None:
        return (
            None,
            f"a forecast needs {MIN_WEEKS} complete weeks of history; there are {len(complete)}",
        )
    return made, None


def _product_counts(
    connection: Connection, start: datetime, end: datetime
) -> tuple[list[Any], list[Any]]:
    """Orders placed and refund requests made in [start, end), per product, category (and
    detailed reason); orders without a product are left out."""
    orders, refunds = EVENT_TABLES["orders"], EVENT_TABLES["refund_requests"]
    placed = connection.execute(
        sa.select(
            orders.c.product_id,
            orders.c.category,
            sa.func.max(orders.c.product_name),
            sa.func.count(),
            sa.func.sum(orders.c.amount),
        )
        .where(
            orders.c.ordered_at >= start,
            orders.c.ordered_at < end,
            orders.c.product_id.is_not(None),
        )
        .group_by(orders.c.product_id, orders.c.category)
    ).all()
    asked = connection.execute(
        sa.select(
            orders.c.product_id,
            orders.c.category,
            refunds.c.reason_detail,
            sa.func.count(),
            sa.func.sum(refunds.c.amount_requested),
        )
        .select_from(refunds.join(orders, orders.c.order_id == refunds.c.order_id))
        .where(
            refunds.c.requested_at >= start,
            refunds.c.requested_at < end,
            orders.c.product_id.is_not(None),
        )
        .group_by(orders.c.product_id, orders.c.category, refunds.c.reason_detail)
    ).all()
    return list(placed), list(asked)


def _products(
    placed: list[Any],
    asked: list[Any],
    by_category: dict[str, Totals],
    category_details: dict[str, Counter[str]],
) -> Products:
    """Each product's figures, its category's without it, whether it stands out, and the
    reasons it comes back for against those of the rest of its category."""
    totals: dict[str, Totals] = defaultdict(Totals)
    per_category: dict[str, Counter[str]] = defaultdict(Counter)
    names: dict[str, str | None] = {}
    mix: dict[str, Counter[str]] = defaultdict(Counter)
    mix_in: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for product, category, name, count, amount in placed:
        totals[product].orders += int(count)
        totals[product].sales += float(amount or 0.0)
        per_category[product][category] += int(count)
        if name is not None:
            names[product] = name
    for product, category, detail, count, amount in asked:
        totals[product].requests += int(count)
        totals[product].refund_money += float(amount or 0.0)
        per_category[product][category] += 0  # a product refunded but not sold in the period
        mix[product][detail] += int(count)
        mix_in[(product, category)][detail] += int(count)
    with_product = sum(t.orders for t in totals.values())
    ids = sorted(totals)
    # A product's category: where most of its orders were (a product moved between categories
    # is compared with the one it mostly sold in).
    category_of = {p: min(per_category[p].items(), key=lambda kv: (-kv[1], kv[0]))[0] for p in ids}
    counts = []
    for p in ids:
        cat = by_category.get(category_of[p], Totals())
        own = totals[p]
        counts.append(
            ProductCounts(
                own.orders, own.requests, cat.orders - own.orders, cat.requests - own.requests
            )
        )
    tests = stand_out(counts)
    rows = []
    for p, c, (p_value, q_value, flag) in zip(ids, counts, tests, strict=True):
        own = totals[p]
        top = [(d, n / own.requests) for d, n in mix[p].most_common(3)] if own.requests else []
        rest = category_details.get(category_of[p], Counter()) - mix_in[(p, category_of[p])]
        rest_total = sum(rest.values())
        reasons = [
            ReasonShare(d, n, n / own.requests, rest[d] / rest_total if rest_total else None)
            for d, n in sorted(mix[p].items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        rows.append(
            ProductRow(
                p,
                names.get(p),
                category_of[p],
                own,
                top,
                c.category_requests / c.category_orders if c.category_orders > 0 else None,
                p_value,
                q_value,
                flag,
                reasons,
            )
        )
    rows.sort(
        key=lambda r: (
            not r.stands_out,
            r.q_value if r.stands_out and r.q_value is not None else 0.0,
            -r.totals.requests,
            r.product_id,
        )
    )
    tested = sum(1 for r in rows if r.p_value is not None)
    return Products(rows, with_product, tested)


def _categories(
    by_category: dict[str, Totals],
    details: dict[tuple[date, str], Counter[str]],
    first_day: date,
    last_day: date,
    shop: Totals,
) -> list[CategoryRow]:
    rows = []
    for category, total in by_category.items():
        mix: Counter[str] = Counter()
        for (day, cat), counts in details.items():
            if cat == category and first_day <= day <= last_day:
                mix.update(counts)
        top = [(d, n / total.requests) for d, n in mix.most_common(3)] if total.requests else []
        stands_out = (
            total.rate is not None
            and shop.rate is not None
            and total.requests >= 10
            and total.rate > 2 * shop.rate
        )
        rows.append(CategoryRow(category, total, top, stands_out))
    rows.sort(key=lambda r: (-(r.totals.rate or 0.0), r.category))
    return rows


def _reasons(now: Counter[str], before: Counter[str]) -> list[ReasonRow]:
    total, total_before = sum(now.values()), sum(before.values())
    rows = [
        ReasonRow(
            REASON_DETAILS.get(detail, "other"),
            detail,
            now.get(detail, 0),
            now.get(detail, 0) / total if total else 0.0,
            before.get(detail, 0) / total_before if total_before else None,
        )
        for detail in REASON_DETAILS
        if now.get(detail) or before.get(detail)
    ]
    order = {r: i for i, r in enumerate(REASONS)}
    rows.sort(key=lambda r: (order.get(r.reason, len(order)), -r.count, r.detail))
    return rows


def _settling(engine: Engine, start: datetime, now: datetime, sla_hours: float) -> Settling:
    """Time from each decision in [start, now) to its final answer: at once when the service
    decided alone, at the review's resolution when a person did."""
    d, c = DECISIONS, REVIEW_CASES
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(d.c.action, d.c.decided_at, c.c.resolved_at)
            .select_from(d.outerjoin(c, c.c.refund_id == d.c.refund_id))
            .where(d.c.decided_at >= start, d.c.decided_at < now)
        ).all()
    out = Settling(buckets={name: 0 for name, _ in SETTLE_BUCKETS})
    hours: list[float] = []
    within = 0
    for action, decided_at, resolved_at in rows:
        out.decided += 1
        if action != REVIEW_ACTION:
            out.automated += 1
            waited = 0.0
        elif resolved_at is None:
            out.reviewed += 1
            out.still_open += 1
            continue
        else:
            out.reviewed += 1
            waited = max((resolved_at - decided_at).total_seconds() / 3600.0, 0.0)
            within += waited <= sla_hours
        hours.append(waited)
        for name, bound in SETTLE_BUCKETS:
            if waited <= bound:
                out.buckets[name] += 1
                break
    out.mean_hours = sum(hours) / len(hours) if hours else None
    done_reviews = out.reviewed - out.still_open
    out.reviewed_within_sla = within / done_reviews if done_reviews else None
    return out
