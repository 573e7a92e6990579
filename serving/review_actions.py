"""One handler per review action, called by both the API (`serving.ops_api`) and the pages
(`serving.ops_pages`).

Each takes the caller and what was asked, calls the queue (`serving.reviews`) or the
overrides (`serving.overrides`), and returns the API's answer model; the API returns it as
JSON, a page renders or redirects with it. Errors are the project's own (a conflict, a case
that does not exist, a refused value): the API maps them to status codes, the pages to a
message. So a rule of an action (who may release whose claim, what a resolution records) is
written once, and both doors keep it.
"""

from __future__ import annotations

from datetime import datetime

from starlette.concurrency import run_in_threadpool

from serving.errors import PermissionDeniedError
from serving.ops_access import Caller
from serving.ops_schemas import (
    CaseDetailOut,
    CaseOut,
    CasePageOut,
    LinkedAccountOut,
    NextCaseOut,
    OverridesOut,
    ResolutionOut,
    ResolveIn,
    SimilarCaseOut,
    TierOut,
    TierPinIn,
    TierPinOut,
    TimelineEventOut,
    WatchIn,
    WatchOut,
)
from serving.reviewers import ReviewerLimits
from serving.reviews import CaseQuery, CaseSort, CaseStatus, CaseSummary
from serving.schemas import DecisionOut, Privileges
from serving.service import Service

# --- reading cases -------------------------------------------------------------------------------


def case_out(summary: CaseSummary, sla_hours: float, now: datetime) -> CaseOut:
    """A case for the API, with its claim and SLA state as of `now`."""
    return CaseOut(
        **summary.__dict__,
        claimed=summary.claimed_now(now),
        over_sla=summary.status == "open" and summary.age_hours >= sla_hours,
    )


def case_now(service: Service, summary: CaseSummary) -> CaseOut:
    """A case for the API, with its claim and SLA state as of the review queue's clock."""
    return case_out(summary, service.settings.review_sla_hours, service.reviews.clock())


def case_query(
    status: CaseStatus,
    tier: str | None,
    reason: str | None,
    category: str | None,
    min_amount: float | None,
    max_amount: float | None,
    min_age_hours: float | None,
    max_age_hours: float | None,
    sort: CaseSort,
    order: str | None,
    limit: int,
    offset: int,
) -> CaseQuery:
    """The queue's query from the filters the API and the queue page take (empty is none)."""
    return CaseQuery(
        status=status,
        tier=tier or None,
        reason=reason or None,
        category=category or None,
        min_amount=min_amount,
        max_amount=max_amount,
        min_age_hours=min_age_hours,
        max_age_hours=max_age_hours,
        sort=sort,
        descending=None if order is None else order == "desc",
        limit=limit,
        offset=offset,
    )


