"""Small helpers shared by the tests: start, act, read history through the service layer."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from engine.db import transaction
from engine.finance.invoices import today as china_today
from engine.history import Actor
from engine.models import Budget, HistoryEvent, Instance, Task, Voucher
from engine.services.instances import start_instance
from engine.services.queries import current_tasks
from engine.services.tasks import complete_task


def invoice(amount: Any, number: str | None = None, days_ago: int = 3, code: str | None = None) -> dict[str, Any]:
    """An invoice line dated a few days ago, with a number no other test claim uses unless given."""
    line = {"number": number or f"{next(_INVOICE_NUMBERS):020d}", "amount": amount,
            "date": (china_today() - timedelta(days=days_ago)).isoformat()}
    return {**line, "code": code} if code else line


def claim(category: str = "办公", amount: Any = 1200, reason: str = "采购办公用品") -> dict[str, Any]:
    return {"category": category, "amount": amount, "reason": reason, "invoices": [invoice(amount)]}


_INVOICE_NUMBERS = itertools.count(random.randrange(10**12, 10**13) * 10**6)


def payment(amount: float = 30000, budget_line: str = "MKT-ADS-2026") -> dict[str, Any]:
    return {"payee": "杭州印象广告有限公司", "bank_account": "6222020200112233445", "bank_name": "工商银行",
            "amount": amount, "due_date": "2026-12-01", "budget_line": budget_line, "purpose": "品牌推广服务费"}


def contract(amount: float = 180000) -> dict[str, Any]:
    return {"title": "云服务采购合同", "counterparty": "阿里云计算有限公司", "amount": amount, "contract_type": "采购",
            "attachments": [{"name": "合同正文.pdf", "size": 482133, "sha256": "ab" * 32}]}


def start(process_key: str, starter: str, data: dict[str, Any]) -> str:
    with transaction() as session:
        return start_instance(session, Actor(starter), process_key, data).id


def ready(instance_id: str) -> list[Task]:
    with transaction() as session:
        return [t for t in current_tasks(session, instance_id) if t.status == "ready"]


def open_tasks(instance_id: str) -> list[Task]:
    with transaction() as session:
        return current_tasks(session, instance_id)


def ready_nodes(instance_id: str) -> list[str]:
    return sorted(t.node_id for t in ready(instance_id))


def act(instance_id: str, node_id: str, action: str = "approve", user: str | None = None,
        form: dict[str, Any] | None = None, comment: str = "ok") -> Task:
    task = next(t for t in ready(instance_id) if t.node_id == node_id and (user is None or user in t.candidates))
    with transaction() as session:
        done, _ = complete_task(session, Actor(user or task.candidates[0]), task.id, action, comment, form or {})
    return done


def instance(instance_id: str) -> Instance:
    with transaction() as session:
        return session.get(Instance, instance_id)


def events(instance_id: str) -> list[HistoryEvent]:
    with transaction() as session:
        return list(session.scalars(select(HistoryEvent).where(HistoryEvent.instance_id == instance_id)
                                    .order_by(HistoryEvent.seq)))


def completed_user_nodes(instance_id: str) -> list[str]:
    return [e.node_id for e in events(instance_id) if e.type == "task.completed"]


def budget(line: str) -> Budget:
    with transaction() as session:
        return session.get(Budget, line)


def vouchers(instance_id: str) -> list[Voucher]:
    with transaction() as session:
        return list(session.scalars(select(Voucher).where(Voucher.instance_id == instance_id)))
