"""Org sync from WeCom: departments and members become finflow's departments, users and managers.

Full sync (`full_sync`) fetches everything first (department/list, then user/list per department) and
applies it in ONE transaction: any error and nothing is applied, the `wecom_sync_runs` row says failed and
the admins (FINFLOW_WECOM_ADMINS) get a WeCom text 「组织同步失败：…」. Incremental sync (`apply_change`)
applies one decrypted `change_contact` event at once. Both record a run row with the report of what changed.

Mapping (WeCom → finflow):
* department id → `FINFLOW_WECOM_DEPT_MAP` (JSON object, WeCom id → finflow id, e.g. {"1": "ceo_office"});
  an unlisted id becomes `FINFLOW_WECOM_DEPT_ID` formatted with {id} (default "wx{id}"). The root's parent is None.
  department.head_id = department_leader[0], else a member with is_leader_in_dept 1 for that department.
* user id = WeCom userid; department = main_department; manager_id = direct_leader[0];
  active = status == 1 and enable != 0. The other fields come from `FINFLOW_WECOM_FIELD_MAP` (JSON object,
  finflow user field → WeCom field; default {"name": "name", "title": "position", "mobile": "mobile",
  "email": "email"}; a field mapped to null is left alone).
* roles: existing users keep theirs; new users get "employee".

With FINFLOW_WECOM_ORG_SYNC=1 WeCom is the source of truth: a full sync deactivates users WeCom no longer
has, and removes departments it no longer has unless they still have users, sub-departments or budgets
(those are kept and reported). A user deactivated (deleted, disabled, quit) loses approval rights at once and
their open tasks move on (engine.services.org.deactivate_users).

Nightly: `register()` adds a sweep check (engine.events.every_sweep) that claims one full run per day after
FINFLOW_SYNC_ACTOR_HOUR (Asia/Shanghai) — the run row's unique `slot` makes the claim safe between workers —
and runs it on the `sync` rq queue (a background thread in embedded mode).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.wecom.client import WeComClient, client
from adapters.wecom.config import WeComConfig
from adapters.wecom.models import WeComSyncRun
from adapters.wecom.org_apply import (
    SYNC_ACTOR,
    Mapping,
    finish_deactivations,
    new_report,
    remove_department,
    upsert_department,
    upsert_user,
)
from engine import clock
from engine.db import transaction
from engine.models import Department, User, UserRole
from engine.org.directory import ensure_roles, parents_first
from engine.services import access

log = logging.getLogger("finflow.wecom.sync")
SHANGHAI = ZoneInfo("Asia/Shanghai")
Progress = Callable[[int, int], None]


class NotConfigured(RuntimeError):
    """FINFLOW_WECOM_CORP_ID is not set: there is no WeCom to sync from."""


class DryRun(Exception):
    """Raised inside the apply transaction to roll it back, carrying the report."""

    def __init__(self, report: dict[str, list]):
        super().__init__("dry run")
        self.report = report


# -- full sync ------------------------------------------------------------------------------------------

def fetch(api: WeComClient, progress: Progress | None = None) -> dict[str, Any]:
    """Everything a full sync needs, read before anything is written: departments and their members."""
    departments = api.departments()
    users: dict[str, dict[str, Any]] = {}
    for done, department in enumerate(departments, 1):
        for member in api.users_of(department["id"]):
            users.setdefault(member["userid"], member)
        if progress:
            progress(done, len(departments))
    return {"departments": departments, "users": users}


def apply_snapshot(session: Session, snapshot: dict[str, Any], mapping: Mapping, source_of_truth: bool,
                   report: dict[str, list]) -> None:
    ensure_roles(session)
    departments = snapshot["departments"]
    known = {d["id"] for d in departments}
    heads = _department_heads(departments, snapshot["users"].values())
    for d in parents_first(departments, "parentid"):
        parent = d.get("parentid")
        upsert_department(session, {"id": mapping.department(d["id"]), "name": d["name"],
                                    "parent_id": mapping.department(parent) if parent in known else None,
                                    "head_id": heads.get(d["id"])}, report)
    for userid, wx in snapshot["users"].items():
        upsert_user(session, userid, mapping.user_values(wx), report)
    if source_of_truth:
        wanted = set(snapshot["users"])
        report["users_deactivated"].extend(sorted(
            u for u in session.scalars(select(User.id).where(User.active.is_(True))) if u not in wanted))
        mapped = {mapping.department(d) for d in known}
        for department_id in _children_first(session, mapped):
            remove_department(session, department_id, report)
    finish_deactivations(session, report)


def _department_heads(departments: list[dict[str, Any]], users) -> dict[int, str]:
    """department_leader[0], else a member flagged is_leader_in_dept for that department."""
    heads = {d["id"]: d["department_leader"][0] for d in departments if d.get("department_leader")}
    for wx in users:
        for department, leader in zip(wx.get("department") or [], wx.get("is_leader_in_dept") or [], strict=False):
            if leader:
                heads.setdefault(department, wx["userid"])
    return heads


def _children_first(session: Session, keep: set[str]) -> list[str]:
    """finflow departments WeCom no longer has, the deepest first (a parent may empty once its children go)."""
    rows = dict(session.execute(select(Department.id, Department.parent_id)).all())

    def depth(d: str) -> int:
        level, seen = 0, set()
        while rows.get(d) and d not in seen:
            seen.add(d)
            d, level = rows[d], level + 1
        return level

    return sorted((d for d in rows if d not in keep), key=lambda d: (-depth(d), d))


def full_sync(database_url: str | None = None, progress: Progress | None = None, *, dry_run: bool = False,
              run_id: int | None = None) -> dict[str, Any]:
    """Fetch the whole org from WeCom and apply it in one transaction; returns the report (the run row
    holds it too). Raises after recording the failure (and telling the admins) when anything goes wrong;
    `dry_run` applies, reports and rolls back, recording nothing. `run_id`: a row claimed beforehand."""
    config = _config()
    mapping = Mapping()
    if not dry_run and run_id is None:
        run_id = start_run(database_url, "full")
    try:
        snapshot = fetch(client(config), progress)
        report = new_report()
        with transaction(database_url) as session:
            apply_snapshot(session, snapshot, mapping, config.org_sync, report)
            if dry_run:
                raise DryRun(report)
            _finish_run(session, run_id, report)
        return report
    except DryRun as done:
        return done.report
    except Exception as exc:
        if run_id is not None:
            fail_run(database_url, run_id, exc, config)
        raise


def _config() -> WeComConfig:
    config = WeComConfig.from_env()
    if config is None:
        raise NotConfigured("WeCom is not configured: set FINFLOW_WECOM_CORP_ID, FINFLOW_WECOM_AGENT_ID, "
                            "FINFLOW_WECOM_SECRET, FINFLOW_WECOM_TOKEN and FINFLOW_WECOM_AES_KEY")
    return config


# -- run rows ---------------------------------------------------------------------------------------

def start_run(database_url: str | None, kind: str, slot: str | None = None) -> int:
    """Insert a running row (own transaction, so a failure stays recorded); IntegrityError if `slot` is taken."""
    with transaction(database_url) as session:
        run = WeComSyncRun(kind=kind, status="running", report={}, started_at=clock.now(), slot=slot)
        session.add(run)
        session.flush()
        return run.id


def _finish_run(session: Session, run_id: int | None, report: dict[str, list]) -> None:
    if run_id is None:
        session.add(WeComSyncRun(kind="incremental", status="done", report=report, started_at=clock.now(),
                                 finished_at=clock.now()))
        return
    run = session.get(WeComSyncRun, run_id)
    run.status, run.report, run.finished_at = "done", report, clock.now()


def fail_run(database_url: str | None, run_id: int | None, exc: Exception, config: WeComConfig,
             kind: str = "full") -> None:
    """Record the failure (nothing was applied) and tell the configured admins on WeCom."""
    error = f"{type(exc).__name__}: {exc}"
    log.error("wecom org sync failed: %s", error)
    with transaction(database_url) as session:
        run = session.get(WeComSyncRun, run_id) if run_id is not None else None
        if run is None:
            run = WeComSyncRun(kind=kind, report={}, started_at=clock.now())
            session.add(run)
        run.status, run.error, run.finished_at = "failed", error, clock.now()
    if config.admins:
        try:
            client(config).send({"touser": "|".join(config.admins), "msgtype": "text",
                                 "text": {"content": f"组织同步失败：{error}"[:2000]}})
        except Exception:  # the failure is recorded; a WeCom that cannot take the message changes nothing
            log.exception("wecom: could not tell the admins that the org sync failed")


# -- nightly ----------------------------------------------------------------------------------------

def due_slot(session: Session, config: WeComConfig | None, now: datetime | None = None) -> str | None:
    """Today's nightly slot when a full run is due: org sync on, past today's hour (Asia/Shanghai) and no
    full run started since then."""
    if config is None or not config.org_sync:
        return None
    local = (now or clock.now()).astimezone(SHANGHAI)
    since = datetime.combine(local.date(), time(config.sync_hour), SHANGHAI)
    if local < since:
        return None
    started = session.scalar(select(func.count()).select_from(WeComSyncRun).where(
        WeComSyncRun.kind == "full", WeComSyncRun.started_at >= since))
    return None if started else f"nightly:{local.date().isoformat()}"


def nightly_check(database_url: str | None = None) -> int | None:
    """The sweep's cheap check: claim and start today's full run when due; the claimed run's id, else None."""
    config = WeComConfig.from_env()
    with transaction(database_url, readonly=True) as session:
        slot = due_slot(session, config)
    if slot is None:
        return None
    try:
        run_id = start_run(database_url, "full", slot)
    except IntegrityError:  # another worker claimed tonight's run first
        return None
    _launch(run_id, database_url)
    return run_id


