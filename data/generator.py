"""The synthetic refund world: customers, orders, refund requests, late labels and abuse.

The world is a vectorised simulation (numpy arrays over all customers and orders at once), so a
million customers fit in a few GB and the default world takes seconds. Everything is drawn from
one seeded generator in a fixed order: the same seed gives the same world, bit for bit.

How the world works, in short:

* Customers have a hidden behaviour type (honest, opportunist, wardrober, false claimer,
  swapper, ring member). Types shape what they buy, how often they claim, what they claim and
  how fast, but a claim is abusive only by a draw from its true probability, which the oracle
  records. Honest customers also order twice, get late or lost parcels and return apparel that
  did not fit, so honest claims often look like abusive ones.
* Claims come from triggers: ordinary claims any customer may make (mistakes, wrong size,
  changed mind, ...), logistics claims on parcels that really were late or lost, and the
  motivated claims of each abusive type.
* Labels arrive late and imperfectly: warehouse checks find swapped returns and some worn
  ones, delivery proof exposes some false "not received" claims, chargebacks and ring
  investigations come weeks later, and much abuse is never detected. Nothing known after the
  end of the world's window is in the data.
* Tactics drift: false "not received" claims grow through the year.
* Orders carry products, drawn last from a stream of their own (`PRODUCT_STREAM`), so every
  other column is the same with or without them. Two products stand out within their category
  (`PLANTED_PRODUCTS`): a misleading size chart and a supplier whose goods arrive damaged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data.schema import (
    CATEGORIES,
    CUSTOMERS,
    DELIVERY_EVIDENCE,
    IDENTITY_LINKS,
    ORACLE_CUSTOMERS,
    ORACLE_REFUNDS,
    ORDERS,
    OUTCOME_SOURCES,
    OUTCOMES,
    PAYMENT_METHODS,
    REASON_DETAILS,
    REFUND_REQUESTS,
    REFUND_TYPES,
    TABLES,
    Kind,
    Table,
)
from refund_risk.errors import ConfigurationError

# --- customer types -------------------------------------------------------------------------

TYPES: tuple[str, ...] = (
    "honest",
    "opportunist",
    "wardrober",
    "false_claimer",
    "swapper",
    "ring_member",
)
HONEST, OPPORTUNIST, WARDROBER, FALSE_CLAIMER, SWAPPER, RING = range(len(TYPES))
TYPE_SHARE = np.array([0.918, 0.06, 0.006, 0.006, 0.004, 0.006])
ORDERS_PER_YEAR = np.array([5.0, 5.0, 10.0, 6.0, 5.0, 6.0])
AMOUNT_FACTOR = np.array([1.0, 1.0, 1.1, 1.3, 1.5, 1.4])

PATTERNS: tuple[str, ...] = (
    "honest",
    "opportunist",
    "wardrobing",
    "false_not_received",
    "false_damage_claim",
    "return_swap",
    "ring",
)

REGIONS = np.array(["north", "south", "east", "west", "central"])

# --- goods ----------------------------------------------------------------------------------

APPAREL, ELECTRONICS, HOME, BEAUTY, FRESH, VIRTUAL, CUSTOM = range(len(CATEGORIES))
CATEGORY_MIX = np.array(
    [
        [0.32, 0.12, 0.18, 0.14, 0.12, 0.07, 0.05],  # honest
        [0.32, 0.12, 0.18, 0.14, 0.12, 0.07, 0.05],  # opportunist
        [0.70, 0.05, 0.08, 0.10, 0.03, 0.03, 0.01],  # wardrober
        [0.25, 0.30, 0.25, 0.10, 0.03, 0.02, 0.05],  # false claimer
        [0.15, 0.55, 0.20, 0.05, 0.02, 0.01, 0.02],  # swapper
        [0.10, 0.55, 0.15, 0.15, 0.01, 0.04, 0.00],  # ring member
    ]
)
AMOUNT_MEDIAN = np.array([45.0, 220.0, 70.0, 30.0, 35.0, 20.0, 90.0])
AMOUNT_SIGMA = np.array([0.7, 0.95, 0.8, 0.6, 0.5, 0.6, 0.7])
RETURNABLE = np.array([True, True, True, True, False, False, False])
SHIPPED_GOODS = np.array([True, True, True, True, True, False, True])
# Ordinary claims per order by category, before the order-value factor.
CLAIM_BASE = np.array([0.042, 0.018, 0.018, 0.014, 0.012, 0.010, 0.009])

EV_NONE, EV_SCAN, EV_PHOTO, EV_SIGNATURE, EV_DIGITAL = (
    DELIVERY_EVIDENCE.index(x) for x in ("none", "scan", "photo", "signature", "digital")
)
PAYMENT_MIX_HONEST = np.array([0.55, 0.20, 0.12, 0.05, 0.08])
PAYMENT_MIX_ABUSER = np.array([0.40, 0.20, 0.25, 0.10, 0.05])

# --- refund vocabulary as codes -------------------------------------------------------------

DETAILS: tuple[str, ...] = tuple(REASON_DETAILS)
(
    D_MISTAKE,
    D_TWICE,
    D_NAD,
    D_DAMAGED,
    D_WRONG_SIZE,
    D_LATE,
    D_NOT_RECEIVED,
    D_CHANGED_MIND,
    D_OTHER,
) = range(len(DETAILS))
REFUND_ONLY, RETURN_AND_REFUND = range(len(REFUND_TYPES))
# Reason mix of ordinary claims; logistics claims come mostly from real late or lost parcels.
ORDINARY_DETAIL_MIX = np.array([0.30, 0.22, 0.09, 0.04, 0.07, 0.0, 0.0, 0.14, 0.10])

SRC = {name: i for i, name in enumerate(OUTCOME_SOURCES)}
DAY_US = 86_400 * 1_000_000

# --- products -------------------------------------------------------------------------------

PRODUCT_STREAM = 0x70726F64
"""Second entropy word of the products' random stream: `SeedSequence([seed, PRODUCT_STREAM])`.
Products are drawn after everything else from this stream alone, so the rest of the world is
bit for bit what the seed gives without them."""

PRODUCT_NAMES: tuple[tuple[str, ...], ...] = (
    (
        "T-shirt",
        "Slim jeans",
        "Summer dress",
        "Rain jacket",
        "Sneakers",
        "Wool jumper",
        "Chinos",
        "Hoodie",
        "Blouse",
        "Linen shirt",
        "Ankle boots",
        "Running shorts",
    ),
    (
        "Headphones",
        "Phone charger",
        "Smart watch",
        "Bluetooth speaker",
        "Tablet",
        "Webcam",
        "E-reader",
        "Power bank",
    ),
    (
        "Table lamp",
        "Cushion",
        "Glass vase",
        "Kitchen scale",
        "Bath towel",
        "Wall clock",
        "Ceramic mug set",
        "Plant pot",
        "Duvet cover",
        "Chopping board",
    ),
    (
        "Face cream",
        "Shampoo",
        "Lipstick",
        "Perfume",
        "Hand soap",
        "Sun cream",
        "Hair oil",
        "Nail polish",
    ),
    ("Fruit box", "Cheese selection", "Coffee beans", "Bread basket"),
    ("Gift card", "E-book", "Streaming month"),
    ("Engraved pen", "Photo book", "Name necklace"),
)
"""Per category (in `CATEGORIES` order), the product lines its catalogue is made of."""

VARIANTS: tuple[str, ...] = ("", "black", "white", "blue", "large", "small")
"""Each product line comes in these variants (a product each): the catalogue is lines x variants."""

PRODUCT_POPULARITY_EXPONENT = 0.8
"""A category's products sell in proportion to 1 / rank ** this (a few sell most)."""

