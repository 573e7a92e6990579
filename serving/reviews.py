"""The review queue: a case for every `manual_review` decision, claimed, resolved, learnt from.

A case is opened in the transaction that records its decision (`serving.db.DecisionLog`), so
none is lost, and its id is the decision's. A reviewer claims a case for `claim_minutes`; the
claim lapses by itself, so a case left open by someone who went home goes back to the queue.
Resolving is a compare-and-set: one conditional UPDATE that only matches a case still open and
not claimed by someone else. Of two reviewers resolving the same case, exactly one UPDATE
matches; the other is told who won (409), and the winner's resolution is never overwritten
(the resolutions table is keyed by case as well).

Each resolution becomes an outcome of the refund request (`source="reviewer"`, known at the
moment of the resolution), appended through the online builder in the same transaction, so the
next decision's features and the next training table see it. A reviewer's word is weaker than
a warehouse check; the training table keeps the label's source, so it can be weighed or left out.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from features.online import OnlineFeatureBuilder
from features.store import EVENT_TABLES, EventStore
from refund_risk.errors import DataValidationError, NotFoundError
from serving.db import API_KEYS, DECISIONS, REVIEW_CASES, REVIEW_RESOLUTIONS
from serving.errors import ConflictError

OUTCOME_SOURCE = "reviewer"
"""The outcome source of every review resolution."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Resolution(StrEnum):
    """What a reviewer decided about a refund request."""

    APPROVE = "approve"
    APPROVE_PARTIAL = "approve_partial"
    REQUIRE_RETURN = "require_return"
    REJECT_ABUSE = "reject_abuse"

    @property
    def is_abusive(self) -> bool:
        """The label the resolution gives the refund request."""
        return self is Resolution.REJECT_ABUSE

    @property
    def label(self) -> str:
        """The resolution in words."""
        return RESOLUTION_LABELS[self]


RESOLUTION_LABELS: dict[Resolution, str] = {
    Resolution.APPROVE: "Approve refund",
    Resolution.APPROVE_PARTIAL: "Approve partial refund",
    Resolution.REQUIRE_RETURN: "Require return",
    Resolution.REJECT_ABUSE: "Reject as abuse",
}


class CaseStatus(StrEnum):
    """Which cases a listing shows."""

    OPEN = "open"
    """Not resolved (claimed or not)."""
    UNCLAIMED = "unclaimed"
    """Not resolved, and nobody's claim is in force."""
    CLAIMED = "claimed"
    """Not resolved, with a claim in force."""
    RESOLVED = "resolved"
    ALL = "all"


class CaseSort(StrEnum):
    """How a listing is ordered."""

    AGE = "age"
    """Oldest first: the queue's default, against the SLA."""
    RISK = "risk"
    """Highest abuse score first."""
    AMOUNT = "amount"
    """Largest amount first."""


@dataclass(frozen=True)
class CaseQuery:
    """Filters, order and page of a case listing."""

    status: CaseStatus = CaseStatus.OPEN
    tier: str | None = None
    reason: str | None = None
    category: str | None = None
    min_amount: float | None = None
    max_amount: float | None = None
    min_age_hours: float | None = None
    max_age_hours: float | None = None
    sort: CaseSort = CaseSort.AGE
    descending: bool | None = None
    """None: the sort's natural direction (oldest, riskiest, largest first)."""
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class CaseSummary:
    """One case as the queue lists it."""

    case_id: str
    refund_id: str
    customer_id: str
    opened_at: datetime
    age_hours: float
    status: str
    claimed_by: str | None
    claimed_until: datetime | None
    resolved_at: datetime | None
    abuse_score: float | None
    tier: str
    amount_requested: float
    rule_id: str
    reason: str | None
    reason_detail: str | None
    category: str | None
    resolution: str | None
    version: int

    def claimed_now(self, now: datetime) -> bool:
        """Whether someone's claim is in force at `now`."""
        return (
            self.status == "open"
            and self.claimed_by is not None
            and self.claimed_until is not None
            and self.claimed_until > now
        )