def _launch(run_id: int, database_url: str | None) -> None:
    from engine.outbox.dispatch import queue, redis_url

    url = redis_url()
    if url:
        queue("sync", url).enqueue(run_claimed, run_id, database_url, job_timeout=3600)
    else:
        threading.Thread(target=run_claimed, args=(run_id, database_url), name="wecom-nightly-sync",
                         daemon=True).start()


def run_claimed(run_id: int, database_url: str | None = None) -> None:
    """The job: run the full sync on the row the nightly check claimed (failures are recorded there)."""
    try:
        full_sync(database_url, run_id=run_id)
    except Exception:
        log.exception("wecom nightly org sync (run %s) failed", run_id)


def register() -> None:
    """Hook the nightly check into every worker's and the embedded API's sweep (called by the adapter's load)."""
    from engine.events import every_sweep

    every_sweep("wecom.nightly_sync", nightly_check)


# -- incremental --------------------------------------------------------------------------------------

USER_EVENTS = ("create_user", "update_user")


def apply_change(fields: dict[str, str], database_url: str | None = None) -> str:
    """Apply one decrypted change_contact event at once, in one transaction, recorded as an incremental run;
    returns what it did (for the callback's record). A failure is recorded (and told to the admins), then raised."""
    config = _config()
    change = fields.get("ChangeType", "")
    if change not in (*USER_EVENTS, "delete_user", "create_party", "update_party", "delete_party"):
        return f"ignored: ChangeType {change or '(none)'}"
    try:
        api = client(config)
        wx = _event_user(api, fields) if change in USER_EVENTS else None  # read WeCom before writing
        report = new_report()
        with transaction(database_url) as session:
            subject = _apply_event(session, api, Mapping(), change, fields, wx, report)
            _finish_run(session, None, report)
    except Exception as exc:
        fail_run(database_url, None, exc, config, kind="incremental")
        raise
    return summary(f"{change} {subject}", report)


