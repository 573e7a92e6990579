"""Customer histories shared by several processes on one PostgreSQL database.

Each service process keeps customer histories in memory (`features.online`), and each may
append to them. On PostgreSQL any number of processes may share the database, so a process
trusts what it holds of a customer only while it is what the database has committed:

- A decision holds the customer's transaction-scoped advisory lock (`lock`) from the moment it
  reads the customer's history until its decision, refund request and order are committed, so
  two decisions of one customer, in whichever processes, are made one after the other, each
  seeing the other's.
- Every write of a customer's events bumps the customer's history version in the same
  transaction (`features.store.bump_versions`). Under the lock, `fresh` reads the versions of
  the customer and of every account sharing a fingerprint with them, and the accounts that
  share one; whatever memory holds at another version, or does not hold, is read again from
  the database before the features are computed. A history is never used at a version older
  than the committed one.
- The versions this process knows are set only from the database: as read by `fresh`, or as
  its own committed decision left them (`confirm`, when no other writer came between). Any other
  write through this process forgets the version of the customers it touches, so their next
  decision reads them again.

The cache is bounded (`capacity` customers, least recently used go first) and counts hits,
misses and evictions for /metrics. SQLite serves one process, which sees all its own writes:
it does not use this.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from features.online import OnlineFeatureBuilder
from features.store import EVENT_TABLES, HISTORY_VERSIONS, EventStore
from serving.metrics import Metrics

_LINKS = EVENT_TABLES["identity_links"]

EVICT_TO = 0.9
"""Once over capacity, histories are dropped down to this share of it (not one at a time)."""


def _neighbourhood_query() -> sa.CompoundSelect:
    """The stored versions of a customer and of every account sharing a fingerprint with them
    (0 for an account never written with versions)."""
    customer: sa.BindParameter[str] = sa.bindparam("customer_id", type_=sa.String())
    own = sa.select(
        customer.label("customer_id"),
        sa.func.coalesce(
            sa.select(HISTORY_VERSIONS.c.version)
            .where(HISTORY_VERSIONS.c.customer_id == customer)
            .scalar_subquery(),
            0,
        ).label("version"),
    )
    mine = _LINKS.alias("mine")
    other = _LINKS.alias("other")
    linked = (
        sa.select(other.c.customer_id, sa.func.coalesce(HISTORY_VERSIONS.c.version, 0))
        .select_from(
            mine.join(
                other,
                sa.and_(other.c.fingerprint == mine.c.fingerprint, other.c.kind == mine.c.kind),
            ).outerjoin(HISTORY_VERSIONS, HISTORY_VERSIONS.c.customer_id == other.c.customer_id)
        )
        .where(mine.c.customer_id == customer, other.c.customer_id != customer)
    )
    return sa.union(own, linked)


_NEIGHBOURHOOD = _neighbourhood_query()
_VERSION = sa.select(HISTORY_VERSIONS.c.version).where(
    HISTORY_VERSIONS.c.customer_id == sa.bindparam("customer_id")
)


def lock(connection: Connection, customer_id: str) -> None:
    """Take the customer's advisory lock for the rest of the transaction of `connection`
    (PostgreSQL): another transaction asking for it waits until this one ends."""
    key = sa.func.hashtextextended(customer_id, 0)
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def stored_version(connection: Connection, customer_id: str) -> int:
    """The customer's committed history version, as `connection` sees it."""
    found = connection.execute(_VERSION, {"customer_id": customer_id}).scalar()
    return 0 if found is None else int(found)


