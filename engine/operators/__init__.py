"""Service-task operators: the Python behind BPMN service tasks (budget check, voucher, org lookups).

A service task names an operator and passes parameters evaluated over the workflow data. Operators run
inside the command's transaction, with the context bound below, so what they write (a voucher, budget
usage, a history event) commits or rolls back together with the step that ran them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session


@dataclass
class OperatorContext:
    session: Session
    instance_id: str
    starter_id: str
    record: Callable[[str, dict[str, Any]], None]  # append a history event to the running command


Operator = Callable[..., Any]
_OPERATORS: dict[str, Operator] = {}
_current: ContextVar[OperatorContext] = ContextVar("finflow_operator_context")


def operator(name: str) -> Callable[[Operator], Operator]:
    def register(fn: Operator) -> Operator:
        _OPERATORS[name] = fn
        return fn
    return register


def known_operators() -> set[str]:
    return set(_OPERATORS)


@contextmanager
def bound(context: OperatorContext) -> Iterator[None]:
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


def invoke(name: str, params: dict[str, Any]) -> Any:
    if name not in _OPERATORS:
        raise LookupError(f"unknown service operator '{name}'")
    return _OPERATORS[name](_current.get(), **params)


from engine.operators import budget, org, voucher  # noqa: E402,F401  (registers the operators)
