"""Budget encumbrance (预算占用): reserve when a request passes its budget check, consume when it is paid,
release when it is rejected, withdrawn, cancelled or revised down. available = amount − used − reserved.

Every change is one `BudgetEntry` row written in the transaction of the step that caused it, and the
line's running totals move with it under the line's row lock, so two requests racing for the last
10,000 are decided one after the other: exactly one of them gets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import clock
from engine.finance.money import fmt
from engine.models import Budget, BudgetEntry, Department, User

ZERO = Decimal("0.00")
WIDE_BUDGET_ROLES = {"finance", "cfo", "gm", "admin"}  # may charge any department's lines


class BudgetLineUnknown(LookupError):
    pass


@dataclass(frozen=True)
class Reservation:
    approved: bool
    budget: Budget
    requested: Decimal
    reserved: Decimal  # what the instance holds on the line after the check
    reason: str

    @property
    def usage_ratio(self) -> Decimal | None:
        budget = self.budget
        return (budget.used + budget.reserved) / budget.amount if budget.amount else None


def lock_line(session: Session, line: str) -> Budget:
    """The budget line, row-locked for the rest of the transaction (SQLite: the write lock already is)."""
    budget = session.get(Budget, line, with_for_update=True, populate_existing=True)
    if budget is None:
        raise BudgetLineUnknown(f"预算科目 {line} 不存在")
    return budget


def held_by(session: Session, instance_id: str, line: str | None = None) -> dict[str, Decimal]:
    """What an instance has reserved, per line (lines with nothing left are omitted).

    Entries this command added and not yet flushed count too; summing them here instead of flushing
    keeps the instance row from being written twice in one command."""
    stmt = (select(BudgetEntry.line, func.sum(BudgetEntry.reserved_delta))
            .where(BudgetEntry.instance_id == instance_id).group_by(BudgetEntry.line))
    if line is not None:
        stmt = stmt.where(BudgetEntry.line == line)
    held = {row_line: total for row_line, total in session.execute(stmt)}
    for entry in session.new:
        if isinstance(entry, BudgetEntry) and entry.instance_id == instance_id and line in (None, entry.line):
            held[entry.line] = held.get(entry.line, ZERO) + entry.reserved_delta
    return {row_line: total for row_line, total in held.items() if total}


def reserve(session: Session, instance_id: str, budget: Budget, amount: Decimal, actor_id: str | None) -> Reservation:
    """Check the line (locked by the caller with `lock_line`) and hold `amount` for the instance; a repeated
    check (a resubmission) moves the instance's reservation to the new amount, and off any other line it
    held before. Not enough left: nothing is held, the old hold is released."""
    holds = held_by(session, instance_id)
    held = holds.pop(budget.line, ZERO)
    _release(session, instance_id, holds, actor_id, "预算科目已更换，释放原科目占用")
    room = budget.available + held
    if amount <= room:
        if amount != held:
            kind = "reserve" if amount > held else "release"
            reason = "预算校验通过，占用预算" if held == ZERO else f"申请金额由 {fmt(held)} 调整为 {fmt(amount)}"
            _entry(session, budget, kind, instance_id, actor_id, reason, reserved=amount - held)
        return Reservation(True, budget, amount, amount, "")
    if held:
        _entry(session, budget, "release", instance_id, actor_id, "预算不足，释放原占用", reserved=-held)
    reason = f"超出预算：{budget.name} 可用 {fmt(room)} 元，申请 {fmt(amount)} 元"
    return Reservation(False, budget, amount, ZERO, reason)


def release_all(session: Session, instance_id: str, actor_id: str | None, reason: str) -> None:
    """Release whatever the instance holds (its request now charges no line it may use)."""
    _release(session, instance_id, held_by(session, instance_id), actor_id, reason)


def _release(session: Session, instance_id: str, holds: dict[str, Decimal], actor_id: str | None,
             reason: str) -> None:
    for line, held in holds.items():
        _entry(session, lock_line(session, line), "release", instance_id, actor_id, reason, reserved=-held)


def consume(session: Session, instance_id: str, line: str, amount: Decimal, actor_id: str | None,
            reason: str) -> Budget:
    """The money is spent (a payment made, a voucher booked): the instance's hold becomes `used`.
    Spending beyond the hold must still fit the line: a budget is never overspent."""
    budget = lock_line(session, line)
    held = held_by(session, instance_id, line).get(line, ZERO)
    if amount > budget.available + held:
        raise ValueError(f"超出预算：{budget.name} 可用 {fmt(budget.available + held)} 元，核销 {fmt(amount)} 元")
    _entry(session, budget, "consume", instance_id, actor_id, reason, used=amount, reserved=-held)
    return budget


def settle(session: Session, instance_id: str, spent: bool, actor_id: str | None, reason: str) -> dict[str, Decimal]:
    """An instance ended: an approved request's holds are spent, any other's are released; returns them."""
    holds = held_by(session, instance_id)
    if not spent:
        _release(session, instance_id, holds, actor_id, reason)
        return holds
    for line, held in holds.items():
        _entry(session, lock_line(session, line), "consume", instance_id, actor_id, reason, used=held, reserved=-held)
    return holds


def open_line(session: Session, budget: Budget, actor_id: str | None, reason: str = "期初") -> None:
    """Record a new line's starting figures as its first ledger entry."""
    _entry(session, budget, "opening", None, actor_id, reason, total=budget.amount, used=budget.used,
           reserved=budget.reserved, apply=False)