@dataclass(frozen=True)
class CasePage:
    """A page of cases and how many match in all."""

    items: list[CaseSummary]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class ResolutionRecord:
    """A stored resolution."""

    case_id: str
    refund_id: str
    decision: str
    amount: float | None
    note: str
    reviewer: str
    resolved_at: datetime
    outcome_id: str


@dataclass(frozen=True)
class CaseRecord:
    """A case with the decision that opened it, the request, and its resolution if any."""

    summary: CaseSummary
    decision: dict[str, Any]
    request: dict[str, Any]
    resolution: ResolutionRecord | None


@dataclass(frozen=True)
class TimelineEvent:
    """One thing in a customer's history."""

    at: datetime
    kind: str
    """account, order, shipped, delivered, refund, outcome"""
    text: str
    ref: str | None = None
    flag: bool = False
    """True for what should catch a reviewer's eye (an abusive outcome)."""


@dataclass(frozen=True)
class LinkedAccount:
    """Another account sharing a device, address or payment instrument with the customer."""

    customer_id: str
    shared: list[str]
    refunds: int
    abusive_refunds: int


@dataclass(frozen=True)
class SimilarCase:
    """A past refund request like this one, and how it ended."""

    refund_id: str
    at: datetime
    amount_requested: float
    abuse_score: float | None
    ended: str
    abusive: bool | None
    source: str
    """`review` (resolved in this queue) or `history` (an outcome in the event store)."""


