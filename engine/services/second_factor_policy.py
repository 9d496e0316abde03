"""Which commands are sensitive enough to need a second factor (engine.services.second_factor):

* approving a task of an instance whose amount is above `FINFLOW_SECOND_FACTOR_AMOUNT` (default 50,000.00;
  "off" turns this off) when its process is one of `FINFLOW_SECOND_FACTOR_PROCESSES` (comma-separated,
  default "payment") — a large payment must not go out on a stolen session or a borrowed phone alone;
* changing the value of a field its form marks `"x-sensitive": true, "x-second-factor": true` (the payee's
  bank account): redirecting a payment is the fraud this guards against, whoever types the new value.

Pure functions of the instance, the form and the submitted data, read from the environment on each call
(as the adapters read theirs), so the approver page, the task API and the command agree on one answer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.finance.money import yuan
from engine.models import Instance

AMOUNT_VARIABLE = "FINFLOW_SECOND_FACTOR_AMOUNT"
PROCESSES_VARIABLE = "FINFLOW_SECOND_FACTOR_PROCESSES"
DEFAULT_AMOUNT = "50000.00"
DEFAULT_PROCESSES = "payment"
APPROVE = "approve"
FIELD_CHANGE = "field_change"


@dataclass(frozen=True)
class Need:
    """Why a command needs a code: its purpose (approve | field_change) and what the refusal tells the caller."""

    purpose: str
    details: dict[str, Any] = field(default_factory=dict)
    summary: str = "该操作"  # what the refusal says is sensitive, in Chinese


def threshold() -> Decimal | None:
    """The amount above which approving needs a code; None when turned off. A value that is not an amount
    is a configuration error (ValueError naming the variable), never silently "off"."""
    raw = os.environ.get(AMOUNT_VARIABLE, DEFAULT_AMOUNT).strip()
    if raw.lower() == "off":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0:
        raise ValueError(f"{AMOUNT_VARIABLE} must be an amount such as 50000.00, or off (got {raw!r})")
    return value


def processes() -> frozenset[str]:
    raw = os.environ.get(PROCESSES_VARIABLE, DEFAULT_PROCESSES)
    return frozenset(key.strip() for key in raw.split(",") if key.strip())


def approval_need(instance: Instance) -> Need | None:
    """Whether approving a task of `instance` needs a code (amount strictly above the threshold)."""
    limit = threshold()
    if limit is None or instance.amount is None or instance.process_key not in processes():
        return None
    if instance.amount <= limit:
        return None
    return Need(APPROVE, {"process_key": instance.process_key, "amount": str(instance.amount),
                          "threshold": str(limit)}, f"金额 {yuan(instance.amount)} 超过 {yuan(limit)} 的审批")


def second_factor_fields(form: dict[str, Any]) -> list[str]:
    """The top-level fields of `form` whose change needs a code."""
    return [name for name, spec in form.get("properties", {}).items()
            if isinstance(spec, dict) and spec.get("x-sensitive") and spec.get("x-second-factor") is True]


def field_change_need(form: dict[str, Any], current: dict[str, Any], submitted: dict[str, Any]) -> Need | None:
    """Whether `submitted` changes a second-factor field of `form` from its `current` value. Only the
    characters count: "6222 0202" and "62220202" are the same account (the card shows them alike)."""
    changed = [name for name in second_factor_fields(form)
               if name in submitted and _plain(submitted[name]) != _plain(current.get(name))]
    if not changed:
        return None
    titles = [str(form["properties"][name].get("title") or name) for name in changed]
    return Need(FIELD_CHANGE, {"fields": changed}, f"修改{'、'.join(titles)}")


def need_for(instance: Instance, action: str, form: dict[str, Any], form_data: dict[str, Any],
             current: dict[str, Any]) -> Need | None:
    """Why completing a task of `instance` with `action` and `form_data` (over the `current` values) needs a
    code, or None."""
    approval = approval_need(instance) if action == APPROVE else None
    change = field_change_need(form, current, form_data)
    if approval is not None and change is not None:
        return Need(APPROVE, {**approval.details, **change.details}, f"{approval.summary}（并{change.summary}）")
    return approval or change


def _plain(value: Any) -> str | None:
    return None if value is None else re.sub(r"\s+", "", str(value))
