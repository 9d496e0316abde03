"""Who may do what, and see how much: roles grant actions, role scopes limit which instances a role sees.

Every rule lives here so API, pages, exports and search ask the same question:
* actions — start, approve, design (deploy), audit (read-only audit pages, exports), administer;
* data scope per role and process — own, department (the starter's department when the instance
  started), department_tree (that department and the ones below it), all. Whatever the scope, anyone
  sees the instances they started, were asked to act on, or were copied on (抄送).
Scopes are rows of `role_scopes` (seeded from DEFAULT_SCOPES, changed by an administrator through
`set_role_scopes`); changes of roles and scopes go to the security log with before and after.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, Select, delete, exists, or_, select
from sqlalchemy.orm import Session

from engine.errors import Forbidden, InvalidInput
from engine.history import Actor
from engine.models import Department, Instance, InstanceCc, Role, RoleScope, Task, TaskCandidate, User, UserRole
from engine.services import security_log

ACTIONS = ("start", "approve", "design", "audit", "administer")
SCOPES = ("own", "department", "department_tree", "all")
ANY_PROCESS = "*"

ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "employee": frozenset({"start", "approve"}),
    "manager": frozenset({"start", "approve"}),
    "director": frozenset({"start", "approve"}),
    "finance": frozenset({"start", "approve"}),
    "cashier": frozenset({"start", "approve"}),
    "legal": frozenset({"start", "approve"}),
    "cfo": frozenset({"start", "approve"}),
    "gm": frozenset({"start", "approve"}),
    "designer": frozenset({"start", "design"}),
    "auditor": frozenset({"audit"}),
    "admin": frozenset(ACTIONS),
}

DEFAULT_SCOPES: dict[str, dict[str, str]] = {
    "employee": {ANY_PROCESS: "own"},
    "manager": {ANY_PROCESS: "department"},
    "director": {ANY_PROCESS: "department_tree"},
    "finance": {"reimbursement": "all", "payment": "all"},
    "cashier": {"payment": "all"},
    "legal": {"contract": "all"},
    "cfo": {ANY_PROCESS: "all"},
    "gm": {ANY_PROCESS: "all"},
    "designer": {ANY_PROCESS: "own"},
    "auditor": {ANY_PROCESS: "all"},
    "admin": {ANY_PROCESS: "all"},
}
_WIDTH = {scope: i for i, scope in enumerate(SCOPES)}


def roles_granting(action: str) -> frozenset[str]:
    return frozenset(role for role, actions in ROLE_ACTIONS.items() if action in actions)


def actions_of(user: User) -> frozenset[str]:
    return frozenset().union(*(ROLE_ACTIONS.get(role, frozenset()) for role in user.role_ids))


def may(user: User, action: str) -> bool:
    return action in actions_of(user)


def require(user: User, action: str, message: str) -> None:
    """Refuse (403) unless one of the user's roles grants `action`."""
    if not may(user, action):
        raise Forbidden(message, {"required_action": action,
                                  "roles_granting_it": sorted(r for r, a in ROLE_ACTIONS.items() if action in a)})


def scopes_of(session: Session, user: User) -> dict[str, str]:
    """process key (or "*") → the widest scope any of the user's roles has there."""
    widest: dict[str, str] = {}
    for process_key, scope in session.execute(select(RoleScope.process_key, RoleScope.scope)
                                              .where(RoleScope.role_id.in_(user.role_ids or {""}))):
        if process_key not in widest or _WIDTH[scope] > _WIDTH[widest[process_key]]:
            widest[process_key] = scope
    return widest


def sees_everything(session: Session, user: User) -> bool:
    return scopes_of(session, user).get(ANY_PROCESS) == "all"


def visible(session: Session, viewer: User) -> ColumnElement[bool]:
    """The WHERE clause of the instances `viewer` may see (for any SELECT that has `Instance` in it)."""
    involved = [Instance.starter_id == viewer.id,
                exists().where(Task.instance_id == Instance.id, TaskCandidate.task_id == Task.id,
                               TaskCandidate.user_id == viewer.id),
                exists().where(InstanceCc.instance_id == Instance.id, InstanceCc.user_id == viewer.id)]
    granted = granted_reach(session, viewer)
    return or_(*involved, *(granted if granted is not None else [_reach(session, viewer, "all")]))


