"""Accounting voucher (记账凭证) generated when a payment is executed.

Debit the budget line's expense account, credit bank deposits (1002 银行存款); the voucher is stored and
the instance's budget reservation is consumed (核销). Running twice for one instance returns the first voucher.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from engine import clock
from engine.finance import budgets
from engine.finance.money import to_money
from engine.models import Voucher
from engine.operators import OperatorContext, operator

BANK_ACCOUNT = ("1002", "银行存款")


@operator("generate_voucher")
def generate_voucher(ctx: OperatorContext, amount: Any, budget_line: str, summary: str) -> dict[str, Any]:
    existing = ctx.session.scalar(select(Voucher).where(Voucher.instance_id == ctx.instance_id))
    if existing is not None:
        return voucher_view(existing)
    value = to_money(amount)
    now = clock.now()
    voucher_id = f"JZ{now:%Y%m%d}-{ctx.instance_id[:8].upper()}"
    budget = budgets.consume(ctx.session, ctx.instance_id, budget_line, value, None, f"付款核销，凭证 {voucher_id}")
    lines = [
        {"account": budget.expense_account, "account_name": budget.expense_account_name,
         "summary": summary, "debit": str(value), "credit": "0.00"},
        {"account": BANK_ACCOUNT[0], "account_name": BANK_ACCOUNT[1],
         "summary": summary, "debit": "0.00", "credit": str(value)},
    ]
    voucher = Voucher(id=voucher_id, instance_id=ctx.instance_id, voucher_date=now.date(), summary=summary,
                      lines=lines, total=value, created_at=now)
    ctx.session.add(voucher)
    return voucher_view(voucher)


def voucher_view(voucher: Voucher) -> dict[str, Any]:
    debit = sum(Decimal(line["debit"]) for line in voucher.lines)
    credit = sum(Decimal(line["credit"]) for line in voucher.lines)
    return {"voucher_no": voucher.id, "date": voucher.voucher_date.isoformat(), "summary": voucher.summary,
            "lines": voucher.lines, "total": str(voucher.total), "balanced": debit == credit}
