"""What the stored data can support: its size and span, and which models it can train now.

`check_data` works on the raw tables alone and follows the training code's own split rules
with the numbers of `data.minimums`, so "can be trained" here means the `train` command will
find what it needs; for a model that cannot, each missing piece is one sentence with the
figure needed and the figure the data has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from data import minimums as need
from data.schema import FINGERPRINT_COLUMNS, LINK_KINDS

DAYS_PER_MONTH = 365.25 / 12


@dataclass
class ModelReadiness:
    """Whether one model can be trained on the data, and if not, what is missing."""

    model: str
    ready: bool
    detail: str
    missing: list[str] = field(default_factory=list)
    advice: str = ""


@dataclass
class DataCheck:
    """Figures about the stored data and what it can train; plain data, ready to print."""

    first: pd.Timestamp | None
    last: pd.Timestamp | None
    months: float
    customers: int
    orders: int
    refund_requests: int
    labelled: int
    abusive: int
    fingerprint_coverage: dict[str, float]
    links_by_kind: dict[str, int]
    customers_with_links: float
    models: list[ModelReadiness]
    product_coverage: float = 0.0
    """Share of orders that name a product."""
    products: int = 0
    """Distinct products named on orders."""

    def format(self) -> str:
        """The check as plain text, one figure a line, then one block per model."""
        span = (
            f"{self.first:%Y-%m-%d} to {self.last:%Y-%m-%d} ({self.months:.1f} months)"
            if self.first is not None and self.last is not None
            else "no dated rows"
        )
        coverage = ", ".join(f"{c} {s:.1%}" for c, s in self.fingerprint_coverage.items())
        links = ", ".join(f"{k} {n:,}" for k, n in self.links_by_kind.items())
        lines = [
            f"history                    {span}",
            f"customers                  {self.customers:,}",
            f"orders                     {self.orders:,}",
            f"refund requests            {self.refund_requests:,}",
            f"labelled outcomes          {self.labelled:,} requests with an outcome, "
            f"{self.abusive:,} of them abusive",
            f"fingerprints on orders     {coverage}",
            f"identity links             {links}; "
            f"{self.customers_with_links:.1%} of customers have one",
            f"products on orders         {self.product_coverage:.1%} of orders name one of "
            f"{self.products:,} products"
            + ("" if self.products else " (per-product figures need product_id on orders)"),
        ]
        if self.customers_with_links < 1.0:
            lines.append(
                "                           (linked-account features are missing, not zero, "
                "for customers without a fingerprint of their kind)"
            )
        for m in self.models:
            verdict = "can be trained now" if m.ready else "cannot be trained yet"
            lines.append(f"{m.model}: {verdict}; {m.detail}")
            lines.extend(f"  - {problem}" for problem in m.missing)
            if m.advice:
                lines.append(f"  what to do: {m.advice}")
        return "\n".join(lines)


def check_data(tables: dict[str, pd.DataFrame]) -> DataCheck:
    """Count the data and judge, model by model, whether `train` can fit it now."""
    customers, orders = tables["customers"], tables["orders"]
    refunds, outcomes, links = (
        tables["refund_requests"],
        tables["outcomes"],
        tables["identity_links"],
    )
    stamps = pd.concat(
        [orders["ordered_at"], refunds["requested_at"], outcomes["known_at"]], ignore_index=True
    ).dropna()
    first = pd.Timestamp(stamps.min()) if len(stamps) else None
    last = pd.Timestamp(stamps.max()) if len(stamps) else None
    months = (last - first).days / DAYS_PER_MONTH if first is not None and last is not None else 0.0
    final = _final_labels(outcomes)
    labelled = refunds["refund_id"].isin(final.index)
    coverage = {
        column: float(orders[column].notna().mean()) if len(orders) else 0.0
        for column in FINGERPRINT_COLUMNS.values()
    }
    by_kind = links["kind"].value_counts().reindex(list(LINK_KINDS), fill_value=0)
    with_links = (
        float(customers["customer_id"].isin(links["customer_id"]).mean()) if len(customers) else 0.0
    )
    return DataCheck(
        first=first,
        last=last,
        months=months,
        customers=len(customers),
        orders=len(orders),
        refund_requests=len(refunds),
        labelled=int(labelled.sum()),
        abusive=int(final.reindex(refunds["refund_id"]).fillna(False).astype(bool).sum()),
        fingerprint_coverage=coverage,
        links_by_kind={str(k): int(n) for k, n in by_kind.items()},
        customers_with_links=with_links,
        models=[_tier_readiness(tables, last), _abuse_readiness(refunds, outcomes)],
        product_coverage=float(orders["product_id"].notna().mean()) if len(orders) else 0.0,
        products=int(orders["product_id"].nunique()),
    )


def _final_labels(outcomes: pd.DataFrame, before: pd.Timestamp | None = None) -> pd.Series:
    """Each refund's latest outcome (is_abusive), optionally only those known before `before`."""
    known = outcomes if before is None else outcomes[outcomes["known_at"] < before]
    ordered = known.sort_values(["known_at", "outcome_id"], kind="stable")
    return ordered.groupby("refund_id")["is_abusive"].last().astype(bool)