class ReviewQueue:
    """The queue's reads and writes over the service's database."""

    def __init__(
        self,
        engine: Engine,
        store: EventStore,
        builder: OnlineFeatureBuilder,
        claim_minutes: float,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.engine = engine
        self.store = store
        self.builder = builder
        self.claim = timedelta(minutes=claim_minutes)
        self.clock = clock

    # --- listing -------------------------------------------------------------------------------

    def _summary_query(self) -> sa.Select[Any]:
        c, d, res = REVIEW_CASES, DECISIONS, REVIEW_RESOLUTIONS
        refunds, orders = EVENT_TABLES["refund_requests"], EVENT_TABLES["orders"]
        return (
            sa.select(
                c,
                d.c.abuse_score,
                d.c.tier,
                d.c.amount_requested,
                d.c.rule_id,
                refunds.c.reason,
                refunds.c.reason_detail,
                orders.c.category,
                res.c.decision.label("resolution"),
            )
            .join(d, d.c.decision_id == c.c.case_id)
            .outerjoin(refunds, refunds.c.refund_id == c.c.refund_id)
            .outerjoin(orders, orders.c.order_id == refunds.c.order_id)
            .outerjoin(res, res.c.case_id == c.c.case_id)
        )

    @staticmethod
    def _summary(row: Any, now: datetime) -> CaseSummary:
        m = row._mapping
        return CaseSummary(
            case_id=m["case_id"],
            refund_id=m["refund_id"],
            customer_id=m["customer_id"],
            opened_at=m["opened_at"],
            age_hours=max((now - m["opened_at"]).total_seconds() / 3600.0, 0.0),
            status=m["status"],
            claimed_by=m["claimed_by"],
            claimed_until=m["claimed_until"],
            resolved_at=m["resolved_at"],
            abuse_score=m["abuse_score"],
            tier=m["tier"],
            amount_requested=float(m["amount_requested"]),
            rule_id=m["rule_id"],
            reason=m["reason"],
            reason_detail=m["reason_detail"],
            category=m["category"],
            resolution=m["resolution"],
            version=int(m["version"]),
        )

    def list_cases(self, query: CaseQuery) -> CasePage:
        """The cases matching `query`, one page of them, and how many match in all."""
        now = self.clock()
        c, d = REVIEW_CASES, DECISIONS
        refunds, orders = EVENT_TABLES["refund_requests"], EVENT_TABLES["orders"]
        where: list[Any] = []
        claimed = sa.and_(c.c.claimed_by.is_not(None), c.c.claimed_until > now)
        if query.status == CaseStatus.OPEN:
            where.append(c.c.status == "open")
        elif query.status == CaseStatus.UNCLAIMED:
            where += [c.c.status == "open", sa.not_(claimed)]
        elif query.status == CaseStatus.CLAIMED:
            where += [c.c.status == "open", claimed]
        elif query.status == CaseStatus.RESOLVED:
            where.append(c.c.status == "resolved")
        if query.tier:
            where.append(d.c.tier == query.tier)
        if query.reason:
            where.append(
                sa.or_(refunds.c.reason == query.reason, refunds.c.reason_detail == query.reason)
            )
        if query.category:
            where.append(orders.c.category == query.category)
        if query.min_amount is not None:
            where.append(d.c.amount_requested >= query.min_amount)
        if query.max_amount is not None:
            where.append(d.c.amount_requested <= query.max_amount)
        if query.min_age_hours is not None:
            where.append(c.c.opened_at <= now - timedelta(hours=query.min_age_hours))
        if query.max_age_hours is not None:
            where.append(c.c.opened_at >= now - timedelta(hours=query.max_age_hours))
        key, natural_desc = {
            CaseSort.AGE: (c.c.opened_at, False),
            CaseSort.RISK: (d.c.abuse_score, True),
            CaseSort.AMOUNT: (d.c.amount_requested, True),
        }[query.sort]
        descending = natural_desc if query.descending is None else query.descending
        order = [key.desc().nulls_last() if descending else key.asc().nulls_last()]
        order.append(c.c.case_id.asc())  # a stable order, so pages never repeat a case
        listing = self._summary_query().where(*where).order_by(*order)
        count = (
            sa.select(sa.func.count())
            .select_from(c)
            .join(d, d.c.decision_id == c.c.case_id)
            .outerjoin(refunds, refunds.c.refund_id == c.c.refund_id)
            .outerjoin(orders, orders.c.order_id == refunds.c.order_id)
            .where(*where)
        )
        with self.engine.connect() as connection:
            total = int(connection.execute(count).scalar_one())
            rows = connection.execute(listing.limit(query.limit).offset(query.offset)).all()
        return CasePage([self._summary(r, now) for r in rows], total, query.limit, query.offset)

    def get(self, case_id: str) -> CaseRecord:
        """One case with its decision, request and resolution; NotFoundError if unknown."""
        now = self.clock()
        d, res = DECISIONS, REVIEW_RESOLUTIONS
        with self.engine.connect() as connection:
            row = connection.execute(
                self._summary_query()
                .add_columns(d.c.response, d.c.request)
                .where(REVIEW_CASES.c.case_id == case_id)
            ).first()
            if row is None:
                raise NotFoundError(f"no review case {case_id!r}")
            stored = connection.execute(sa.select(res).where(res.c.case_id == case_id)).first()
        resolution = None if stored is None else ResolutionRecord(**stored._mapping)
        return CaseRecord(
            self._summary(row, now),
            json.loads(row._mapping["response"]),
            json.loads(row._mapping["request"]),
            resolution,
        )

    def open_counts(self, sla_hours: float) -> dict[str, Any]:
        """Open cases now: how many, the oldest's age in hours, how many are past the SLA."""
        now = self.clock()
        c = REVIEW_CASES
        with self.engine.connect() as connection:
            count, oldest = connection.execute(
                sa.select(sa.func.count(), sa.func.min(c.c.opened_at)).where(c.c.status == "open")
            ).one()
            over = connection.execute(
                sa.select(sa.func.count()).where(
                    c.c.status == "open", c.c.opened_at <= now - timedelta(hours=sla_hours)
                )
            ).scalar_one()
        return {
            "open": int(count),
            "oldest_hours": None if oldest is None else (now - oldest).total_seconds() / 3600.0,
            "over_sla": int(over),
        }

    # --- claiming ------------------------------------------------------------------------------

    def _free_for(self, who: str, now: datetime) -> Any:
        """The case is open and not claimed by anyone else (a lapsed claim counts as none)."""
        c = REVIEW_CASES
        return sa.and_(
            c.c.status == "open",
            sa.or_(c.c.claimed_by.is_(None), c.c.claimed_by == who, c.c.claimed_until <= now),
        )

    def _refusal(self, connection: Connection, case_id: str, now: datetime) -> Exception:
        """Why a conditional update matched nothing: the case is unknown, resolved or claimed."""
        row = connection.execute(
            sa.select(REVIEW_CASES).where(REVIEW_CASES.c.case_id == case_id)
        ).first()
        if row is None:
            return NotFoundError(f"no review case {case_id!r}")
        if row.status == "resolved":
            res = connection.execute(
                sa.select(REVIEW_RESOLUTIONS.c.reviewer, REVIEW_RESOLUTIONS.c.decision).where(
                    REVIEW_RESOLUTIONS.c.case_id == case_id
                )
            ).first()
            by = "" if res is None else f" by {res.reviewer} ({res.decision})"
            return ConflictError(f"case {case_id} was already resolved{by}")
        until = row.claimed_until
        return ConflictError(
            f"case {case_id} is claimed by {row.claimed_by} until {until:%Y-%m-%d %H:%M:%S} UTC"
            if until is not None and until > now
            else f"case {case_id} changed meanwhile; reload it"
        )

    def claim_case(self, case_id: str, who: str) -> CaseSummary:
        """Claim a case for `claim_minutes` (renewing one's own claim); 409 if someone else
        holds it or it is resolved."""
        now = self.clock()
        c = REVIEW_CASES
        with self.engine.begin() as connection:
            changed = connection.execute(
                sa.update(c)
                .where(c.c.case_id == case_id, self._free_for(who, now))
                .values(claimed_by=who, claimed_until=now + self.claim, version=c.c.version + 1)
            ).rowcount
            if changed != 1:
                raise self._refusal(connection, case_id, now)
        return self.get(case_id).summary

    def next_case(
        self, who: str, max_open_claims: int, max_amount: float | None = None
    ) -> CaseSummary | None:
        """Claim the most urgent case nobody holds that `who` may decide, or None if there is
        none. Most urgent is oldest first (the SLA runs from opening), then riskiest; cases
        asking back more than `max_amount` are left to reviewers allowed to decide them. A
        reviewer already holding `max_open_claims` open cases gets 409: finish one first.

        The claim is written only if the case is still free and the cap still kept at that
        moment, so two reviewers asking at once never get the same case."""
        now = self.clock()
        c, d = REVIEW_CASES, DECISIONS
        free = sa.and_(
            c.c.status == "open", sa.or_(c.c.claimed_by.is_(None), c.c.claimed_until <= now)
        )
        held = (
            sa.select(sa.func.count())
            .select_from(c)
            .where(c.c.status == "open", c.c.claimed_by == who, c.c.claimed_until > now)
            .scalar_subquery()
        )
        inner = REVIEW_CASES.alias("candidate")
        pick = (
            sa.select(inner.c.case_id)
            .join(d, d.c.decision_id == inner.c.case_id)
            .where(
                inner.c.status == "open",
                sa.or_(inner.c.claimed_by.is_(None), inner.c.claimed_until <= now),
                sa.true() if max_amount is None else d.c.amount_requested <= max_amount,
            )
            .order_by(
                inner.c.opened_at, sa.func.coalesce(d.c.abuse_score, 0.0).desc(), inner.c.case_id
            )
            .limit(1)
            .scalar_subquery()
        )
        for _ in range(20):  # another reviewer took the picked case meanwhile: pick again
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    # One reviewer's hand-outs in turn, so two at once cannot both pass the cap.
                    connection.execute(
                        sa.select(API_KEYS.c.key_id)
                        .where(API_KEYS.c.key_id == who)
                        .with_for_update()
                    )
                holding = connection.execute(sa.select(held)).scalar_one()
                if holding >= max_open_claims:
                    raise ConflictError(
                        f"you hold {holding} open case(s), the most one reviewer may hold at "
                        f"once is {max_open_claims}: resolve or release one first"
                    )
                candidate = connection.execute(sa.select(pick)).scalar()
                if candidate is None:
                    return None
                # The case must still be free, and the cap still kept, when the claim is
                # written: of two reviewers who picked the same case, one claims it.
                taken = connection.execute(
                    sa.update(c)
                    .where(c.c.case_id == candidate, free, held < max_open_claims)
                    .values(claimed_by=who, claimed_until=now + self.claim, version=c.c.version + 1)
                ).rowcount
            if taken == 1:
                return self.get(candidate).summary
        return None

    def held_by_reviewer(self) -> dict[str, int]:
        """Open cases each reviewer holds a claim on now, by key id."""
        now, c = self.clock(), REVIEW_CASES
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(c.c.claimed_by, sa.func.count())
                .where(c.c.status == "open", c.c.claimed_by.is_not(None), c.c.claimed_until > now)
                .group_by(c.c.claimed_by)
            ).all()
        return {str(who): int(n) for who, n in rows}

    def release(self, case_id: str, who: str, force: bool = False) -> CaseSummary:
        """Give a claimed case back to the queue; only its claimant may, unless `force`."""
        now = self.clock()
        c = REVIEW_CASES
        mine = sa.true() if force else c.c.claimed_by == who
        with self.engine.begin() as connection:
            changed = connection.execute(
                sa.update(c)
                .where(c.c.case_id == case_id, c.c.status == "open", mine)
                .values(claimed_by=None, claimed_until=None, version=c.c.version + 1)
            ).rowcount
            if changed != 1:
                refusal = self._refusal(connection, case_id, now)
                if isinstance(refusal, ConflictError) and "changed meanwhile" in str(refusal):
                    refusal = ConflictError(f"case {case_id} is not claimed by you")
                raise refusal
        return self.get(case_id).summary

    # --- resolving -----------------------------------------------------------------------------

    def resolve(
        self,
        case_id: str,
        who: str,
        decision: Resolution,
        note: str = "",
        amount: float | None = None,
        expected_version: int | None = None,
    ) -> ResolutionRecord:
        """Resolve an open case: store the resolution and append it as an outcome, at once.

        Exactly one of several concurrent resolutions wins; the others get ConflictError. With
        `expected_version`, the case must also be unchanged since the reviewer read it.
        """
        now = self.clock()
        c, res = REVIEW_CASES, REVIEW_RESOLUTIONS
        note = note.strip()
        with self.engine.begin() as connection:
            amount_requested = connection.execute(
                sa.select(DECISIONS.c.amount_requested).where(DECISIONS.c.decision_id == case_id)
            ).scalar()
            if amount_requested is None:
                raise NotFoundError(f"no review case {case_id!r}")
            amount = _checked_amount(decision, amount, float(amount_requested))
            conditions = [c.c.case_id == case_id, self._free_for(who, now)]
            if expected_version is not None:
                conditions.append(c.c.version == expected_version)
            changed = connection.execute(
                sa.update(c)
                .where(*conditions)
                .values(
                    status="resolved",
                    resolved_at=now,
                    claimed_by=who,
                    claimed_until=None,
                    version=c.c.version + 1,
                )
            ).rowcount
            if changed != 1:
                raise self._refusal(connection, case_id, now)
            refund_id = connection.execute(
                sa.select(c.c.refund_id).where(c.c.case_id == case_id)
            ).scalar_one()
            record = ResolutionRecord(
                case_id=case_id,
                refund_id=refund_id,
                decision=decision.value,
                amount=amount,
                note=note,
                reviewer=who,
                resolved_at=now,
                outcome_id=f"review-{case_id}",
            )
            connection.execute(sa.insert(res).values(**record.__dict__))
            outcome = {
                "outcome_id": record.outcome_id,
                "refund_id": refund_id,
                "is_abusive": decision.is_abusive,
                "known_at": now,
                "source": OUTCOME_SOURCE,
            }
            self.store.write({"outcomes": [outcome]}, connection)
        # Once committed, as everywhere: memory never holds what the database may not have.
        self.builder.remember({"outcomes": [outcome]})
        return record

    # --- what a reviewer needs beside the case -------------------------------------------------

    def history(self, customer_id: str, limit: int = 60) -> list[TimelineEvent]:
        """The customer's history from the event store, newest first."""
        rows = self.store.histories([customer_id])
        events: list[TimelineEvent] = []
        for r in rows["customers"]:
            events.append(
                TimelineEvent(r["signup_at"], "account", f"Account opened ({r['region']})")
            )
        for o in rows["orders"]:
            amount = f"{o['amount']:,.2f}"
            events.append(
                TimelineEvent(
                    o["ordered_at"],
                    "order",
                    f"Ordered {o['category']} for {amount} ({o['item_count']} item(s), "
                    f"{o['payment_method']})",
                    o["order_id"],
                )
            )
            if o["delivered_at"] is not None:
                evidence = o["delivery_evidence"]
                events.append(
                    TimelineEvent(
                        o["delivered_at"],
                        "delivered",
                        f"Delivered (evidence: {evidence})",
                        o["order_id"],
                    )
                )
        for f in rows["refund_requests"]:
            events.append(
                TimelineEvent(
                    f["requested_at"],
                    "refund",
                    f"Asked {f['amount_requested']:,.2f} back: {words(f['reason_detail'])} "
                    f"({words(f['refund_type'])}, {words(f['order_stage'])})",
                    f["refund_id"],
                )
            )
        for x in rows["outcomes"]:
            verdict = "abusive" if x["is_abusive"] else "not abusive"
            events.append(
                TimelineEvent(
                    x["known_at"],
                    "outcome",
                    f"Refund {x['refund_id']} found {verdict} ({x['source'].replace('_', ' ')})",
                    x["refund_id"],
                    flag=bool(x["is_abusive"]),
                )
            )
        events.sort(key=lambda e: (e.at, e.kind), reverse=True)
        return events[:limit]

    def linked_accounts(self, customer_id: str, limit: int = 20) -> list[LinkedAccount]:
        """Other accounts that share a device, address or payment instrument with the customer,
        with their refunds and how many of those ended confirmed abusive."""
        own = self.store.histories([customer_id])["identity_links"]
        pairs = {(r["kind"], r["fingerprint"]) for r in own}
        if not pairs:
            return []
        shared: dict[str, set[str]] = defaultdict(set)
        for link in self.store.fingerprint_links(pairs):
            if link["customer_id"] != customer_id:
                shared[link["customer_id"]].add(link["kind"])
        others = sorted(shared, key=lambda cid: (-len(shared[cid]), cid))[:limit]
        rows = self.store.histories(others)
        refunds: Counter[str] = Counter(r["customer_id"] for r in rows["refund_requests"])
        owner = {r["refund_id"]: r["customer_id"] for r in rows["refund_requests"]}
        latest: dict[str, tuple[Any, str, bool]] = {}
        for x in rows["outcomes"]:
            key = (x["known_at"], x["outcome_id"], bool(x["is_abusive"]))
            if x["refund_id"] not in latest or key > latest[x["refund_id"]]:
                latest[x["refund_id"]] = key
        abusive: Counter[str] = Counter(
            owner[rid] for rid, (_, _, bad) in latest.items() if bad and rid in owner
        )
        accounts = [
            LinkedAccount(cid, sorted(shared[cid]), refunds[cid], abusive[cid]) for cid in others
        ]
        accounts.sort(key=lambda a: (-a.abusive_refunds, -len(a.shared), a.customer_id))
        return accounts

    def similar(self, record: CaseRecord, limit: int = 6) -> list[SimilarCase]:
        """Past requests with the same detailed reason and category, and how they ended:
        cases resolved here (closest score first), then outcomes in the event store
        (closest amount first)."""
        summary = record.summary
        if summary.reason_detail is None or summary.category is None:
            return []
        refunds, orders = EVENT_TABLES["refund_requests"], EVENT_TABLES["orders"]
        outcomes = EVENT_TABLES["outcomes"]
        c, d, res = REVIEW_CASES, DECISIONS, REVIEW_RESOLUTIONS
        same = sa.and_(
            refunds.c.reason_detail == summary.reason_detail,
            orders.c.category == summary.category,
            refunds.c.refund_id != summary.refund_id,
        )
        score = summary.abuse_score if summary.abuse_score is not None else 0.0
        reviewed = (
            sa.select(
                c.c.refund_id,
                res.c.resolved_at,
                d.c.amount_requested,
                d.c.abuse_score,
                res.c.decision,
            )
            .join(res, res.c.case_id == c.c.case_id)
            .join(d, d.c.decision_id == c.c.case_id)
            .join(refunds, refunds.c.refund_id == c.c.refund_id)
            .join(orders, orders.c.order_id == refunds.c.order_id)
            .where(same)
            .order_by(sa.func.abs(sa.func.coalesce(d.c.abuse_score, 0.0) - score))
            .limit(limit)
        )
        history = (
            sa.select(
                refunds.c.refund_id,
                outcomes.c.known_at,
                refunds.c.amount_requested,
                outcomes.c.is_abusive,
                outcomes.c.source,
                outcomes.c.outcome_id,
            )
            .join(refunds, refunds.c.refund_id == outcomes.c.refund_id)
            .join(orders, orders.c.order_id == refunds.c.order_id)
            .where(same, outcomes.c.source != OUTCOME_SOURCE)
            .order_by(
                sa.func.abs(refunds.c.amount_requested - summary.amount_requested),
                refunds.c.refund_id,
                outcomes.c.known_at.desc(),
            )
            .limit(limit * 3)
        )
        found: list[SimilarCase] = []
        with self.engine.connect() as connection:
            for r in connection.execute(reviewed):
                verdict = Resolution(r.decision)
                found.append(
                    SimilarCase(
                        r.refund_id,
                        r.resolved_at,
                        float(r.amount_requested),
                        r.abuse_score,
                        f"reviewed: {verdict.label.lower()}",
                        verdict.is_abusive,
                        "review",
                    )
                )
            seen = {s.refund_id for s in found}
            for h in connection.execute(history):
                if len(found) >= limit:
                    break
                if h.refund_id in seen:  # the latest outcome of each refund only
                    continue
                seen.add(h.refund_id)
                verdict_text = "abusive" if h.is_abusive else "not abusive"
                found.append(
                    SimilarCase(
                        h.refund_id,
                        h.known_at,
                        float(h.amount_requested),
                        None,
                        f"{verdict_text} ({h.source.replace('_', ' ')})",
                        bool(h.is_abusive),
                        "history",
                    )
                )
        return found[:limit]


def words(code: str) -> str:
    """A code as words: `not_as_described` -> `not as described`."""
    return code.replace("_", " ")


def _checked_amount(decision: Resolution, amount: float | None, requested: float) -> float | None:
    """The amount a resolution refunds: required for a partial refund, within the request."""
    if decision is Resolution.APPROVE_PARTIAL:
        if amount is None or not math.isfinite(amount) or amount <= 0:
            raise DataValidationError("a partial refund needs an amount above 0")
        if amount > requested + 1e-9:
            raise DataValidationError(
                f"the partial amount {amount:.2f} is more than the {requested:.2f} asked back"
            )
        return round(amount, 2)
    if decision is Resolution.APPROVE:
        return requested
    return None
