"""Refunded before the goods are back: each customer's open exposure.

The policy limits how much a trusted customer may have outstanding at once
(`tier.max_outstanding_unreturned`). Only the service knows what it paid before the goods came
back, so it keeps the ledger: a decision that pays before anything is back or checked opens an
entry for its amount (`pays_before_return`), and any outcome about that refund (the warehouse
check of the returned item, or a finding that closes the case) closes it. It is rebuilt from
the decision log and the event store at start-up and kept in memory, so reading it costs a
dictionary look-up.
"""

from __future__ import annotations

from collections.abc import Iterable


def pays_before_return(action: str, order_stage: str) -> bool:
    """Whether a decision pays money while shipped goods are not back: a refund before return,
    or an approval of a shipped order (which asks for no return, or does not await it).

    An approval before shipping pays for goods that never left, so nothing is outstanding.
    Every other such payment counts against the tier's limit, or reaching the limit would turn
    a refund before return into an approval that the limit no longer sees.
    """
    if action == "refund_before_return":
        return True
    return action == "auto_approve" and order_stage != "not_shipped"


class ExposureLedger:
    """Open refund-before-return amounts per customer."""

    def __init__(self) -> None:
        self._open: dict[str, dict[str, float]] = {}
        self._owner: dict[str, str] = {}

    def load(self, entries: Iterable[tuple[str, str, float]]) -> None:
        """Replace the ledger with (customer, refund, amount) entries."""
        self._open.clear()
        self._owner.clear()
        for customer_id, refund_id, amount in entries:
            self.open(customer_id, refund_id, amount)

    def open(self, customer_id: str, refund_id: str, amount: float) -> None:
        """A refund was paid before its goods came back."""
        self._open.setdefault(customer_id, {})[refund_id] = amount
        self._owner[refund_id] = customer_id

    def close(self, refund_ids: Iterable[str]) -> None:
        """Outcomes arrived for these refunds: they are no longer outstanding."""
        for refund_id in refund_ids:
            customer_id = self._owner.pop(refund_id, None)
            if customer_id is None:
                continue
            entries = self._open.get(customer_id, {})
            entries.pop(refund_id, None)
            if not entries:
                self._open.pop(customer_id, None)

    def outstanding(self, customer_id: str) -> float:
        """The customer's open amount."""
        entries = self._open.get(customer_id)
        return float(sum(entries.values())) if entries else 0.0

    def __len__(self) -> int:
        return len(self._owner)