def _abuse_readiness(refunds: pd.DataFrame, outcomes: pd.DataFrame) -> ModelReadiness:
    """The abuse model: the time split of `training.dataset.plan_split` and the labels each
    period can know, as `build_abuse_dataset` and the calibration need them."""
    name = "abuse model"
    split = (
        f"its periods are train, {need.ABUSE_CALIBRATION_MONTHS} months of calibration and "
        f"{need.ABUSE_TEST_MONTHS} months of test, with a {need.ABUSE_LABEL_DELAY_DAYS}-day "
        "label delay"
    )
    if refunds.empty:
        return ModelReadiness(
            name,
            False,
            split,
            ["the abuse model needs refund requests: you have 0"],
            "import refund_requests.csv with the shop's refund requests",
        )
    at = refunds["requested_at"]
    data_end = pd.Timestamp(at.max())
    deploy_at = (data_end - pd.DateOffset(months=need.ABUSE_TEST_MONTHS)).to_period(
        "M"
    ).to_timestamp() + pd.DateOffset(months=1)
    label_cutoff = deploy_at - pd.Timedelta(days=need.ABUSE_LABEL_DELAY_DAYS)
    calibration_start = deploy_at - pd.DateOffset(months=need.ABUSE_CALIBRATION_MONTHS)
    if calibration_start <= pd.Timestamp(at.min()):
        span = (data_end - pd.Timestamp(at.min())).days / DAYS_PER_MONTH
        return ModelReadiness(
            name,
            False,
            split,
            [
                f"the abuse model needs refund requests from before {calibration_start:%Y-%m-%d} "
                f"(more than {need.ABUSE_TEST_MONTHS + need.ABUSE_CALIBRATION_MONTHS} months "
                f"before the last one): yours span {span:.1f} months"
            ],
            "import a longer history of refund requests",
        )
    known = _final_labels(outcomes, before=deploy_at).reindex(refunds["refund_id"])
    has = known.notna().to_numpy()
    abusive = known.fillna(False).astype(bool).to_numpy()
    train = (at < calibration_start).to_numpy() & has
    calibration = ((at >= calibration_start) & (at < label_cutoff)).to_numpy() & has
    cal_abusive = int((calibration & abusive).sum())
    cal_fine = int(calibration.sum()) - cal_abusive
    detail = (
        f"train before {calibration_start:%Y-%m-%d}, calibration to {label_cutoff:%Y-%m-%d}, "
        f"test from {deploy_at:%Y-%m-%d}; labels known by {deploy_at:%Y-%m-%d}"
    )
    missing = []
    if int(train.sum()) < need.ABUSE_MIN_TRAIN_LABELLED:
        missing.append(
            f"the abuse model needs at least {need.ABUSE_MIN_TRAIN_LABELLED} labelled request "
            f"in its train period (before {calibration_start:%Y-%m-%d}): "
            f"you have {int(train.sum())}"
        )
    if min(cal_abusive, cal_fine) < need.ABUSE_MIN_CALIBRATION_PER_CLASS:
        missing.append(
            f"the abuse model needs at least {need.ABUSE_MIN_CALIBRATION_PER_CLASS} abusive and "
            f"{need.ABUSE_MIN_CALIBRATION_PER_CLASS} not-abusive labelled request in its "
            f"calibration period ({calibration_start:%Y-%m-%d} to {label_cutoff:%Y-%m-%d}): "
            f"you have {cal_abusive} abusive and {cal_fine} not abusive"
        )
    if not (at >= deploy_at).any():
        missing.append(f"the abuse model needs refund requests from {deploy_at:%Y-%m-%d} on")
    advice = ""
    if missing:
        advice = (
            "import outcomes.csv (what the warehouse check, a chargeback or a reviewer found "
            "about each refund, and when); reviewer decisions in the service become outcomes too"
        )
    detail += "" if missing else f"; {split}"
    return ModelReadiness(name, not missing, detail, missing, advice)