def list_cases(caller: Caller, query: CaseQuery) -> CasePageOut:
    """One page of cases, each with its claim and SLA state as of the queue's clock."""
    service = caller.service
    page = service.reviews.list_cases(query)
    now = service.reviews.clock()
    sla = service.settings.review_sla_hours
    return CasePageOut(
        items=[case_out(s, sla, now) for s in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


def case_detail(service: Service, case_id: str) -> CaseDetailOut:
    """Everything about a case that a reviewer reads: the API's and the case page's content."""
    queue = service.reviews
    record = queue.get(case_id)
    summary = record.summary
    decision = DecisionOut.model_validate(record.decision)
    tiers = service.snapshot.policies.tiers
    try:
        tier = tiers.get(decision.tier)
    except Exception:  # a tier the tiers file in force no longer has
        tier = tiers.default
    active = service.overrides.active(summary.customer_id)
    return CaseDetailOut(
        case=case_now(service, summary),
        decision=decision,
        request=record.request,
        resolution=None
        if record.resolution is None
        else ResolutionOut.model_validate(record.resolution),
        tier=TierOut(
            name=tier.name,
            source=decision.tier_source,
            description=tier.description,
            privileges=Privileges(
                refund_before_return_allowed=tier.refund_before_return_allowed,
                auto_approve_limit=tier.auto_approve_limit,
                max_outstanding_unreturned=tier.max_outstanding_unreturned,
            ),
        ),
        pinned=None
        if active is None or active.pin is None
        else TierPinOut.model_validate(active.pin),
        watchlisted=None
        if active is None or active.watch is None
        else WatchOut.model_validate(active.watch),
        history=[TimelineEventOut.model_validate(e) for e in queue.history(summary.customer_id)],
        linked_accounts=[
            LinkedAccountOut.model_validate(a) for a in queue.linked_accounts(summary.customer_id)
        ],
        similar=[SimilarCaseOut.model_validate(s) for s in queue.similar(record)],
    )


# --- working cases -------------------------------------------------------------------------------


def claim(caller: Caller, case_id: str) -> CaseOut:
    """Take a case for the claim period (claiming one's own claim again renews it); a
    conflict when someone else holds it or it is resolved."""
    service = caller.service
    return case_now(service, service.reviews.claim_case(case_id, caller.who))


async def take_next(caller: Caller, limits: ReviewerLimits) -> NextCaseOut:
    """Claim the most urgent free case within the caller's limits (none when there is no such
    case); a conflict when the caller already holds their most open cases. The queue's
    claim runs off the event loop: it waits for the database's row locks."""
    service = caller.service
    name = service.keys.names().get(caller.who)
    max_amount, cap = limits.for_key(caller.who, name, service.settings.review_max_open_claims)
    queue = service.reviews
    summary = await run_in_threadpool(queue.next_case, caller.who, cap, max_amount)
    held = queue.held_by_reviewer().get(caller.who, 0)
    return NextCaseOut(
        case=None if summary is None else case_now(service, summary),
        held=held,
        max_open_claims=cap,
        max_amount=max_amount,
    )


def release(caller: Caller, case_id: str, force: bool = False) -> CaseOut:
    """Give the case back to the queue; only its claimant may, or an admin with `force`."""
    if force and not caller.is_admin:
        raise PermissionDeniedError("only an admin key may release someone else's claim")
    service = caller.service
    return case_now(service, service.reviews.release(case_id, caller.who, force=force))


def resolve(caller: Caller, case_id: str, body: ResolveIn) -> ResolutionOut:
    """Decide the case. Of two reviewers resolving the same case, exactly one wins; the other
    gets a conflict and the winner's decision stands. The resolution becomes an outcome of
    the refund request (source `reviewer`)."""
    record = caller.service.reviews.resolve(
        case_id, caller.who, body.decision, body.note, body.amount, body.expected_version
    )
    return ResolutionOut.model_validate(record)


# --- overrides -----------------------------------------------------------------------------------


def list_overrides(caller: Caller) -> OverridesOut:
    """Every tier pin and watch-list entry in force."""
    overrides = caller.service.overrides
    return OverridesOut(
        pins=[TierPinOut.model_validate(p) for p in overrides.pins()],
        watchlist=[WatchOut.model_validate(w) for w in overrides.watchlist()],
    )


def pin_tier(caller: Caller, body: TierPinIn) -> TierPinOut:
    """Pin a customer's tier until `expires_at`, against the tiers of the policy in force."""
    service = caller.service
    pin = service.overrides.pin_tier(
        body.customer_id,
        body.tier,
        body.expires_at,
        body.reason,
        caller.who,
        service.snapshot.policies.tiers.names,
    )
    return TierPinOut.model_validate(pin)


def unpin_tier(caller: Caller, customer_id: str) -> None:
    """End a customer's tier pin: the model's tier applies again from the next decision."""
    caller.service.overrides.unpin(customer_id)


def watch(caller: Caller, body: WatchIn) -> WatchOut:
    """Put an account on the watch list."""
    entry = caller.service.overrides.watch(body.customer_id, body.reason, caller.who, body.until)
    return WatchOut.model_validate(entry)


def unwatch(caller: Caller, customer_id: str) -> None:
    """Take an account off the watch list."""
    caller.service.overrides.unwatch(customer_id)
