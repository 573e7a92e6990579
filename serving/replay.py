"""The service run over the last days of a shop's history, as if it had been switched on then.

A shop that imports its history has the refunds of its past, but the service has decided
none of them: the ops panels (decisions by action, automation, the review queue, reviewers'
throughput) and the time to a decision have nothing to show until live requests come. Replaying
the history's last days through the service's own decision path fills them with what the
service would have done:

- the history up to the start of those days is stored as `features ingest --replace` stores it;
- then every row of those days is sent at its own time, in the order it happened, the way the
  shop's systems would have sent it: an account when opened, an order when placed (its shipping
  and delivery not yet known), a refund request as a decision request (its order as known at
  that moment), an outcome when it became known;
- a request sent to review is resolved when its outcome became known, as the outcome says
  (abusive: rejected as abuse; not: approved), by the reviewer `history`; one whose outcome came
  later, or never, stays open;
- last, the whole history is written as `features ingest` writes it, so the store ends holding
  what an ingest would (orders with their final shipping and delivery times, later outcomes).

Each decision is made and recorded at its request's time (the service's clock is set to it), so
the days of the dashboard are the history's days; the history must end near today for them to
fall in the dashboard's window (`refund-risk data generate --end-by today` does that for a
generated world). The decisions are recorded as any other: the decision log and review queue
of a replayed history are the ones the service goes on with.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd

from features.replay import TIME_COLUMNS
from features.store import EventStore, settings_engine
from refund_risk.errors import RefundRiskError
from refund_risk.settings import Settings
from serving.reviews import Resolution
from serving.schemas import EventsIn, RefundDecisionRequest
from serving.service import Service

REVIEWER = "history"
"""Who resolves the replayed review cases, as the reviewers' tables show it."""

_ORDER = {"customers": 0, "orders": 1, "outcomes": 2, "identity_links": 3, "refund_requests": 4}
"""Rows at the same moment: accounts, orders and what else was learnt first, refund requests
last, so a request is decided after everything recorded at its time (as the parity replay of
`features.replay` scores it)."""

REVIEW_ACTION = "manual_review"


@dataclass
class ReplayReport:
    """What a replay sent and what the service made of it."""

    start: datetime
    end: datetime
    actions: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    """Requests the service refused, by the error's kind (a history that breaks its rules)."""
    resolved: int = 0
    still_open: int = 0
    events: Counter[str] = field(default_factory=Counter)

    @property
    def decided(self) -> int:
        """Requests decided."""
        return sum(self.actions.values())


def _plain(value: Any) -> Any:
    """A cell as a plain Python value: missing as None, times as naive datetimes."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _as_known_at(order: Mapping[str, Any], when: datetime) -> dict[str, Any]:
    """The order as the shop knew it at `when`: shipping and delivery only once they happened."""
    known = dict(order)
    if known.get("shipped_at") is not None and known["shipped_at"] > when:
        known["shipped_at"] = None
    if known.get("delivered_at") is not None and known["delivered_at"] > when:
        known["delivered_at"] = None
        known["delivery_evidence"] = "none"
    return known


def split(
    tables: Mapping[str, pd.DataFrame], days: int
) -> tuple[datetime, datetime, dict[str, pd.DataFrame]]:
    """(start, end, history before start): the replay covers whole days, `days` of them, up to
    the history's latest refund request (`end`)."""
    requests = tables["refund_requests"]
    if requests.empty:
        raise RefundRiskError("the history has no refund request: there is nothing to replay")
    end = pd.Timestamp(requests["requested_at"].max()).to_pydatetime()
    start = datetime.combine(end.date() - timedelta(days=days - 1), datetime.min.time())
    cut = pd.Timestamp(start)
    before = {name: frame[frame[TIME_COLUMNS[name]] < cut] for name, frame in tables.items()}
    # Orders as known at the start: a shipping or delivery after it has not happened yet.
    orders = before["orders"].copy()
    orders.loc[orders["shipped_at"] >= cut, "shipped_at"] = pd.NaT
    late = orders["delivered_at"] >= cut
    orders.loc[late, "delivered_at"] = pd.NaT
    orders.loc[late, "delivery_evidence"] = "none"
    before["orders"] = orders
    return start, end, before


def _timeline(
    tables: Mapping[str, pd.DataFrame], start: datetime, end: datetime
) -> Iterator[tuple[datetime, str, dict[str, Any]]]:
    """Every row from `start` to `end`, in the order it happened."""
    items = []
    for name, frame in tables.items():
        times = frame[TIME_COLUMNS[name]]
        part = frame[(times >= pd.Timestamp(start)) & (times <= pd.Timestamp(end))]
        for row in _rows(part):
            items.append((row[TIME_COLUMNS[name]], _ORDER[name], name, row))
    items.sort(key=lambda item: (item[0], item[1]))
    for when, _, name, row in items:
        yield when, name, row


def replay_history(
    settings: Settings,
    tables: Mapping[str, pd.DataFrame],
    days: int,
    progress: Callable[[str, float], None] | None = None,
) -> ReplayReport:
    """Store the history before its last `days` days, replay those days through the service,
    then store the whole history (see the module's docstring)."""
    start, end, before = split(tables, days)
    store = EventStore.from_engine(settings_engine(settings))
    try:
        store.clear()
        store.write_frames(before)
    finally:
        store.dispose()
    service = Service.start(settings)
    try:
        report = asyncio.run(_replay(service, tables, start, end, progress))
    finally:
        service.close()
    store = EventStore.from_engine(settings_engine(settings))
    try:
        store.write_frames(dict(tables))
    finally:
        store.dispose()
    return report


async def _replay(
    service: Service,
    tables: Mapping[str, pd.DataFrame],
    start: datetime,
    end: datetime,
    progress: Callable[[str, float], None] | None,
) -> ReplayReport:
    report = ReplayReport(start, end)
    orders = {row["order_id"]: row for row in _rows(tables["orders"])}
    cases: dict[str, str] = {}
    clock = {"now": start}
    service.clock = service.reviews.clock = lambda: clock["now"]
    timeline = list(_timeline(tables, start, end))
    for i, (when, name, row) in enumerate(timeline):
        clock["now"] = when
        if progress is not None and i % 500 == 0:
            progress("replaying", i / max(len(timeline), 1))
        report.events[name] += 1
        if name == "refund_requests":
            order = _as_known_at(orders[row["order_id"]], when)
            body = {k: v for k, v in row.items() if k in RefundDecisionRequest.model_fields}
            request = RefundDecisionRequest.model_validate(
                {**body, "order": {k: v for k, v in order.items() if k != "customer_id"}}
            )
            try:
                result = await service.decide(request)
            except RefundRiskError as exc:
                report.refused[type(exc).__name__] += 1
                continue
            answer = orjson.loads(result.body)
            report.actions[answer["action"]] += 1
            if answer["action"] == REVIEW_ACTION:
                cases[row["refund_id"]] = answer["decision_id"]
            continue
        if name == "orders":
            row = _as_known_at(row, when)
        service.append_events(EventsIn.model_validate({name: [row]}))
        case = cases.pop(row["refund_id"], None) if name == "outcomes" else None
        if case is not None:
            decision = Resolution.REJECT_ABUSE if row["is_abusive"] else Resolution.APPROVE
            service.reviews.resolve(case, REVIEWER, decision, note=f"outcome: {row['source']}")
            report.resolved += 1
    report.still_open = len(cases)
    return report