def _tier_readiness(tables: dict[str, pd.DataFrame], end: pd.Timestamp | None) -> ModelReadiness:
    """The credit-tier model: the snapshot months of `training.tier.plan_tier_split` with the
    cutoff of `default_cutoff`, and the refund losses its fit months need."""
    name = "credit-tier model"
    orders, refunds = tables["orders"], tables["refund_requests"]
    days = need.CREDIT_TARGET_DAYS
    detail = (
        f"its target is a refund loss within {days} days of a monthly snapshot; it is tested on "
        f"the last {need.TIER_TEST_MONTHS} snapshot months whose {days} days are in the data"
    )
    if orders.empty or end is None:
        return ModelReadiness(
            name,
            False,
            detail,
            ["the credit-tier model needs orders: you have 0"],
            "import orders.csv",
        )
    start = (pd.Timestamp(orders["ordered_at"].min()) + pd.offsets.MonthBegin(1)).normalize()
    dates = list(pd.date_range(start, end, freq="MS"))
    horizon = pd.Timedelta(days=days)
    complete = [d for d in dates if d + horizon <= end]
    closed: list[pd.Timestamp] = []
    if len(complete) >= need.TIER_TEST_MONTHS:
        cutoff = complete[-need.TIER_TEST_MONTHS]
        closed = [d for d in dates if d + horizon <= cutoff]
    if not closed:
        # The shortest history that works: the first snapshot's window closes by the first
        # test month, and every test month's window closes by the end of the data.
        first_test = (start + horizon - pd.Timedelta(microseconds=1)) + pd.offsets.MonthBegin(1)
        last_test = first_test + pd.DateOffset(months=need.TIER_TEST_MONTHS - 1)
        return ModelReadiness(
            name,
            False,
            detail,
            [
                f"the credit-tier model needs its first snapshot month ({start:%Y-%m-%d}) "
                f"followed by {days} days of data, then {need.TIER_TEST_MONTHS} test months each "
                f"followed by {days} days: the data would have to run to "
                f"{last_test + horizon:%Y-%m-%d}, yours ends {end:%Y-%m-%d}"
            ],
            "import a longer history",
        )
    n_cal = need.TIER_CALIBRATION_MONTHS if len(closed) > need.TIER_CALIBRATION_MONTHS else 0
    fit = closed[: len(closed) - n_cal]
    # As `train tier --loss auto`: goods kept (by outcome or refund-only after delivery) first,
    # any refund request when the data holds none of those.
    losses = _fit_losses(tables, fit, horizon, kept_only=True)
    proxy = "kept goods or abuse found"
    if losses < need.TIER_MIN_FIT_LOSSES:
        losses = _fit_losses(tables, fit, horizon, kept_only=False)
        proxy = "any refund request (no refund-only claim on delivered goods, no abuse found)"
    detail = (
        f"fit on {len(fit)} snapshot month(s) from {fit[0]:%Y-%m-%d}, tested from "
        f"{cutoff:%Y-%m-%d}; {losses:,} customer-months with a refund loss to learn from "
        f"(a loss counted as {proxy})"
    )
    if losses < need.TIER_MIN_FIT_LOSSES:
        return ModelReadiness(
            name,
            False,
            detail,
            [
                f"the credit-tier model needs at least {need.TIER_MIN_FIT_LOSSES} customer-month "
                f"with a refund loss in its fit months ({fit[0]:%Y-%m-%d} to "
                f"{fit[-1] + horizon:%Y-%m-%d}): you have 0. A loss is a refund found abusive "
                "by an outcome, a refund-only request after delivery (the customer kept the "
                "goods) or, when the data has neither, any refund request; you have "
                f"{len(refunds):,} refund requests, none by a customer with earlier orders in "
                "those months"
            ],
            "import the shop's refund requests (cancellations and returns included) and the "
            "orders before them",
        )
    return ModelReadiness(name, True, detail)


def _fit_losses(
    tables: dict[str, pd.DataFrame],
    fit: list[pd.Timestamp],
    horizon: pd.Timedelta,
    kept_only: bool = True,
) -> int:
    """Customer-months in the fit snapshots whose customer had ordered before the snapshot and
    made a loss in the window after it: goods kept or abuse found (the tier target,
    `target_has_loss_90d`), or with `kept_only` off any refund request."""
    orders, refunds = tables["orders"], tables["refund_requests"]
    if kept_only:
        final = _final_labels(tables["outcomes"]).reindex(refunds["refund_id"])
        abusive = final.fillna(False).astype(bool).to_numpy()
        kept = (
            (refunds["refund_type"] == "refund_only") & (refunds["order_stage"] == "delivered")
        ).to_numpy()
        loss = refunds.loc[abusive | kept, ["customer_id", "requested_at"]]
    else:
        loss = refunds[["customer_id", "requested_at"]]
    first_order = orders.groupby("customer_id")["ordered_at"].min()
    count = 0
    for at in fit:
        window = loss[(loss["requested_at"] >= at) & (loss["requested_at"] < at + horizon)]
        who = pd.Index(window["customer_id"].unique())
        began = first_order.reindex(who)
        count += int((began < at).sum())
    return count
