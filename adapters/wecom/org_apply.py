"""Applying WeCom's org to finflow's tables: the id and field mapping, upserts of departments and users,
and the report of what changed (shared by the full and the incremental sync in sync.py; the mapping's
variables are documented there)."""

from __future__ import annotations

import json
import os
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from engine.history import Actor
from engine.models import Budget, Department, User, UserRole
from engine.services import access
from engine.services.org import deactivate_users

SYNC_ACTOR = Actor(None, "sync")
DEFAULT_FIELDS = {"name": "name", "title": "position", "mobile": "mobile", "email": "email"}
REPORT_KEYS = ("departments_created", "departments_updated", "departments_removed", "departments_kept",
               "users_created", "users_updated", "users_deactivated", "users_reactivated", "tasks_reassigned")
CHANGE_KEYS = tuple(k for k in REPORT_KEYS if k != "departments_kept")  # kept departments are not changes


# -- mapping ----------------------------------------------------------------------------------------

class Mapping:
    """How WeCom ids and fields become finflow's (env, see the module docstring)."""

    def __init__(self) -> None:
        self.departments = {str(k): str(v) for k, v in _env_json("FINFLOW_WECOM_DEPT_MAP", {}).items()}
        self.department_format = os.environ.get("FINFLOW_WECOM_DEPT_ID", "wx{id}")
        self.fields = {k: v for k, v in {**DEFAULT_FIELDS, **_env_json("FINFLOW_WECOM_FIELD_MAP", {})}.items() if v}

    def department(self, wecom_id: Any) -> str:
        return self.departments.get(str(wecom_id)) or self.department_format.format(id=wecom_id)

    def user_values(self, wx: dict[str, Any]) -> dict[str, Any]:
        """The finflow User columns for a WeCom user record."""
        leaders = [u for u in wx.get("direct_leader") or [] if u]
        values = {field: (str(wx[source]) if wx.get(source) not in (None, "") else None)
                  for field, source in self.fields.items()}
        values["name"] = values.get("name") or wx["userid"]
        main = wx.get("main_department") or (wx.get("department") or [None])[0]
        values.update(department_id=self.department(main), manager_id=leaders[0] if leaders else None,
                      active=int(wx.get("status", 1)) == 1 and int(wx.get("enable", 1)) != 0)
        return values


def _env_json(name: str, default: dict) -> dict:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object")
    return value


def new_report() -> dict[str, list]:
    return {key: [] for key in REPORT_KEYS}


# -- applying ---------------------------------------------------------------------------------------

def upsert_department(session: Session, values: dict[str, Any], report: dict[str, list]) -> None:
    """Create or update one department (values: id, name, parent_id, head_id; None parent is the root)."""
    department = session.get(Department, values["id"])
    if department is None:
        session.add(Department(**values))
        report["departments_created"].append(values["id"])
    elif _changed(department, values):
        report["departments_updated"].append(values["id"])
    session.flush()


def upsert_user(session: Session, userid: str, values: dict[str, Any], report: dict[str, list]) -> None:
    """Create (role employee) or update one user; a user turned inactive is left for deactivate_users."""
    user = session.get(User, userid)
    if user is None:
        session.add(User(id=userid, **values))
        session.flush()
        session.add(UserRole(user_id=userid, role_id="employee"))
        access.record_role_changes(session, SYNC_ACTOR, userid, set(), {"employee"})
        report["users_created"].append(userid)
        if not values["active"]:
            report["users_deactivated"].append(userid)
        return
    was_active, active = user.active, values.pop("active")
    if _changed(user, values):
        report["users_updated"].append(userid)
    if active and not was_active:
        user.active = True
        report["users_reactivated"].append(userid)
    elif was_active and not active:
        report["users_deactivated"].append(userid)


def _changed(row: Any, values: dict[str, Any]) -> bool:
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def remove_department(session: Session, department_id: str, report: dict[str, list]) -> None:
    """Delete a department WeCom no longer has, unless people, sub-departments or budgets still use it."""
    used = session.scalar(select(
        exists().where(User.department_id == department_id)
        | exists().where(Department.parent_id == department_id)
        | exists().where(Budget.department_id == department_id)))
    if used:
        report["departments_kept"].append(department_id)
        return
    session.delete(session.get(Department, department_id))
    session.flush()
    report["departments_removed"].append(department_id)


def finish_deactivations(session: Session, report: dict[str, list]) -> None:
    """Everyone the report deactivates loses approval rights now, and their open tasks move on."""
    moved = deactivate_users(session, report["users_deactivated"], SYNC_ACTOR)
    report["tasks_reassigned"].extend(moved)