class SharedHistory:
    """The histories of the online builder, kept as fresh as the database, at most `capacity`
    customers."""

    def __init__(
        self,
        builder: OnlineFeatureBuilder,
        store: EventStore,
        capacity: int,
        metrics: Metrics,
        on_reload: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.builder = builder
        self.store = store
        self.capacity = capacity
        self.metrics = metrics
        metrics.history_size.set_function(builder.history_count)
        self.on_reload = on_reload
        """Told which customers' histories were read again (for values computed from them)."""
        self._versions: OrderedDict[str, int] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        builder.on_append(self._appended)

    def __len__(self) -> int:
        return self.builder.history_count()

    def fresh(
        self,
        connection: Connection,
        customer_id: str,
        arriving: Collection[tuple[str, str]] = (),
    ) -> int:
        """Make memory hold the committed histories of the customer and of every account
        sharing a fingerprint with them, and who shares each fingerprint; the customer's
        version. `arriving` are (kind, fingerprint) pairs of an order about to be appended for
        the customer: accounts using them are its neighbours too, though the database does not
        link them to the customer yet. Call it holding the customer's lock, in the transaction
        that decides."""
        stored: dict[str, int] = {
            str(c): int(v)
            for c, v in connection.execute(_NEIGHBOURHOOD, {"customer_id": customer_id})
        }
        new_keys = set(arriving) - set(self.builder.fingerprint_keys(customer_id))
        new_links = self.store.fingerprint_links(new_keys, connection) if new_keys else []
        newcomers = {str(link["customer_id"]) for link in new_links} - set(stored)
        if newcomers:
            stored.update(
                {
                    str(c): int(v)
                    for c, v in connection.execute(
                        sa.select(HISTORY_VERSIONS.c.customer_id, HISTORY_VERSIONS.c.version).where(
                            HISTORY_VERSIONS.c.customer_id.in_(sorted(newcomers))
                        )
                    )
                }
            )
            stored.update({c: 0 for c in newcomers if c not in stored})
        linked = set(stored) - {customer_id}
        known = self._versions
        stale = {c for c, v in stored.items() if known.get(c) != v}
        if not stale and self.builder.linked_in_memory(customer_id) == linked:
            self.hits += 1
            self.metrics.history_hits.inc()
            self._touch(stored)
            return stored[customer_id]
        self.misses += 1
        self.metrics.history_misses.inc()
        if stale:
            self.builder.install(stale, self.store.histories(stale, connection))
        keys = [*self.builder.fingerprint_keys(customer_id), *new_keys]
        self.builder.replace_fingerprints(
            customer_id, keys, self.store.fingerprint_links(keys, connection)
        )
        for c in stale:
            known[c] = stored[c]
        self._touch(stored)
        if self.on_reload is not None:
            self.on_reload(stale | {customer_id})
        return stored[customer_id]

    def confirm(self, customer_id: str, read: int, writes: int, committed: int) -> None:
        """After the customer's decision committed: memory holds version `read` plus this
        transaction's `writes` if the database says `committed` is that (no other writer came
        between); otherwise the customer is read again next time."""
        if committed == read + writes:
            self._versions[customer_id] = committed
            self._versions.move_to_end(customer_id)
        else:
            self._versions.pop(customer_id, None)

    def discard(self, customer_ids: Collection[str]) -> None:
        """Forget what memory holds of these customers (a transaction that changed it failed)."""
        for customer_id in customer_ids:
            self._versions.pop(customer_id, None)
        self.builder.forget(customer_ids)

    def _touch(self, customers: Mapping[str, int]) -> None:
        for customer_id in customers:
            if customer_id in self._versions:
                self._versions.move_to_end(customer_id)

    def trim(self, keep: Collection[str] = ()) -> None:
        """Drop the least recently used histories once more than `capacity` are held, down to
        `EVICT_TO` of it: first those read outside a decision, then by last use; never `keep`."""
        if self.builder.history_count() <= self.capacity:
            return
        excess = self.builder.history_count() - int(self.capacity * EVICT_TO)
        known = self._versions
        untracked = [c for c in self.builder.cached_customers() if c not in known]
        chosen: list[str] = [c for c in untracked if c not in keep][:excess]
        if len(chosen) < excess:
            for customer_id in known:
                if len(chosen) >= excess:
                    break
                if customer_id not in keep:
                    chosen.append(customer_id)
        for customer_id in chosen:
            known.pop(customer_id, None)
        self.builder.forget(chosen)
        self.evictions += len(chosen)
        self.metrics.history_evictions.inc(len(chosen))

    def _appended(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """A write through this process: the versions of the customers it touched are unknown
        until a read or a confirmed decision sets them again."""
        known = self._versions
        if not known:
            return
        for table, records in rows.items():
            for record in records:
                customer_id = record.get("customer_id")
                if customer_id is None and table == "outcomes":
                    customer_id = self.builder.refund_owner(record["refund_id"])
                if customer_id is not None:
                    known.pop(str(customer_id), None)
