"""Budget check (预算校验) for payment requests and reimbursements charged to a budget line.

Passing the check reserves the amount on the line (engine/finance/budgets.py); the voucher, or the
approved end of the instance, consumes it; a rejection, withdrawal or cancellation releases it. The
warning threshold counts reservations and is configuration (FINFLOW_BUDGET_WARNING_RATIO), not process logic.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from engine.finance import budgets
from engine.finance.money import fmt, to_money
from engine.models import User
from engine.operators import OperatorContext, operator


def warning_ratio() -> Decimal:
    return Decimal(os.environ.get("FINFLOW_BUDGET_WARNING_RATIO", "0.85"))


@operator("budget_check")
def budget_check(ctx: OperatorContext, budget_line: str | None, amount: Any) -> dict[str, Any]:
    requested = to_money(amount)
    if not budget_line:  # a reimbursement charged to no line: nothing to check, nothing held
        budgets.release_all(ctx.session, ctx.instance_id, ctx.starter_id, "未填写预算科目，释放原占用")
        return {"approved": True, "budget_line": None, "usage_ratio": None, "warning": False, "reason": ""}
    try:
        budget = budgets.lock_line(ctx.session, budget_line)
    except budgets.BudgetLineUnknown as exc:
        return {"approved": False, "reason": str(exc), "usage_ratio": None, "warning": False}
    starter = ctx.session.get(User, ctx.starter_id)
    if starter is None or not budgets.may_charge(ctx.session, starter, budget):
        budgets.release_all(ctx.session, ctx.instance_id, None, "无权使用该预算科目，释放原占用")
        return {"approved": False, "budget_line": budget.line, "usage_ratio": None, "warning": False,
                "reason": f"申请人所在部门不能使用预算科目 {budget.line}（{budget.name}）"}
    result = budgets.reserve(ctx.session, ctx.instance_id, budget, requested, ctx.starter_id)
    ratio = result.usage_ratio
    warning = result.approved and ratio is not None and ratio >= warning_ratio()
    view = {
        "approved": result.approved,
        "budget_line": budget.line,
        "budget_name": budget.name,
        "requested": str(requested),
        "reserved": str(result.reserved),
        "available": str(budget.available),
        "usage_ratio": str(round(ratio, 4)) if ratio is not None else None,
        "warning": warning,
        "reason": result.reason,
    }
    if warning:
        message = f"{budget.name} 已使用（含占用）{ratio:.1%}，可用 {fmt(budget.available)} 元"
        ctx.record("budget.warning", {"budget_line": budget.line, "usage_ratio": view["usage_ratio"],
                                      "threshold": str(warning_ratio()), "message": message})
    return view
