"""What an instance's end means for its money: spend or release its budget, keep or free its invoices."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from engine.finance import budgets, invoices


def settle(session: Session, instance_id: str, approved: bool, actor_id: str | None,
           reason: str) -> dict[str, Decimal]:
    """An approved request spends what it reserved and keeps its invoices; any other end (rejected,
    withdrawn, cancelled) releases its budget and gives its invoices back. Returns what each budget
    line had held for the instance."""
    holds = budgets.settle(session, instance_id, approved, actor_id, reason)
    if not approved:
        invoices.release(session, instance_id)
    return holds
