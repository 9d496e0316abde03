"""Assignment expressions: who may act on a user task.

Expressions are a tiny declarative language (`manager(starter)`, `role(cfo)`, ...) rather than Python,
so a process designer can name approvers without being able to run code, and a deployment can be
checked before anything runs. See docs/process-authoring.md for the table of forms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.models import Department, GroupMember, User, UserRole

_EXPR = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$")
_ARITY = {"starter": 0, "manager": 1, "dept_head": 1, "role": 1, "group": 1, "users": None, "var": 1}


class AssignmentError(ValueError):
    pass


@dataclass(frozen=True)
class Assignment:
    function: str
    args: tuple[str, ...]


def parse_assignment(expression: str) -> Assignment:
    match = _EXPR.match(expression or "")
    if not match or match.group(1) not in _ARITY:
        raise AssignmentError(f"unknown assignment expression '{expression}'; "
                              f"use one of {', '.join(sorted(_ARITY))}")
    function = match.group(1)
    args = tuple(a.strip() for a in (match.group(2) or "").split(",") if a.strip())
    arity = _ARITY[function]
    if (arity is not None and len(args) != arity) or (arity is None and not args):
        raise AssignmentError(f"'{expression}': {function} takes "
                              f"{arity if arity is not None else 'one or more'} argument(s)")
    if function in ("manager",) and args[0] != "starter":
        raise AssignmentError(f"'{expression}': manager() takes 'starter'")
    return Assignment(function, args)


def resolve_candidates(session: Session, expression: str, starter_id: str, data: dict[str, Any]) -> list[str]:
    """The active users who may act, in a stable order; empty when nobody qualifies."""
    assignment = parse_assignment(expression)
    ids = _RESOLVERS[assignment.function](session, assignment.args, starter_id, data)
    return _active(session, ids)


def _starter(session, args, starter_id, data):
    return [starter_id]


def _manager(session, args, starter_id, data):
    manager = session.scalar(select(User.manager_id).where(User.id == starter_id))
    return [manager] if manager else []


def _dept_head(session, args, starter_id, data):
    dept = args[0]
    if dept == "starter":
        dept = session.scalar(select(User.department_id).where(User.id == starter_id))
    head = session.scalar(select(Department.head_id).where(Department.id == dept))
    return [head] if head else []


def _role(session, args, starter_id, data):
    return list(session.scalars(select(UserRole.user_id).where(UserRole.role_id == args[0])
                                .order_by(UserRole.user_id)))


def _group(session, args, starter_id, data):
    return list(session.scalars(select(GroupMember.user_id).where(GroupMember.group_id == args[0])
                                .order_by(GroupMember.user_id)))


def _users(session, args, starter_id, data):
    return list(args)


def _var(session, args, starter_id, data):
    value = data.get(args[0])
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


_RESOLVERS = {"starter": _starter, "manager": _manager, "dept_head": _dept_head, "role": _role,
              "group": _group, "users": _users, "var": _var}


def _active(session: Session, ids: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    active = set(session.scalars(select(User.id).where(User.id.in_(wanted), User.active.is_(True))))
    return [i for i in wanted if i in active]
