"""Loading and reading the org: the demo company ships as JSON, a real one arrives through sync later."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine.errors import InvalidInput
from engine.finance import budgets
from engine.finance.money import to_money
from engine.history import Actor
from engine.models import Budget, Department, Group, GroupMember, Role, User, UserRole
from engine.services import access

ROLES = {
    "employee": "员工", "manager": "主管", "director": "部门负责人", "cfo": "财务总监", "gm": "总经理",
    "finance": "会计", "cashier": "出纳", "legal": "法务", "auditor": "审计", "designer": "流程设计",
    "admin": "管理员",
}
ORG_LOAD = Actor(user_id=None, channel="org")  # who changes roles when an org document is loaded
DEMO_ORG = Path(__file__).resolve().parent.parent / "demo" / "org.json"


def require_active_users(session: Session, users: list[str], field: str) -> None:
    """Refuse (422, naming the field) an empty list or any user who is unknown or inactive."""
    if not users:
        raise InvalidInput(f"{field} is required", {"fields": {field: ["at least one user is required"]}})
    active = set(session.scalars(select(User.id).where(User.id.in_(users), User.active.is_(True))))
    missing = [u for u in users if u not in active]
    if missing:
        raise InvalidInput(f"用户不存在或已停用：{', '.join(missing)}", {"fields": {field: [
            f"unknown or inactive users: {missing}"]}})


def ensure_roles(session: Session) -> None:
    """The roles finflow knows, each with its default data scopes unless an administrator set others."""
    existing = set(session.scalars(select(Role.id)))
    session.add_all(Role(id=k, name=v) for k, v in ROLES.items() if k not in existing)
    session.flush()
    access.seed_scopes(session)


def load_org(session: Session, org: dict[str, Any]) -> dict[str, int]:
    """Insert or update departments, users, roles, groups and budgets from an org document."""
    ensure_roles(session)
    for d in parents_first(org["departments"]):
        session.merge(Department(id=d["id"], name=d["name"], parent_id=d.get("parent"), head_id=d.get("head")))
    session.flush()
    for u in org["users"]:
        unknown = set(u["roles"]) - set(ROLES)
        if unknown:
            raise ValueError(f"user {u['id']}: unknown roles {sorted(unknown)}")
        user = session.merge(User(id=u["id"], name=u["name"], department_id=u["department"],
                                  manager_id=u.get("manager"), title=u.get("title"), mobile=u.get("mobile"),
                                  email=u.get("email"), active=u.get("active", True)))
        session.flush()
        before = set(session.scalars(select(UserRole.role_id).where(UserRole.user_id == user.id)))
        access.record_role_changes(session, ORG_LOAD, user.id, before, set(u["roles"]))
        session.execute(delete(UserRole).where(UserRole.user_id == user.id))
        session.add_all(UserRole(user_id=user.id, role_id=r) for r in u["roles"])
    for g in org.get("groups", []):
        session.merge(Group(id=g["id"], name=g["name"]))
        session.flush()
        session.execute(delete(GroupMember).where(GroupMember.group_id == g["id"]))
        session.add_all(GroupMember(group_id=g["id"], user_id=m) for m in g["members"])
    for b in org.get("budgets", []):
        _load_budget(session, b)
    session.flush()
    return {"departments": len(org["departments"]), "users": len(org["users"]),
            "groups": len(org.get("groups", [])), "budgets": len(org.get("budgets", []))}


def _load_budget(session: Session, line: dict[str, Any]) -> None:
    """A new line starts its ledger with its opening figures; loading the org again changes a line's
    descriptive fields and, through an `adjust` entry, its amount — never what was used or reserved."""
    budget = session.get(Budget, line["line"], with_for_update=True)
    amount = to_money(str(line["amount"]))
    fields = {"name": line["name"], "department_id": line["department"], "year": line["year"],
              "cost_center": line.get("cost_center"), "expense_account": line["expense_account"],
              "expense_account_name": line["expense_account_name"]}
    if budget is None:
        budget = Budget(line=line["line"], amount=amount, used=to_money(str(line.get("used", 0))),
                        reserved=Decimal("0.00"), **fields)
        session.add(budget)
        budgets.open_line(session, budget, None)
        return
    for name, value in fields.items():
        setattr(budget, name, value)
    budgets.adjust(session, budget, amount, None, "组织数据导入：调整预算额度")


def load_demo_org(session: Session) -> dict[str, int]:
    return load_org(session, json.loads(DEMO_ORG.read_text(encoding="utf-8")))


def parents_first(departments: list[dict[str, Any]], parent_key: str = "parent") -> list[dict[str, Any]]:
    """Departments ordered so each comes after its parent (a loader inserts them in this order, so a
    parent's row exists before its children point at it); `parent_key` names the parent id's field."""
    by_id = {d["id"]: d for d in departments}
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(d: dict[str, Any]) -> None:
        if d["id"] in seen:
            return
        seen.add(d["id"])
        if d.get(parent_key) in by_id:
            visit(by_id[d[parent_key]])
        ordered.append(d)

    for d in departments:
        visit(d)
    return ordered
