"""Refunded before return, goods not back yet: each customer's open exposure.

The policy limits how much a trusted customer may have outstanding at once
(`tier.max_outstanding_unreturned`). Only the service knows what it paid before the goods came
back, so it keeps the ledger: a `refund_before_return` decision opens an entry for its amount,
and any outcome about that refund (the warehouse check of the returned item, or a finding that
closes the case) closes it. It is rebuilt from the decision log and the event store at start-up
and kept in memory, so reading it costs a dictionary look-up.
"""

from __future__ import annotations

from collections.abc import Iterable


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
