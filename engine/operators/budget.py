"""Budget check (预算校验) for payment requests.

The check does not consume budget: money is committed when the payment is executed and the voucher is
generated. The warning threshold is configuration (FINFLOW_BUDGET_WARNING_RATIO), not process logic.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from engine.models import Budget
from engine.operators import OperatorContext, operator


def warning_ratio() -> Decimal:
    return Decimal(os.environ.get("FINFLOW_BUDGET_WARNING_RATIO", "0.85"))


@operator("budget_check")
def budget_check(ctx: OperatorContext, budget_line: str, amount: Any) -> dict[str, Any]:
    budget = ctx.session.get(Budget, budget_line)
    if budget is None:
        return {"approved": False, "reason": f"预算科目 {budget_line} 不存在", "usage_ratio": None,
                "warning": False}
    requested = Decimal(str(amount))
    after = budget.used + requested
    ratio = (after / budget.amount) if budget.amount else Decimal("Infinity")
    approved = after <= budget.amount
    result = {
        "approved": approved,
        "budget_line": budget.line,
        "budget_name": budget.name,
        "available": str(budget.amount - budget.used),
        "usage_ratio": round(float(ratio), 4),
        "warning": approved and ratio >= warning_ratio(),
        "reason": "" if approved else
        f"超出预算：{budget.name} 可用 {budget.amount - budget.used:.2f} 元，申请 {requested:.2f} 元",
    }
    if result["warning"]:
        ctx.record("budget.warning", {"budget_line": budget.line, "usage_ratio": result["usage_ratio"],
                                      "threshold": float(warning_ratio())})
    return result