PLANTED_PRODUCTS: dict[str, tuple[tuple[str, ...], float]] = {
    "sku00006": (("wrong_size", "not_as_described"), 5.0),  # Slim jeans: size chart off
    "sku00132": (("damaged", "not_as_described"), 15.0),  # Glass vase: packed badly
}
"""Products that stand out in their category: an order with a claim of one of these detailed
reasons is this many times likelier (than its sales alone make it) to be of this product."""

PLANTED_POPULARITY_RANK = 3
"""Where a planted product sells in its category (1: best seller), so it has orders to show."""


@dataclass(frozen=True)
class WorldConfig:
    """What world to make: size, length, start date and seed."""

    n_customers: int = 20_000
    seed: int = 7
    months: int = 12
    start: str = "2025-01-01"
    moved_weeks: int = 0
    """Whole weeks every time was moved after the simulation (`moved_to_end_by`)."""

    def validate(self) -> None:
        """Refuse sizes the simulation cannot make sense of."""
        if self.n_customers < 50:
            raise ConfigurationError(f"customers must be at least 50, got {self.n_customers}")
        if not 1 <= self.months <= 60:
            raise ConfigurationError(f"months must be between 1 and 60, got {self.months}")
        try:
            pd.Timestamp(self.start)
        except ValueError:
            raise ConfigurationError(f"start is not a date: {self.start!r}") from None


@dataclass
class World:
    """A generated world: the five raw tables, and the oracle that no feature may read."""

    config: WorldConfig
    tables: dict[str, pd.DataFrame]
    oracle_refunds: pd.DataFrame
    oracle_customers: pd.DataFrame
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        """Rows across the five raw tables."""
        return sum(len(t) for t in self.tables.values())


Progress = Callable[[str, float], None]


def _no_progress(stage: str, fraction: float) -> None:
    """Default progress callback: silent."""


# --- small vectorised helpers ---------------------------------------------------------------