def summary(title: str, report: dict[str, list]) -> str:
    changes = [f"{key} {len(value)}" for key, value in report.items() if value]
    return f"{title}: {', '.join(changes) if changes else 'no change'}"


def _event_user(api: WeComClient, fields: dict[str, str]) -> dict[str, Any]:
    """The user record in user/get's shape: from the event when it has the details, else fetched."""
    userid = fields.get("NewUserID") or fields["UserID"]
    if not (fields.get("Name") and (fields.get("MainDepartment") or fields.get("Department"))):
        return api.user(userid)
    departments = _ints(fields.get("Department", ""))
    return {"userid": userid, "name": fields["Name"], "department": departments,
            "main_department": int(fields.get("MainDepartment") or departments[0]),
            "position": fields.get("Position"), "mobile": fields.get("Mobile"), "email": fields.get("Email"),
            "direct_leader": [u for u in fields.get("DirectLeader", "").split(",") if u],
            "is_leader_in_dept": _ints(fields.get("IsLeaderInDept", "")),
            "status": int(fields.get("Status") or 1), "enable": int(fields.get("Enable") or 1)}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _apply_event(session: Session, api: WeComClient, mapping: Mapping, change: str, fields: dict[str, str],
                 wx: dict[str, Any] | None, report: dict[str, list]) -> str:
    ensure_roles(session)
    if change == "delete_user":
        user = session.get(User, fields["UserID"])
        if user is not None and user.active:
            report["users_deactivated"].append(user.id)
    elif wx is not None:
        values = mapping.user_values(wx)
        _ensure_department(session, api, mapping, wx["main_department"], values["department_id"], report)
        upsert_user(session, wx["userid"], values, report)
        old = fields["UserID"]
        if wx["userid"] != old and session.get(User, old) is not None:  # NewUserID: the userid was changed
            _copy_roles(session, old, wx["userid"])
            report["users_deactivated"].append(old)
    else:
        _apply_party(session, mapping, change, fields, report)
        finish_deactivations(session, report)
        return mapping.department(fields["Id"])
    finish_deactivations(session, report)
    return wx["userid"] if wx else fields["UserID"]


