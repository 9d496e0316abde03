"""Invoices (发票) backing a claim: each invoice backs one running or approved claim only.

The invoice key is the row's primary key, so the database — not a read-then-write check — refuses a
second claim on the same invoice, even from two requests racing. A rejected, withdrawn or cancelled
claim gives its invoices back.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import clock
from engine.errors import InvalidInput
from engine.finance.money import fmt, to_money
from engine.models import Instance, InvoiceClaim

LOCAL_ZONE = ZoneInfo("Asia/Shanghai")  # an invoice date is a date in China


def max_age_days() -> int:
    """How old an invoice may be (FINFLOW_INVOICE_MAX_AGE_DAYS, default 365): older ones are refused."""
    return int(os.environ.get("FINFLOW_INVOICE_MAX_AGE_DAYS", "365"))


def today() -> date:
    return clock.now().astimezone(LOCAL_ZONE).date()


def invoice_key(invoice: dict[str, Any]) -> str:
    """code:number for a paper/税控 invoice, the 20-digit number alone for a 全电发票."""
    number = str(invoice.get("number", "")).strip().upper()
    code = str(invoice.get("code") or "").strip()
    return f"{code}:{number}" if code else number


def line_errors(field: str, invoices: list[dict[str, Any]], total: Decimal | None, today: date) -> dict[str, list[str]]:
    """The invoice lines' own rules: they sum to the claimed amount, none is dated in the future or
    older than the configured window, no invoice appears twice on one claim."""
    errors: dict[str, list[str]] = {}
    oldest = today - timedelta(days=max_age_days())
    seen: set[str] = set()
    for index, invoice in enumerate(invoices):
        key = invoice_key(invoice)
        if key in seen:
            errors.setdefault(f"{field}.{index}.number", []).append(f"发票 {key} 在本单中重复")
        seen.add(key)
        issued = date.fromisoformat(invoice["date"])
        if issued > today:
            errors.setdefault(f"{field}.{index}.date", []).append(f"开票日期 {issued} 晚于今天（{today}）")
        elif issued < oldest:
            errors.setdefault(f"{field}.{index}.date", []).append(
                f"开票日期 {issued} 早于 {oldest}：超过 {max_age_days()} 天的发票不能报销")
    lines_total = sum((Decimal(i["amount"]) for i in invoices), Decimal("0.00"))
    if total is not None and lines_total != total:
        errors.setdefault(field, []).append(f"发票金额合计 {fmt(lines_total)} 元，与报销金额 {fmt(total)} 元不一致")
    return errors


def claim(session: Session, instance_id: str, field: str, invoices: list[dict[str, Any]], *,
          replace: bool = False) -> None:
    """The instance's invoices are now exactly `invoices` (`replace`: a resubmission may change them).

    One insert of all rows inside a savepoint: a collision rolls back only the savepoint, and the
    command fails with a 422 naming the invoice and the instance that holds it."""
    if replace:
        release(session, instance_id)
    now = clock.now()
    rows = [{"invoice_key": invoice_key(i), "instance_id": instance_id, "amount": to_money(i["amount"]),
             "invoice_date": date.fromisoformat(i["date"]), "created_at": now} for i in invoices]
    try:
        with session.begin_nested():
            session.execute(insert(InvoiceClaim), rows)
    except IntegrityError:
        held = set(session.scalars(select(InvoiceClaim.invoice_key).where(
            InvoiceClaim.invoice_key.in_([r["invoice_key"] for r in rows]))))
        index = next((n for n, r in enumerate(rows) if r["invoice_key"] in held), 0)
        raise _already_claimed(session, rows[index]["invoice_key"], f"{field}.{index}.number") from None


def release(session: Session, instance_id: str) -> None:
    session.execute(delete(InvoiceClaim).where(InvoiceClaim.instance_id == instance_id))


def _already_claimed(session: Session, key: str, field: str) -> InvalidInput:
    holder = session.execute(select(Instance.id, Instance.business_key).join(
        InvoiceClaim, InvoiceClaim.instance_id == Instance.id).where(InvoiceClaim.invoice_key == key)).first()
    instance_id, business_key = holder if holder else (None, None)
    return InvalidInput(f"发票 {key} 已用于报销单 {business_key or instance_id}，不能重复报销",
                        {"fields": {field: [f"invoice {key} is already claimed by instance {instance_id}"]},
                         "invoice": key, "instance_id": instance_id, "business_key": business_key},
                        code="invoice_already_claimed")
