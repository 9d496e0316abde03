"""Assignment expressions: who may act on a user task.

Expressions are a tiny declarative language (`manager(starter)`, `role(cfo)`, ...) rather than Python,
so a process designer can name approvers without being able to run code, and a deployment can be
checked before anything runs. See docs/process-authoring.md for the table of forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, select
from sqlalchemy.orm import Session, aliased

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
    """The active users who may act, in a stable order; empty when nobody qualifies. One query."""
    assignment = parse_assignment(expression)
    query = _RESOLVERS[assignment.function](assignment.args, starter_id, data)
    if query is None:
        return []
    return list(dict.fromkeys(session.scalars(query)))


def _active_ids(ids: list[str]) -> Select | None:
    if not ids:
        return None
    order = case({user_id: i for i, user_id in enumerate(ids)}, value=User.id)
    return select(User.id).where(User.id.in_(ids), User.active.is_(True)).order_by(order)


def _starter(args, starter_id, data):
    return _active_ids([starter_id])


_APPLICANT, _MANAGER, _HEAD = aliased(User), aliased(User), aliased(User)  # built once: aliasing is costly


def _manager(args, starter_id, data):
    applicant, manager = _APPLICANT, _MANAGER
    return (select(manager.id).select_from(applicant).join(manager, manager.id == applicant.manager_id)
            .where(applicant.id == starter_id, manager.active.is_(True)))


def _dept_head(args, starter_id, data):
    head = _HEAD
    stmt = select(head.id).select_from(Department).join(head, head.id == Department.head_id)
    if args[0] == "starter":
        stmt = stmt.join(User, User.department_id == Department.id).where(User.id == starter_id)
    else:
        stmt = stmt.where(Department.id == args[0])
    return stmt.where(head.active.is_(True))


def _role(args, starter_id, data):
    return (select(User.id).join(UserRole, UserRole.user_id == User.id)
            .where(UserRole.role_id == args[0], User.active.is_(True)).order_by(User.id))


def _group(args, starter_id, data):
    return (select(User.id).join(GroupMember, GroupMember.user_id == User.id)
            .where(GroupMember.group_id == args[0], User.active.is_(True)).order_by(User.id))


def _users(args, starter_id, data):
    return _active_ids(list(args))


def _var(args, starter_id, data):
    value = data.get(args[0])
    if isinstance(value, str):
        return _active_ids([value])
    return _active_ids([v for v in value if isinstance(v, str)] if isinstance(value, list) else [])


_RESOLVERS = {"starter": _starter, "manager": _manager, "dept_head": _dept_head, "role": _role,
              "group": _group, "users": _users, "var": _var}
