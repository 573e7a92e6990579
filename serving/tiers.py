"""Credit tiers at decision time: the customer's tier as of their latest monthly snapshot.

Tiers summarise a customer's history and change slowly. The tier model was trained on monthly
credit snapshots (features as of the first instant of each month, `features.batch`), and the
offline scorer gives each request the tier of its customer's latest snapshot strictly before it
(`training.scorer.snapshot_tier_scores`). Scored at the request's own instant instead, every
requester has just ordered, which the model reads as risk; so the service does as the scorer
does: the tier features are computed by the online builder as of the snapshot's instant (the
customer-history and linked-account features depend only on the customer and the time), and
the score is remembered per customer and month. After a customer's first request of a month,
their tier costs a dictionary look-up.

A remembered score is forgotten when an append could change it: an event of the customer, or of
an account sharing a fingerprint with them, that happened before the snapshot's instant (a late
order, an outcome, a new link). Appends of the present, which is after the snapshot, change
nothing remembered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from data.schema import TABLES, Kind
from features.events import to_us
from features.online import OnlineFeatureBuilder
from serving.models import LoadedModel, ModelSet
from serving.scoring import tier_score

MONTHS_KEPT = 3
"""Snapshot months whose scores are remembered (requests cluster in the current month)."""

CUSTOMERS_PER_MONTH = 2_000_000
"""Scores remembered per month before that month's memory starts afresh."""

_TIME_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(c.name for c in table.columns if c.kind == Kind.TIMESTAMP)
    for name, table in TABLES.items()
}

_UNKNOWN = object()


def snapshot_at(when: datetime) -> datetime:
    """The latest monthly snapshot strictly before `when` (naive UTC): the first instant of
    its month, or of the month before when `when` is that instant itself."""
    start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start == when:
        start = (
            start.replace(year=start.year - 1, month=12)
            if start.month == 1
            else start.replace(month=start.month - 1)
        )
    return start


class TierScores:
    """The tier model's score of each customer's latest snapshot, remembered per month.

    `score` is what decisions and the tier endpoint read; it is None without a tier model, for
    a customer with no snapshot yet (unknown, or signed up after it), or with no history at it.
    Runs on the event loop's thread, as the builder does.
    """

    def __init__(self, builder: OnlineFeatureBuilder) -> None:
        self.builder = builder
        self._months: dict[int, dict[str, float | None]] = {}
        self._model: LoadedModel | None = None
        self.hits = 0
        self.misses = 0
        builder.on_append(self._appended)

    def score(self, models: ModelSet, customer_id: str, when: datetime) -> float | None:
        """The loss probability of the customer's latest snapshot strictly before `when`."""
        model = models.tier
        if model is None:
            return None
        if model is not self._model:  # another model (a reload): nothing remembered holds
            self._months.clear()
            self._model = model
        at = snapshot_at(when)
        month = to_us(at)
        assert month is not None
        scores = self._months.get(month)
        if scores is None:
            scores = self._months[month] = {}
            while len(self._months) > MONTHS_KEPT:
                del self._months[min(self._months)]
        found = scores.get(customer_id, _UNKNOWN)
        if found is not _UNKNOWN:
            self.hits += 1
            return found  # type: ignore[return-value]
        self.misses += 1
        row = self.builder.customer_vector(customer_id, at)
        value = None if row is None else tier_score(models, row)
        if len(scores) >= CUSTOMERS_PER_MONTH:
            scores.clear()
        scores[customer_id] = value
        return value

    def forget(self, customer_ids: Iterable[str], since: int) -> None:
        """Forget the scores of these customers (and of accounts linked to them) in snapshots
        after `since` (microseconds): an event then is visible to those snapshots."""
        months = [scores for month, scores in self._months.items() if month > since]
        if not months:
            return
        customers = set(customer_ids)
        customers |= self.builder.linked_customers(customers)
        for scores in months:
            for customer_id in customers:
                scores.pop(customer_id, None)

    def _appended(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """After an append: forget what the appended events may change."""
        if not self._months:
            return
        latest = max(self._months)
        customers: set[str] = set()
        since: int | None = None
        for table, records in rows.items():
            columns = _TIME_COLUMNS.get(table, ())
            for record in records:
                times = [t for t in (to_us(record.get(c)) for c in columns) if t is not None]
                if not times or min(times) >= latest:
                    continue  # no snapshot remembered can see it
                earliest = min(times)
                since = earliest if since is None else min(since, earliest)
                customer_id = record.get("customer_id")
                if customer_id is None and table == "outcomes":
                    customer_id = self.builder.refund_owner(record["refund_id"])
                if customer_id is not None:
                    customers.add(str(customer_id))
        if since is not None and customers:
            self.forget(customers, since)