def _apply_party(session: Session, mapping: Mapping, change: str, fields: dict[str, str],
                 report: dict[str, list]) -> None:
    department_id = mapping.department(fields["Id"])
    if change == "delete_party":
        if session.get(Department, department_id) is not None:
            remove_department(session, department_id, report)
        return
    current = session.get(Department, department_id)
    parent = fields.get("ParentId")
    parent_id = mapping.department(parent) if parent and parent != "0" else None
    if parent_id is not None and session.get(Department, parent_id) is None:
        parent_id = None  # a parent finflow does not know (outside the app's range): a root here
    values = {"id": department_id, "name": fields.get("Name") or (current.name if current else department_id),
              "parent_id": parent_id if parent is not None or current is None else current.parent_id,
              "head_id": current.head_id if current else None}
    upsert_department(session, values, report)


def _ensure_department(session: Session, api: WeComClient, mapping: Mapping, wecom_id: int, department_id: str,
                       report: dict[str, list]) -> None:
    """A user's department finflow does not have yet (its create_party event not seen): fetch and create it."""
    if session.get(Department, department_id) is not None:
        return
    found = next((d for d in api.departments(wecom_id) if d["id"] == wecom_id), {"name": department_id})
    parent = mapping.department(found["parentid"]) if found.get("parentid") else None
    upsert_department(session, {"id": department_id, "name": found["name"],
                                "parent_id": parent if parent and session.get(Department, parent) else None,
                                "head_id": (found.get("department_leader") or [None])[0]}, report)


def _copy_roles(session: Session, old: str, new: str) -> None:
    roles = set(session.scalars(select(UserRole.role_id).where(UserRole.user_id == old)))
    have = set(session.scalars(select(UserRole.role_id).where(UserRole.user_id == new)))
    session.add_all(UserRole(user_id=new, role_id=r) for r in sorted(roles - have))
    access.record_role_changes(session, SYNC_ACTOR, new, have, roles | have)
    session.flush()