def adjust(session: Session, budget: Budget, new_amount: Decimal, actor_id: str | None, reason: str) -> None:
    if new_amount != budget.amount:
        _entry(session, budget, "adjust", None, actor_id, reason, total=new_amount - budget.amount)


def _entry(session: Session, budget: Budget, kind: str, instance_id: str | None, actor_id: str | None,
           reason: str, *, total: Decimal = ZERO, used: Decimal = ZERO, reserved: Decimal = ZERO,
           apply: bool = True) -> None:
    if apply:
        budget.amount, budget.used, budget.reserved = budget.amount + total, budget.used + used, \
            budget.reserved + reserved
    session.add(BudgetEntry(line=budget.line, kind=kind, instance_id=instance_id, amount_delta=total,
                            used_delta=used, reserved_delta=reserved, available_after=budget.available,
                            actor_id=actor_id, reason=reason[:255], created_at=clock.now()))


def may_charge(session: Session, user: User, budget: Budget) -> bool:
    """An applicant charges their own department's lines, or those of a department above theirs
    (a team spends its division's budget) — never the company-wide root's or a sibling's, unless their
    role is one that books for every department."""
    if user.role_ids & WIDE_BUDGET_ROLES:
        return True
    department = session.get(Department, user.department_id)
    while department is not None:
        if department.id == budget.department_id:
            return department.parent_id is not None or user.department_id == department.id
        department = session.get(Department, department.parent_id) if department.parent_id else None
    return False


def ledger(session: Session, line: str, limit: int = 200) -> list[BudgetEntry]:
    return list(session.scalars(select(BudgetEntry).where(BudgetEntry.line == line)
                                .order_by(BudgetEntry.id.desc()).limit(limit)))


def verify(session: Session, line: str) -> dict[str, Any]:
    """The line's totals recomputed from its ledger, and whether the row agrees with them."""
    budget = session.get(Budget, line)
    if budget is None:
        raise BudgetLineUnknown(f"预算科目 {line} 不存在")
    total, used, reserved = session.execute(
        select(func.coalesce(func.sum(BudgetEntry.amount_delta), ZERO),
               func.coalesce(func.sum(BudgetEntry.used_delta), ZERO),
               func.coalesce(func.sum(BudgetEntry.reserved_delta), ZERO)).where(BudgetEntry.line == line)).one()
    derived = {"amount": Decimal(total), "used": Decimal(used), "reserved": Decimal(reserved)}
    consistent = derived == {"amount": budget.amount, "used": budget.used, "reserved": budget.reserved}
    return {"line": line, "consistent": consistent, "ledger": derived}
