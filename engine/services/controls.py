"""Finance controls on a submission (start or resubmit), from what the start form declares.

A form marks its fields: `"x-budget-line": true` on the field naming the budget line the request charges,
`"x-invoices": {"total": "<amount field>"}` on the array of invoices backing it. Every channel submits
through the services that call `check_submission`, so the rules hold on all of them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from engine.errors import InvalidInput
from engine.finance import budgets, invoices
from engine.finance.money import MoneyError, to_money
from engine.models import Budget, User
from engine.services.forms import raise_if_invalid


def check_submission(session: Session, starter_id: str, form: dict[str, Any], data: dict[str, Any],
                     instance_id: str, *, resubmission: bool = False) -> None:
    """Refuse (422, naming the field) what the controls forbid, then claim the invoices for the instance."""
    properties = form.get("properties", {})
    for field, schema in properties.items():
        if schema.get("x-budget-line") and data.get(field):
            _check_budget_line(session, starter_id, field, data[field])
    claims = [(field, schema["x-invoices"]) for field, schema in properties.items()
              if isinstance(schema.get("x-invoices"), dict) and isinstance(data.get(field), list)]
    errors: dict[str, list[str]] = {}
    for field, rule in claims:
        errors.update(invoices.line_errors(field, data[field], _total(data, rule.get("total")), invoices.today()))
    raise_if_invalid(errors, "data")
    for field, _rule in claims:
        invoices.claim(session, instance_id, field, data[field], replace=resubmission)


def _check_budget_line(session: Session, starter_id: str, field: str, line: str) -> None:
    budget = session.get(Budget, line)
    if budget is None:
        raise InvalidInput(f"预算科目 {line} 不存在", {"fields": {field: [f"unknown budget line {line}"]}})
    starter = session.get(User, starter_id)
    if starter is None or not budgets.may_charge(session, starter, budget):
        raise InvalidInput(f"您所在部门不能使用预算科目 {line}（{budget.name}）",
                           {"fields": {field: [f"budget line {line} belongs to department {budget.department_id}; "
                                               "the applicant may not charge it"]}, "budget_line": line},
                           code="budget_line_not_allowed")


def _total(data: dict[str, Any], field: str | None):
    if not field or data.get(field) is None:
        return None
    try:
        return to_money(data[field])
    except MoneyError:
        return None
