"""Reading budget lines and their ledgers (预算台账), behind one visibility rule.

Finance, executives, auditors and admins see every line; anyone else sees the lines they may charge
(their department's, and those of the departments above it but the company root).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import Forbidden, NotFound
from engine.finance import budgets
from engine.models import Budget, BudgetEntry, User

READ_ALL_ROLES = budgets.WIDE_BUDGET_ROLES | {"auditor"}


def list_budgets(session: Session, viewer: User, year: int | None = None,
                 department_id: str | None = None) -> list[Budget]:
    stmt = select(Budget).order_by(Budget.line)
    if year is not None:
        stmt = stmt.where(Budget.year == year)
    if department_id is not None:
        stmt = stmt.where(Budget.department_id == department_id)
    return [b for b in session.scalars(stmt) if _visible(session, viewer, b)]


def get_budget(session: Session, viewer: User, line: str) -> Budget:
    budget = session.get(Budget, line)
    if budget is None:
        raise NotFound(f"预算科目 {line} 不存在", {"budget_line": line})
    if not _visible(session, viewer, budget):
        raise Forbidden(f"您无权查看预算科目 {line}", {"budget_line": line})
    return budget


def ledger(session: Session, line: str, limit: int = 200) -> list[BudgetEntry]:
    """The line's newest ledger entries first."""
    return budgets.ledger(session, line, limit)


def _visible(session: Session, viewer: User, budget: Budget) -> bool:
    return bool(viewer.role_ids & READ_ALL_ROLES) or budgets.may_charge(session, viewer, budget)
