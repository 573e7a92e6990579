"""The service's side of the event store: known orders, rows from requests.

`OrderTracker` answers "does the event store hold exactly this order?" so a decision request
appends its order only when it is new or changed (shipped, delivered): re-writing a known order
would make the builder recompute that customer's history on the next request. For an order that
changed it gives the stored row, which the change must respect (`data.facts.order_changes`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from data.facts import as_recorded
from data.schema import ORDERS
from features.store import EVENT_TABLES, EventStore
from serving.db import PointReader

ORDER_COLUMNS: tuple[str, ...] = tuple(ORDERS.column_names)

_LINK_COLUMNS = (
    ("device", "device_id"),
    ("address", "address_id"),
    ("payment", "payment_fingerprint"),
)


def order_links(order: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fingerprints an order shows (device, address, payment), seen when it was placed.

    The raw data model records them as identity links; deriving them here keeps accounts that
    share a fingerprint linked from their first order on, whether or not the shop also sends
    the links themselves (an upsert keeps the earliest time either way). A fingerprint the shop
    did not send links nothing.
    """
    return [
        {
            "customer_id": order["customer_id"],
            "kind": kind,
            "fingerprint": order[column],
            "seen_at": order["ordered_at"],
        }
        for kind, column in _LINK_COLUMNS
        if order.get(column) is not None
    ]


def unique_rows(
    rows: Iterable[Mapping[str, Any]], key: Sequence[str], keep: str = "last"
) -> list[dict[str, Any]]:
    """One row per key: the last one sent, or (`keep="earliest_seen"`) the earliest `seen_at`.

    One statement may not upsert the same key twice on PostgreSQL, so a call's rows are
    reduced first.
    """
    chosen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        k = tuple(row[c] for c in key)
        if keep == "earliest_seen" and k in chosen and chosen[k]["seen_at"] <= row["seen_at"]:
            continue
        chosen[k] = dict(row)
    return list(chosen.values())


class OrderTracker:
    """Which order rows the event store holds, as this process last wrote or read them.

    Preloaded, it keeps a fingerprint of every order. Otherwise it remembers up to `capacity`
    orders (least recently used go first) and reads an order it does not remember once.
    Either way it assumes this process owns the appends, as the online builder does; on a
    database other processes write too, `capacity` is 0 and every check reads.
    """

    def __init__(self, reader: PointReader, capacity: int = 200_000) -> None:
        self.reader = reader
        self.capacity = capacity
        self._known: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._complete: dict[str, int] | None = None
        orders = EVENT_TABLES["orders"]
        self.select_order = sa.select(*(orders.c[c] for c in ORDER_COLUMNS)).where(
            orders.c.order_id == sa.bindparam("order_id")
        )
        customers = EVENT_TABLES["customers"]
        self.select_customer = sa.select(customers.c.customer_id).where(
            customers.c.customer_id == sa.bindparam("customer_id")
        )

    @staticmethod
    def values(row: Mapping[str, Any]) -> tuple[Any, ...]:
        """An order row's values in the store's column order."""
        return tuple(row[c] for c in ORDER_COLUMNS)

    def preload(self, store: EventStore) -> None:
        """Remember a fingerprint of every stored order (when the builder holds the whole store
        in memory too): then no request reads the store to check its order."""
        known: dict[str, int] = {}
        for batch in store.scan("orders"):
            for row in batch:
                known[row["order_id"]] = hash(self.values(row))
        self._complete = known

    def is_stored(self, order: Mapping[str, Any]) -> bool:
        """Whether the store holds this order with exactly these values."""
        order_id = order["order_id"]
        if self._complete is not None:
            return self._complete.get(order_id) == hash(self.values(order))
        known = self._known.get(order_id)
        if known is None:
            stored = self.reader.execute(self.select_order, {"order_id": order_id}).first()
            if stored is None:
                return False
            known = tuple(stored)
            self._remember(order_id, known)
        else:
            self._known.move_to_end(order_id)
        return known == self.values(order)

    def stored(self, order_id: str) -> dict[str, Any] | None:
        """The order's row as the store holds it; None if it holds no such order (preloaded,
        that is known without a read)."""
        if self._complete is not None and order_id not in self._complete:
            return None
        known = None if self._complete is not None else self._known.get(order_id)
        if known is None:
            row = self.reader.execute(self.select_order, {"order_id": order_id}).first()
            if row is None:
                return None
            known = tuple(row)
            if self._complete is None:
                self._remember(order_id, known)
        return dict(zip(ORDER_COLUMNS, known, strict=True))

    def remember(self, orders: Iterable[Mapping[str, Any]]) -> None:
        """These orders were just written."""
        for order in orders:
            if self._complete is not None:
                self._complete[order["order_id"]] = hash(self.values(order))
            else:
                before = self._known.get(order["order_id"])
                if before is not None:  # the store keeps a recorded product the row leaves out
                    order = as_recorded(dict(zip(ORDER_COLUMNS, before, strict=True)), order)
                self._remember(order["order_id"], self.values(order))

    def _remember(self, order_id: str, values: tuple[Any, ...]) -> None:
        self._known[order_id] = values
        self._known.move_to_end(order_id)
        while len(self._known) > self.capacity:
            self._known.popitem(last=False)

    def customer_stored(self, customer_id: str) -> bool:
        """Whether the store has the customer's account row."""
        found = self.reader.execute(self.select_customer, {"customer_id": customer_id}).first()
        return found is not None

    def latest_order(self, customer_id: str) -> str | None:
        """The customer's most recent order id, if any."""
        orders = EVENT_TABLES["orders"]
        query = (
            sa.select(orders.c.order_id)
            .where(orders.c.customer_id == customer_id)
            .order_by(orders.c.ordered_at.desc(), orders.c.order_id.desc())
            .limit(1)
        )
        return self.reader.execute(query).scalar()