def granted_reach(session: Session, viewer: User) -> list[ColumnElement[bool]] | None:
    """What the viewer's roles grant beyond what they are involved in, one clause per process key (or "*");
    None when a role grants every instance of every process."""
    granted = []
    for process_key, scope in scopes_of(session, viewer).items():
        reach = _reach(session, viewer, scope)
        if reach is None:
            continue
        if process_key == ANY_PROCESS and scope == "all":
            return None
        granted.append(reach if process_key == ANY_PROCESS else (Instance.process_key == process_key) & reach)
    return granted


def scope_instances(session: Session, stmt: Select, viewer: User) -> Select:
    return stmt.where(visible(session, viewer))


def _reach(session: Session, viewer: User, scope: str) -> ColumnElement[bool] | None:
    if scope == "all":
        return Instance.id.is_not(None)
    if scope == "department":
        return Instance.department_id == viewer.department_id
    if scope == "department_tree":
        return Instance.department_id.in_(department_tree(session, viewer.department_id))
    return None  # own: what `involved` already covers


def department_tree(session: Session, root: str) -> list[str]:
    """`root` and every department below it."""
    children: dict[str | None, list[str]] = {}
    for dept_id, parent_id in session.execute(select(Department.id, Department.parent_id)):
        children.setdefault(parent_id, []).append(dept_id)
    found, todo = [], [root]
    while todo:
        dept = todo.pop()
        if dept not in found:
            found.append(dept)
            todo.extend(children.get(dept, []))
    return found


# --- administration: role grants and scopes, each change in the security log ---------------------------


def seed_scopes(session: Session) -> None:
    """Give roles without any scope row their default ones (a fresh install, a new role)."""
    configured = set(session.scalars(select(RoleScope.role_id).distinct()))
    session.add_all(RoleScope(role_id=role, process_key=key, scope=scope)
                    for role, scopes in DEFAULT_SCOPES.items() if role not in configured
                    for key, scope in scopes.items())
    session.flush()


def role_scopes(session: Session) -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {role: {} for role in session.scalars(select(Role.id).order_by(Role.id))}
    for row in session.scalars(select(RoleScope).order_by(RoleScope.role_id, RoleScope.process_key)):
        table.setdefault(row.role_id, {})[row.process_key] = row.scope
    return table


def set_role_scopes(session: Session, actor: Actor, role: str, scopes: dict[str, str]) -> dict[str, str]:
    """Replace a role's scopes ({process key or "*": scope}); recorded as `role.scopes_changed`."""
    if session.get(Role, role) is None:
        raise InvalidInput(f"角色 {role} 不存在", {"fields": {"role": [f"unknown role {role!r}"]}})
    wrong = {key: value for key, value in scopes.items() if value not in SCOPES}
    if wrong:
        raise InvalidInput(f"未知的数据范围：{wrong}", {"fields": {"scopes": [f"use one of {list(SCOPES)}"]}})
    before = role_scopes(session).get(role, {})
    session.execute(delete(RoleScope).where(RoleScope.role_id == role))
    session.add_all(RoleScope(role_id=role, process_key=key, scope=value) for key, value in sorted(scopes.items()))
    session.flush()
    if before != scopes:
        security_log.record(session, "role.scopes_changed", actor, "role", role, before=before, after=scopes)
    return scopes


def set_user_roles(session: Session, actor: Actor, user_id: str, roles: Iterable[str]) -> list[str]:
    """Replace a user's roles; each grant and revocation recorded (`role.granted` / `role.revoked`)."""
    user = session.get(User, user_id)
    if user is None:
        raise InvalidInput(f"用户 {user_id} 不存在", {"fields": {"user_id": [f"unknown user {user_id!r}"]}})
    wanted = set(roles)
    known = set(session.scalars(select(Role.id)))
    if wanted - known:
        raise InvalidInput(f"未知的角色：{sorted(wanted - known)}", {"fields": {"roles": [
            f"unknown roles {sorted(wanted - known)}; use {sorted(known)}"]}})
    record_role_changes(session, actor, user_id, user.role_ids, wanted)
    session.execute(delete(UserRole).where(UserRole.user_id == user_id))
    session.add_all(UserRole(user_id=user_id, role_id=role) for role in sorted(wanted))
    session.flush()
    session.expire(user, ["roles"])
    return sorted(wanted)


def record_role_changes(session: Session, actor: Actor, user_id: str, before: set[str], after: set[str]) -> None:
    """The security log entries for a change of a user's roles (org loads and sync call this too)."""
    for role in sorted(after - before):
        security_log.record(session, "role.granted", actor, "user", user_id, role=role)
    for role in sorted(before - after):
        security_log.record(session, "role.revoked", actor, "user", user_id, role=role)