def _ids(prefix: str | pa.Array, numbers: np.ndarray, width: int) -> pa.Array:
    """Format integer ids as zero-padded strings with a prefix, in Arrow (fast for millions)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of `probs` (rows need not be normalised)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), probs.shape[1] - 1)


def _timestamps(start: pd.Timestamp, days: np.ndarray) -> pa.Array:
    """Days since the world's start, as timestamps rounded to the second; NaN becomes null."""
    missing = np.isnan(days)
    seconds = np.round(np.where(missing, 0.0, days) * 86_400).astype(np.int64)
    micros = seconds * 1_000_000 + start.value // 1_000
    return pa.array(micros, type=pa.timestamp("us"), mask=missing)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _season_cdf(start: pd.Timestamp, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative order intensity per day: more orders in November and December."""
    dates = pd.date_range(start, periods=n_days, freq="D")
    weight = np.ones(n_days)
    weight[dates.month == 11] = 1.35
    weight[dates.month == 12] = 1.5
    weight[dates.month == 1] = 0.9
    grid = np.arange(n_days + 1, dtype=float)
    cdf = np.concatenate([[0.0], np.cumsum(weight)])
    return grid, cdf


def moved_to_end_by(world: World, end_by: date) -> World:
    """The same world with every time moved by whole weeks, so that its window ends on or just
    before `end_by`: counts, amounts and each weekday's share stay as simulated, only the dates
    move (a demo then shows its history's last weeks as the last weeks before today)."""
    end = pd.Timestamp(world.config.start) + pd.DateOffset(months=world.config.months)
    weeks = int((pd.Timestamp(end_by) - end) // pd.Timedelta(weeks=1))
    shift = pd.Timedelta(weeks=weeks)
    tables = {}
    for name, frame in world.tables.items():
        frame = frame.copy()
        for column in TABLES[name].columns:
            if column.kind is Kind.TIMESTAMP:
                frame[column.name] = frame[column.name] + shift
        tables[name] = frame
    config = replace(world.config, moved_weeks=world.config.moved_weeks + weeks)
    return World(config, tables, world.oracle_refunds, world.oracle_customers, dict(world.stats))


# --- the simulation -------------------------------------------------------------------------


def generate_world(
    n_customers: int = 20_000,
    seed: int = 7,
    months: int = 12,
    start: str = "2025-01-01",
    progress: Progress = _no_progress,
    products: bool = True,
) -> World:
    """Simulate a shop's customers over `months` months and return the raw tables and oracle.

    With `products=False` the orders carry no product (as for a shop that sends none); every
    other column is the same as with them."""
    config = WorldConfig(n_customers=n_customers, seed=seed, months=months, start=start)
    config.validate()
    rng = np.random.default_rng(np.random.PCG64(seed))
    t0 = pd.Timestamp(start)
    horizon = float((t0 + pd.DateOffset(months=months) - t0).days)

    progress("customers", 0.02)
    cust = _customers(rng, n_customers, horizon)
    progress("identities", 0.1)
    ident = _identities(rng, cust)
    progress("orders", 0.2)
    orders = _orders(rng, cust, ident, horizon, t0)
    progress("refund requests", 0.5)
    claims = _claims(rng, cust, orders, horizon)
    progress("outcomes", 0.7)
    outcomes = _outcomes(rng, claims, orders, horizon)
    if products:
        # Last, from a stream of its own: nothing above depends on it.
        product_rng = np.random.default_rng(np.random.SeedSequence([seed, PRODUCT_STREAM]))
        orders["product"] = _products(product_rng, orders, claims)
    progress("tables", 0.8)
    world = _assemble(config, t0, horizon, cust, ident, orders, claims, outcomes)
    progress("done", 1.0)
    return world


def _customers(rng: np.random.Generator, n: int, horizon: float) -> dict[str, np.ndarray]:
    """Types, rings, signup days and appetites of every customer."""
    n_ring = round(TYPE_SHARE[RING] * n)
    other_share = TYPE_SHARE[:RING] / TYPE_SHARE[:RING].sum()
    ctype = np.full(n, RING, dtype=np.int8)
    ctype[: n - n_ring] = rng.choice(RING, size=n - n_ring, p=other_share)

    # Rings: groups of 3 to 7 accounts created close together.
    ring_id = np.full(n, -1, dtype=np.int64)
    sizes = rng.integers(3, 8, size=max(1, n_ring // 3 + 1))
    members = np.repeat(np.arange(len(sizes)), sizes)[:n_ring]
    if n_ring and members[-1] > 0 and (members == members[-1]).sum() < 3:
        members[members == members[-1]] -= 1  # no ring of one or two: fold into the previous
    ring_id[n - n_ring :] = members
    n_rings = int(members.max()) + 1 if n_ring else 0

    signup = np.where(
        rng.random(n) < 0.55,
        rng.uniform(-3 * 365.0, 0.0, n),
        rng.uniform(0.0, horizon - 14.0, n),
    )
    if n_ring:
        ring_born = rng.uniform(-60.0, horizon - 90.0, n_rings)
        signup[n - n_ring :] = ring_born[members] + rng.uniform(0.0, 20.0, n_ring)

    appetite = ORDERS_PER_YEAR[ctype] * rng.lognormal(0.0, 0.5, n)
    alpha = 8.0 * CATEGORY_MIX[ctype] + 0.05
    cat_pref = rng.gamma(alpha)
    cat_pref /= cat_pref.sum(axis=1, keepdims=True)
    return {
        "type": ctype,
        "ring": ring_id,
        "signup": signup,
        "appetite": appetite,
        "cat_pref": cat_pref,
        "region": rng.integers(0, len(REGIONS), n),
        "n_rings": np.array([n_rings]),
    }


def _identities(rng: np.random.Generator, cust: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Device, address and payment-instrument slots per customer, with shared ones.

    Honest households share an address (and sometimes a tablet); ring members share the ring's
    devices, addresses and cards. Both create links; only one of them is abuse.
    """
    n = len(cust["type"])
    ctype = cust["type"]
    slots = {"device": 3, "address": 2, "payment": 2}
    counts = {
        "device": 1 + np.minimum(rng.poisson(0.5, n), 2),
        "address": 1 + np.minimum(rng.poisson(0.25, n), 1),
        "payment": 1 + np.minimum(rng.poisson(0.35, n), 1),
    }
    ids: dict[str, np.ndarray] = {}
    next_id = 0
    for kind, width in slots.items():
        ids[kind] = np.arange(next_id, next_id + n * width).reshape(n, width)
        next_id += n * width

    # Households: pairs of non-ring customers at one address.
    candidates = np.flatnonzero(ctype != RING)
    n_pairs = int(0.03 * len(candidates))
    chosen = rng.permutation(candidates)[: 2 * n_pairs].reshape(-1, 2)
    ids["address"][chosen[:, 1], 0] = ids["address"][chosen[:, 0], 0]
    tablet = chosen[rng.random(len(chosen)) < 0.3]
    ids["device"][tablet[:, 1], 0] = ids["device"][tablet[:, 0], 0]

    # Rings: each ring owns two of each fingerprint; members mostly use them.
    ring = cust["ring"]
    in_ring = np.flatnonzero(ring >= 0)
    n_rings = int(cust["n_rings"][0])
    share_p = {"device": 0.8, "address": 0.6, "payment": 0.5}
    for kind in slots:
        pool = next_id + np.arange(n_rings * 2).reshape(n_rings, 2)
        next_id += n_rings * 2
        uses = rng.random(len(in_ring)) < share_p[kind]
        which = rng.integers(0, 2, len(in_ring))
        if kind == "device":
            uses[:] = True  # every ring account shows the ring's main device
            which[:] = 0
        picked = pool[ring[in_ring], which]
        ids[kind][in_ring[uses], 0] = picked[uses]

    # Each payment instrument has a method; abusers lean on methods that are easy to dispute.
    abuser = (ctype >= WARDROBER)[:, None]
    method = np.where(
        abuser,
        _pick(rng, np.tile(PAYMENT_MIX_ABUSER, (n * 2, 1))).reshape(n, 2),
        _pick(rng, np.tile(PAYMENT_MIX_HONEST, (n * 2, 1))).reshape(n, 2),
    )
    return {
        **{f"{k}_ids": v for k, v in ids.items()},
        **{f"{k}_count": v for k, v in counts.items()},
        "pay_method": method,
    }


def _orders(
    rng: np.random.Generator,
    cust: dict[str, np.ndarray],
    ident: dict[str, np.ndarray],
    horizon: float,
    t0: pd.Timestamp,
) -> dict[str, np.ndarray]:
    """Every order: who, when, what, how much, paid how, shipped and delivered when."""
    active_from = np.clip(cust["signup"], 0.0, horizon)
    years = (horizon - active_from) / 365.0
    n_orders = rng.poisson(cust["appetite"] * years)
    c = np.repeat(np.arange(len(n_orders)), n_orders)
    m = len(c)

    grid, cdf = _season_cdf(t0, int(horizon))
    lo = np.interp(active_from[c], grid, cdf)
    hi = cdf[-1]
    ordered = np.interp(lo + rng.random(m) * (hi - lo), cdf, grid)
    # Time order inside the simulation keeps ids increasing with time, as a shop's would.
    order_sort = np.lexsort((c, ordered))
    c, ordered = c[order_sort], ordered[order_sort]
    ordered = np.maximum(ordered, cust["signup"][c] + 1e-3)

    ctype = cust["type"][c]
    cat = _pick(rng, cust["cat_pref"][c])
    amount = AMOUNT_MEDIAN[cat] * AMOUNT_FACTOR[ctype] * rng.lognormal(0.0, AMOUNT_SIGMA[cat], m)
    amount = np.round(np.maximum(amount, 1.0), 2)
    items_lambda = np.where(cat == APPAREL, np.where(ctype == WARDROBER, 2.0, 1.0), 0.5)
    items = 1 + rng.poisson(items_lambda)

    def slot(kind: str) -> np.ndarray:
        count = ident[f"{kind}_count"][c]
        choice = np.where(rng.random(m) < 0.8, 0, (rng.random(m) * count).astype(np.int64))
        return choice

    dev_slot, addr_slot, pay_slot = slot("device"), slot("address"), slot("payment")
    device = ident["device_ids"][c, dev_slot]
    address = ident["address_ids"][c, addr_slot]
    payment = ident["payment_ids"][c, pay_slot]
    method = ident["pay_method"][c, pay_slot]

    # Shipping and delivery, in days after the order.
    ship_delay = rng.lognormal(0.0, 0.5, m)
    ship_delay = np.where(cat == FRESH, rng.uniform(0.1, 0.6, m), ship_delay)
    ship_delay = np.where(cat == CUSTOM, rng.uniform(3.0, 10.0, m), ship_delay)
    ship_delay = np.where(cat == VIRTUAL, 0.001, ship_delay)
    transit = 1.0 + rng.gamma(2.0, 1.0, m)
    transit = np.where(cat == FRESH, rng.uniform(0.3, 1.5, m), transit)
    late = SHIPPED_GOODS[cat] & (rng.random(m) < 0.06)
    transit = np.where(late, transit + rng.uniform(4.0, 12.0, m), transit)
    transit = np.where(cat == VIRTUAL, 0.0, transit)
    lost = SHIPPED_GOODS[cat] & ~late & (rng.random(m) < 0.0035)
    shipped = ordered + ship_delay
    delivered = np.where(lost, np.nan, shipped + transit)
    high_value = amount > 500.0
    u = rng.random(m)
    evidence = np.where(
        u < np.where(high_value, 0.35, 0.05),
        EV_SIGNATURE,
        np.where(u < np.where(high_value, 0.7, 0.4), EV_PHOTO, EV_SCAN),
    )
    evidence = np.where(lost, EV_NONE, evidence)
    evidence = np.where(cat == VIRTUAL, EV_DIGITAL, evidence)
    return {
        "customer": c,
        "type": ctype,
        "ordered": ordered,
        "category": cat,
        "amount": amount,
        "items": items,
        "method": method,
        "device": device,
        "address": address,
        "payment": payment,
        "shipped": shipped,
        "delivered": delivered,
        "late": late,
        "lost": lost,
        "evidence": evidence,
    }


def _claims(
    rng: np.random.Generator,
    cust: dict[str, np.ndarray],
    o: dict[str, np.ndarray],
    horizon: float,
) -> dict[str, np.ndarray]:
    """Refund requests: ordinary, logistics and motivated claims; then whether each is abuse."""
    m = len(o["customer"])
    cat, ctype, amount = o["category"], o["type"], o["amount"]
    ordered, shipped, delivered = o["ordered"], o["shipped"], o["delivered"]
    t_frac = np.clip(ordered / horizon, 0.0, 1.0)
    value_factor = np.clip(amount / 100.0, 0.05, 50.0) ** 0.27

    cand_order: list[np.ndarray] = []
    cand_detail: list[np.ndarray] = []
    cand_time: list[np.ndarray] = []
    cand_motive: list[np.ndarray] = []

    def add(mask: np.ndarray, detail: np.ndarray | int, when: np.ndarray, motivated: bool) -> None:
        idx = np.flatnonzero(mask)
        cand_order.append(idx)
        cand_detail.append(
            np.asarray(detail)[idx] if np.ndim(detail) else np.full(len(idx), detail)
        )
        cand_time.append(when[idx])
        cand_motive.append(np.full(len(idx), motivated))

    # Ordinary claims, any customer: mistakes, double orders, wrong size, changed mind, ...
    opp = np.where(ctype == OPPORTUNIST, 1.3, 1.0)
    p_ordinary = CLAIM_BASE[cat] * value_factor * opp
    ordinary = rng.random(m) < p_ordinary
    mix = np.tile(ORDINARY_DETAIL_MIX, (m, 1))
    mix[cat != APPAREL, D_WRONG_SIZE] = 0.0
    mix[cat != APPAREL, D_NAD] += ORDINARY_DETAIL_MIX[D_WRONG_SIZE] * 0.5
    mix[cat != APPAREL, D_CHANGED_MIND] += ORDINARY_DETAIL_MIX[D_WRONG_SIZE] * 0.5
    mix[cat == VIRTUAL, D_DAMAGED] = 0.0
    detail = _pick(rng, mix)
    after_delivery = np.nan_to_num(delivered, nan=np.inf)
    before_ship = ordered + rng.random(m) * (shipped - ordered)
    post = rng.lognormal(np.log(4.0), 0.8, m)
    early = rng.random(m)
    when = np.where(
        detail == D_TWICE,
        ordered + rng.exponential(0.3, m),
        np.where(
            (detail == D_MISTAKE) & (early < 0.45),
            before_ship,
            np.where(
                (detail == D_CHANGED_MIND) & (early < 0.25),
                before_ship,
                after_delivery + np.where(detail == D_CHANGED_MIND, post * 1.7, post),
            ),
        ),
    )
    add(ordinary, detail, when, motivated=False)

    # Logistics claims on parcels that really were late or lost, or stolen from a doorstep.
    add(
        o["lost"] & (rng.random(m) < 0.8),
        D_NOT_RECEIVED,
        shipped + 6.0 + rng.uniform(0.0, 10.0, m),
        motivated=False,
    )
    late_when = shipped + 4.0 + rng.uniform(0.0, 3.0, m)
    add(
        o["late"] & (rng.random(m) < 0.03) & (late_when < delivered),
        D_LATE,
        late_when,
        motivated=False,
    )
    add(
        ~o["lost"] & SHIPPED_GOODS[cat] & (rng.random(m) < 0.0005),
        D_NOT_RECEIVED,
        after_delivery + rng.uniform(0.2, 3.0, m),
        motivated=False,
    )

    # Motivated claims of the abusive types.
    u = rng.random(m)
    physical = SHIPPED_GOODS[cat]
    ward_p = np.where(cat == APPAREL, 0.3, 0.02)
    add(
        (ctype == WARDROBER) & (u < ward_p),
        _pick(rng, np.tile([0, 0, 0.2, 0, 0.45, 0, 0, 0.35, 0], (m, 1))),
        after_delivery + rng.uniform(2.0, 10.0, m),
        motivated=True,
    )
    fc_detail = np.where(
        rng.random(m) < 0.45 + 0.3 * t_frac,
        D_NOT_RECEIVED,
        np.where(rng.random(m) < 0.7, D_DAMAGED, D_NAD),
    )
    add(
        (ctype == FALSE_CLAIMER) & physical & (u < 0.09 * (1.0 + 1.6 * t_frac)),
        fc_detail,
        after_delivery + rng.exponential(1.5, m),
        motivated=True,
    )
    swap_p = np.where(cat == ELECTRONICS, 0.35, np.where(RETURNABLE[cat], 0.15, 0.0))
    add(
        (ctype == SWAPPER) & (u < swap_p),
        _pick(rng, np.tile([0, 0, 0.45, 0.25, 0, 0, 0, 0.3, 0], (m, 1))),
        after_delivery + rng.uniform(1.0, 12.0, m),
        motivated=True,
    )
    add(
        (ctype == RING) & physical & (u < 0.2),
        _pick(rng, np.tile([0, 0, 0.25, 0.35, 0, 0, 0.4, 0, 0], (m, 1))),
        after_delivery + rng.exponential(1.0, m),
        motivated=True,
    )
    opp_detail = _pick(rng, np.tile([0, 0, 0.2, 0.5, 0, 0, 0, 0.3, 0], (m, 1)))
    add(
        (ctype == OPPORTUNIST) & RETURNABLE[cat] & (u < 0.015),
        opp_detail,
        after_delivery + rng.uniform(0.5, 10.0, m),
        motivated=True,
    )

    order_idx = np.concatenate(cand_order)
    detail = np.concatenate(cand_detail).astype(np.int64)
    when = np.concatenate(cand_time)
    motive = np.concatenate(cand_motive)
    # One claim per order: among an order's candidates, a random one wins.
    shuffle = rng.permutation(len(order_idx))
    order_idx, detail, when, motive = (a[shuffle] for a in (order_idx, detail, when, motive))
    _, first = np.unique(order_idx, return_index=True)
    keep = first[np.isfinite(when[first]) & (when[first] < horizon)]
    order_idx, detail, when, motive = order_idx[keep], detail[keep], when[keep], motive[keep]
    when = np.maximum(when, ordered[order_idx] + 1e-3)
    sort = np.lexsort((order_idx, when))
    order_idx, detail, when, motive = order_idx[sort], detail[sort], when[sort], motive[sort]
    n = len(order_idx)

    cat_c, type_c = cat[order_idx], ctype[order_idx]
    ship_c, deliv_c = shipped[order_idx], delivered[order_idx]
    stage = np.where(when < ship_c, 0, np.where(np.isnan(deliv_c) | (when < deliv_c), 1, 2))
    stage = np.where(cat_c == VIRTUAL, 2, stage)
    # A claim before delivery can only be a cancellation or a logistics claim.
    detail = np.where(
        (stage < 2) & np.isin(detail, [D_NAD, D_DAMAGED, D_WRONG_SIZE]), D_CHANGED_MIND, detail
    )

    returnable = RETURNABLE[cat_c] & (stage == 2)
    wants_return = np.isin(
        detail, [D_MISTAKE, D_TWICE, D_WRONG_SIZE, D_NAD, D_CHANGED_MIND, D_OTHER]
    )
    p_return = np.where(wants_return, 0.88, np.where(detail == D_DAMAGED, 0.45, 0.0))
    p_return = np.where(motive & (type_c == RING), 0.25, p_return)
    p_return = np.where(motive & (type_c == FALSE_CLAIMER), 0.0, p_return)
    p_return = np.where(motive & np.isin(type_c, [WARDROBER, SWAPPER]), 1.0, p_return)
    p_return = np.where(motive & (type_c == OPPORTUNIST), 0.3, p_return)
    refund_type = np.where(returnable & (rng.random(n) < p_return), RETURN_AND_REFUND, REFUND_ONLY)

    claims_evidence = np.isin(detail, [D_DAMAGED, D_NAD, D_WRONG_SIZE])
    photos = np.where(
        claims_evidence,
        rng.poisson(np.where(motive, 0.5, 1.8)),
        rng.poisson(0.05, n),
    )
    amount_c = amount[order_idx]
    partial = np.isin(detail, [D_DAMAGED, D_NAD]) & (rng.random(n) < 0.3)
    asked = np.where(partial, np.round(amount_c * rng.uniform(0.3, 0.9, n), 2), amount_c)
    asked = np.maximum(asked, 0.01)

    # The true probability that this claim is abusive, and the draw.
    base = np.where(
        motive,
        np.array([-1.5, -1.5, -1.0, -0.5, -0.6, -0.2])[type_c],
        np.array([-3.9, -3.1, -2.6, -2.4, -2.5, -2.0])[type_c],
    )
    since_delivery = when - deliv_c
    ev = o["evidence"][order_idx]
    logit = (
        base
        + 0.45 * ((stage == 2) & (since_delivery < 7.0))
        + 1.0 * ((detail == D_NOT_RECEIVED) & (stage == 2) & np.isin(ev, [EV_PHOTO, EV_SIGNATURE]))
        - 1.5 * (detail == D_NOT_RECEIVED) * o["lost"][order_idx]
        - 1.0 * (detail == D_LATE)
        - 1.4 * (stage == 0)
        + 0.35 * np.clip(np.log(amount_c / 100.0), -1.0, 1.5)
        + 0.5 * (claims_evidence & (photos == 0))
        + 0.4 * (refund_type == REFUND_ONLY) * (stage == 2)
        + 0.8 * t_frac[order_idx] * ((type_c == FALSE_CLAIMER) & (detail == D_NOT_RECEIVED))
    )
    p_true = _sigmoid(logit)
    abusive = rng.random(n) < p_true

    pattern = np.zeros(n, dtype=np.int8)  # honest
    abuse_pattern = np.select(
        [
            type_c == RING,
            (type_c == FALSE_CLAIMER) & (detail == D_NOT_RECEIVED),
            type_c == FALSE_CLAIMER,
            (type_c == SWAPPER) & (refund_type == RETURN_AND_REFUND),
            (type_c == WARDROBER) & (refund_type == RETURN_AND_REFUND),
            (refund_type == REFUND_ONLY) & np.isin(detail, [D_DAMAGED, D_NAD]) & motive,
        ],
        [6, 3, 4, 5, 2, 4],
        default=1,
    )
    pattern = np.where(abusive, abuse_pattern, pattern).astype(np.int8)
    return {
        "order": order_idx,
        "customer": o["customer"][order_idx],
        "detail": detail,
        "time": when,
        "stage": stage,
        "refund_type": refund_type,
        "photos": photos,
        "asked": asked,
        "p_true": p_true,
        "abusive": abusive,
        "pattern": pattern,
        "motive": motive,
    }


def _outcomes(
    rng: np.random.Generator,
    cl: dict[str, np.ndarray],
    o: dict[str, np.ndarray],
    horizon: float,
) -> dict[str, np.ndarray]:
    """What the shop learns about each claim, and when; some abuse is never found."""
    n = len(cl["order"])
    t, stage, pattern = cl["time"], cl["stage"], cl["pattern"]
    abusive = cl["abusive"]
    is_return = cl["refund_type"] == RETURN_AND_REFUND
    ev = o["evidence"][cl["order"]]
    lost = o["lost"][cl["order"]]
    not_received = cl["detail"] == D_NOT_RECEIVED
    proof_check = not_received & ~is_return

    # First outcome: cancellation, warehouse check, delivery proof, or closing with no finding.
    source = np.full(n, SRC["closed_no_finding"])
    known = t + rng.uniform(7.0, 21.0, n)
    known = np.where(stage == 0, t + rng.uniform(0.0, 0.5, n), known)
    check_at = t + rng.uniform(3.0, 10.0, n) + rng.uniform(0.0, 2.0, n)
    source = np.where(is_return, SRC["warehouse_check"], source)
    known = np.where(is_return, check_at, known)
    source = np.where(proof_check, SRC["delivery_proof"], source)
    known = np.where(proof_check, t + rng.uniform(1.0, 5.0, n), known)

    detect_warehouse = np.select([pattern == 5, pattern == 2], [0.85, 0.45], default=0.35)
    strong_proof = np.isin(ev, [EV_PHOTO, EV_SIGNATURE])
    detect_proof = np.where(strong_proof, 0.65, 0.3)
    u = rng.random(n)
    p_detect = np.where(
        is_return, detect_warehouse, np.where(proof_check & ~lost, detect_proof, 0.0)
    )
    p_flag_honest = np.where(is_return, 0.004, np.where(proof_check & ~lost, 0.01, 0.0))
    first_abusive = np.where(abusive, u < p_detect, u < p_flag_honest)
    first_abusive &= stage > 0

    # Later evidence for abuse the first look missed: investigations and chargebacks.
    missed = abusive & ~first_abusive & (stage > 0)
    later_p = np.select([pattern == 6, np.isin(pattern, [3, 4])], [0.55, 0.2], default=0.08)
    later = missed & (rng.random(n) < later_p)
    later_source = np.where(
        pattern == 6,
        SRC["investigation"],
        np.where(rng.random(n) < 0.5, SRC["chargeback"], SRC["investigation"]),
    )
    later_known = np.where(
        pattern == 6, t + rng.uniform(20.0, 90.0, n), t + rng.uniform(15.0, 75.0, n)
    )

    refund = np.concatenate([np.arange(n), np.flatnonzero(later)])
    is_abusive = np.concatenate([first_abusive, np.ones(int(later.sum()), dtype=bool)])
    known_at = np.concatenate([known, later_known[later]])
    src = np.concatenate([source, later_source[later]])
    seen = known_at < horizon  # nothing learnt after the snapshot is in the data
    refund, is_abusive, known_at, src = refund[seen], is_abusive[seen], known_at[seen], src[seen]
    sort = np.lexsort((refund, known_at))
    return {
        "refund": refund[sort],
        "is_abusive": is_abusive[sort],
        "known_at": known_at[sort],
        "source": src[sort],
    }


def catalogue() -> pd.DataFrame:
    """Every product of the generated shop: product_id, product_name, category (ids in
    category order, `sku00000` onwards)."""
    rows: list[tuple[str, str, str]] = []
    for cat, lines in enumerate(PRODUCT_NAMES):
        for line in lines:
            for variant in VARIANTS:
                name = f"{line}, {variant}" if variant else line
                rows.append((f"sku{len(rows):05d}", name, CATEGORIES[cat]))
    return pd.DataFrame(rows, columns=["product_id", "product_name", "category"])


def _products(
    rng: np.random.Generator, o: dict[str, np.ndarray], cl: dict[str, np.ndarray]
) -> np.ndarray:
    """Each order's product (an index into `catalogue()`): by the category's popularity, except
    that a claim of a planted product's reasons makes that product likelier."""
    shop = catalogue()
    ids = shop["product_id"].to_numpy()
    category_codes = shop["category"].map(CATEGORIES.index).to_numpy()
    m = len(o["category"])
    out = np.full(m, -1, dtype=np.int64)
    for cat in range(len(CATEGORIES)):
        members = np.flatnonzero(category_codes == cat)
        ranks = rng.permutation(len(members)) + 1
        planted = [i for i, pid in enumerate(ids[members]) if pid in PLANTED_PRODUCTS]
        for i in planted:
            # The planted product takes the chosen rank; whoever held it takes its old one.
            holder = int(np.flatnonzero(ranks == PLANTED_POPULARITY_RANK)[0])
            ranks[holder], ranks[i] = ranks[i], PLANTED_POPULARITY_RANK
        weights = 1.0 / ranks.astype(float) ** PRODUCT_POPULARITY_EXPONENT
        in_cat = np.flatnonzero(o["category"] == cat)
        # Orders claimed for a planted product's reasons, per planted product.
        boosted = np.zeros(len(in_cat), dtype=np.int64) - 1
        for i in planted:
            details, _factor = PLANTED_PRODUCTS[str(ids[members][i])]
            codes = [DETAILS.index(d) for d in details]
            hit = np.unique(cl["order"][np.isin(cl["detail"], codes)])
            boosted[np.isin(in_cat, hit) & (boosted < 0)] = i
        for group in np.unique(boosted):
            rows = in_cat[boosted == group]
            w = weights.copy()
            if group >= 0:
                w[group] *= PLANTED_PRODUCTS[str(ids[members][group])][1]
            out[rows] = members[rng.choice(len(members), size=len(rows), p=w / w.sum())]
    return out


def _product_columns(product: np.ndarray | None, m: int) -> dict[str, pa.Array]:
    """The orders' product_id and product_name columns; empty without products."""
    if product is None:
        empty = pa.nulls(m, pa.string())
        return {"product_id": empty, "product_name": empty}
    shop = catalogue()
    index = pa.array(product)
    return {
        "product_id": pa.array(shop["product_id"]).take(index),
        "product_name": pa.array(shop["product_name"]).take(index),
    }


def _assemble(
    config: WorldConfig,
    t0: pd.Timestamp,
    horizon: float,
    cust: dict[str, np.ndarray],
    ident: dict[str, np.ndarray],
    o: dict[str, np.ndarray],
    cl: dict[str, np.ndarray],
    out: dict[str, np.ndarray],
) -> World:
    """Turn simulation arrays into the raw tables (exact schema) and the oracle."""
    n = len(cust["type"])
    m = len(o["customer"])
    customer_ids = _ids("c", np.arange(n), 7)

    # A refund before shipping cancels the order: it never ships. Nothing after the snapshot.
    shipped, delivered, evidence = o["shipped"].copy(), o["delivered"].copy(), o["evidence"].copy()
    cancelled = cl["order"][cl["stage"] == 0]
    shipped[cancelled] = np.nan
    delivered[cancelled] = np.nan
    evidence[cancelled] = EV_NONE
    delivered[delivered >= horizon] = np.nan
    shipped[shipped >= horizon] = np.nan
    delivered[np.isnan(shipped)] = np.nan
    evidence = np.where(np.isnan(delivered) & (evidence != EV_DIGITAL), EV_NONE, evidence)
    evidence = np.where(np.isnan(delivered), EV_NONE, evidence)

    def table(spec: Table, columns: dict[str, pa.Array | np.ndarray]) -> pd.DataFrame:
        arrow = pa.table(columns).cast(spec.arrow_schema())
        return arrow.to_pandas()

    def enum(values: tuple[str, ...], codes: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(
            pa.array(codes, type=pa.int32()), pa.array(list(values))
        ).cast(pa.string())

    customers = table(
        CUSTOMERS,
        {
            "customer_id": customer_ids,
            "signup_at": _timestamps(t0, cust["signup"]),
            "region": REGIONS[cust["region"]],
        },
    )
    order_ids = _ids("o", np.arange(m), 9)
    orders = table(
        ORDERS,
        {
            "order_id": order_ids,
            "customer_id": customer_ids.take(pa.array(o["customer"])),
            "ordered_at": _timestamps(t0, o["ordered"]),
            "category": enum(CATEGORIES, o["category"]),
            "amount": o["amount"],
            "item_count": o["items"],
            "payment_method": enum(PAYMENT_METHODS, o["method"]),
            "device_id": _ids("d", o["device"], 8),
            "address_id": _ids("a", o["address"], 8),
            "payment_fingerprint": _ids("p", o["payment"], 8),
            "shipped_at": _timestamps(t0, shipped),
            "delivered_at": _timestamps(t0, delivered),
            "delivery_evidence": enum(DELIVERY_EVIDENCE, evidence),
            **_product_columns(o.get("product"), m),
        },
    )

    k = len(cl["order"])
    refund_ids = _ids("r", np.arange(k), 8)
    reason_codes = np.array(
        [list(dict.fromkeys(REASON_DETAILS.values())).index(REASON_DETAILS[d]) for d in DETAILS]
    )
    refunds = table(
        REFUND_REQUESTS,
        {
            "refund_id": refund_ids,
            "order_id": order_ids.take(pa.array(cl["order"])),
            "customer_id": customer_ids.take(pa.array(cl["customer"])),
            "requested_at": _timestamps(t0, cl["time"]),
            "refund_type": enum(REFUND_TYPES, cl["refund_type"]),
            "reason": enum(
                tuple(dict.fromkeys(REASON_DETAILS.values())), reason_codes[cl["detail"]]
            ),
            "reason_detail": enum(DETAILS, cl["detail"]),
            "amount_requested": cl["asked"],
            "photo_count": cl["photos"],
            "order_stage": enum(("not_shipped", "in_transit", "delivered"), cl["stage"]),
        },
    )
    outcomes = table(
        OUTCOMES,
        {
            "outcome_id": _ids("x", np.arange(len(out["refund"])), 8),
            "refund_id": refund_ids.take(pa.array(out["refund"])),
            "is_abusive": out["is_abusive"],
            "known_at": _timestamps(t0, out["known_at"]),
            "source": enum(OUTCOME_SOURCES, out["source"]),
        },
    )

    # Identity links: fingerprints first seen at signup (main device, address) or at an order.
    kinds = np.repeat(np.arange(3), m)
    fps = np.concatenate([o["device"], o["address"], o["payment"]])
    owners = np.tile(o["customer"], 3)
    seen = np.tile(o["ordered"], 3)
    kinds = np.concatenate([kinds, np.zeros(n, int), np.ones(n, int)])
    fps = np.concatenate([fps, ident["device_ids"][:, 0], ident["address_ids"][:, 0]])
    owners = np.concatenate([owners, np.arange(n), np.arange(n)])
    seen = np.concatenate([seen, cust["signup"], cust["signup"]])
    links = (
        pd.DataFrame({"c": owners, "k": kinds, "f": fps, "s": seen})
        .groupby(["c", "k", "f"], sort=True, as_index=False)["s"]
        .min()
    )
    links = links[links["s"] < horizon]
    kind_codes = links["k"].to_numpy()
    fingerprints = _ids(pa.array(np.array(["d", "a", "p"])[kind_codes]), links["f"].to_numpy(), 8)
    identity_links = table(
        IDENTITY_LINKS,
        {
            "customer_id": customer_ids.take(pa.array(links["c"].to_numpy())),
            "kind": enum(("device", "address", "payment"), kind_codes),
            "fingerprint": fingerprints,
            "seen_at": _timestamps(t0, links["s"].to_numpy()),
        },
    )

    oracle_refunds = table(
        ORACLE_REFUNDS,
        {
            "refund_id": refund_ids,
            "true_abuse_probability": cl["p_true"],
            "is_abusive_true": cl["abusive"],
            "pattern": enum(PATTERNS, cl["pattern"]),
        },
    )
    in_ring = cust["ring"] >= 0
    ring_text = pc.if_else(pa.array(in_ring), _ids("ring", np.maximum(cust["ring"], 0), 4), None)
    oracle_customers = table(
        ORACLE_CUSTOMERS,
        {
            "customer_id": customer_ids,
            "latent_type": enum(TYPES, cust["type"]),
            "ring_id": ring_text,
        },
    )
    tables = {
        "customers": customers,
        "orders": orders,
        "refund_requests": refunds,
        "outcomes": outcomes,
        "identity_links": identity_links,
    }
    return World(config, tables, oracle_refunds, oracle_customers)
