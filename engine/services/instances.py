"""Starting, withdrawing and cancelling process instances."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import metrics
from engine.errors import Conflict, Forbidden, NotFound, TooManyRequests
from engine.history import Actor
from engine.models import HistoryEvent, Instance, ProcessDefinition, ProcessVersion, Task, User
from engine.org.directory import require_active_users
from engine.runner.execution import InstanceRun, run_command, utcnow
from engine.runner.summary import amount_of, title_of
from engine.services import access
from engine.services.controls import check_submission
from engine.services.deployments import model_for
from engine.services.forms import validate_form
from engine.services.queries import current_tasks

BUSINESS_KEY_PREFIX = {"reimbursement": "BX", "payment": "FK", "contract": "HT"}
CANCEL_ROLES = access.roles_granting("administer")
URGE_INTERVAL = timedelta(hours=1)


@metrics.timed("start")
def start_instance(session: Session, actor: Actor, process_key: str, data: dict[str, Any],
                   business_key: str | None = None) -> Instance:
    latest = session.execute(
        select(ProcessVersion.id, ProcessVersion.content_hash).join(
            ProcessDefinition, (ProcessDefinition.key == ProcessVersion.process_key)
            & (ProcessDefinition.latest_version == ProcessVersion.version))
        .where(ProcessVersion.process_key == process_key)).first()
    if latest is None:
        raise NotFound(f"流程 '{process_key}' 不存在", {"process_key": process_key})
    version_id, content_hash = latest
    model = model_for(session, version_id, content_hash)
    form = model.form(model.start_form)
    if model.start_form:
        data = validate_form(form, data, "data")
    now = utcnow()
    instance_id = str(uuid.uuid4())
    instance = Instance(
        id=instance_id, process_key=process_key, version_id=version_id,
        business_key=business_key or _business_key(process_key, instance_id, now),
        starter_id=actor.user_id, department_id=session.scalar(select(User.department_id).where(
            User.id == actor.user_id)), status="running", title=title_of(data), amount=amount_of(data), data=data,
        state="", last_seq=0, started_at=now, updated_at=now,
    )
    session.add(instance)
    check_submission(session, actor.user_id, form, data, instance_id)
    run = InstanceRun.start(session, instance, model, data, actor)
    run.save()
    return instance


def lock_instance(session: Session, instance_id: str) -> Instance:
    """Load an instance holding its row lock, so concurrent commands on it queue instead of racing."""
    instance = session.get(Instance, instance_id, with_for_update=True, populate_existing=True)
    if instance is None:
        raise NotFound(f"流程实例 {instance_id} 不存在", {"instance_id": instance_id})
    return instance


@metrics.timed("withdraw")
def withdraw_instance(session: Session, actor: Actor, instance_id: str, reason: str | None) -> Instance:
    """撤回: the applicant takes the request back while no approver has acted on it yet, or while it is
    back in the applicant's own hands (returned or rejected to them)."""
    instance = lock_instance(session, instance_id)
    if instance.starter_id != actor.user_id:
        raise Forbidden("只有申请人可以撤回申请", {"instance_id": instance_id})
    if instance.status == "running" and _approved_since_submission(session, instance) \
            and not _in_applicants_hands(session, instance):
        raise Conflict("已有审批人同意，不能直接撤回；请联系当前审批人退回后再撤回",
                       {"instance_id": instance_id}, code="withdraw_not_allowed")
    return _terminate(session, actor, instance, "withdrawn", reason)


@metrics.timed("urge")
def urge_instance(session: Session, actor: Actor, instance_id: str, message: str | None) -> list[Task]:
    """催办: the applicant nudges the current approvers, at most once an hour per task."""
    instance = lock_instance(session, instance_id)
    if instance.starter_id != actor.user_id:
        raise Forbidden("只有申请人可以催办", {"instance_id": instance_id})
    if instance.status != "running":
        raise Conflict(f"流程实例已结束（{instance.status}），无需催办", {"instance_id": instance_id})
    tasks = [t for t in current_tasks(session, instance_id) if t.status == "ready"]
    since = utcnow() - URGE_INTERVAL
    recent = {e.task_id: e.at for e in session.scalars(select(HistoryEvent).where(
        HistoryEvent.instance_id == instance_id, HistoryEvent.type == "task.urged", HistoryEvent.at >= since))}
    due = [t for t in tasks if t.id not in recent]
    if not due:
        wait = min((recent[t.id] + URGE_INTERVAL - utcnow()).total_seconds() for t in tasks) if tasks else 3600
        raise TooManyRequests("每个任务每小时只能催办一次，请稍后再试", retry_after=max(1, int(wait) + 1),
                              details={"instance_id": instance_id})
    run_command(session, instance, model_for(session, instance.version_id), actor, lambda run: run.urge(due, message))
    return due


@metrics.timed("cc")
def copy_instance(session: Session, actor: Actor, instance_id: str, users: list[str], note: str | None) -> list[str]:
    """抄送 added by the applicant or a current approver: the people may read the instance, not act."""
    instance = lock_instance(session, instance_id)
    approvers = {c for t in current_tasks(session, instance_id) for c in t.candidates}
    if actor.user_id != instance.starter_id and actor.user_id not in approvers:
        raise Forbidden("只有申请人或当前审批人可以抄送", {"instance_id": instance_id})
    users = list(dict.fromkeys(users))
    require_active_users(session, users, "users")
    return run_command(session, instance, model_for(session, instance.version_id), actor,
                       lambda run: run.copy_to(users, None))


def _approved_since_submission(session: Session, instance: Instance) -> bool:
    """Has an approver said yes since the applicant last (re)submitted?"""
    events = session.execute(select(HistoryEvent.type, HistoryEvent.payload, HistoryEvent.actor_id).where(
        HistoryEvent.instance_id == instance.id,
        HistoryEvent.type.in_(["task.completed", "task.returned"])).order_by(HistoryEvent.seq)).all()
    approved = False
    for type_, payload, actor_id in events:
        resubmitted = type_ == "task.completed" and payload.get("action") == "submit"
        if resubmitted or (type_ == "task.returned" and payload.get("to") == "applicant"):
            approved = False
        elif type_ == "task.completed" and payload.get("action") == "approve" and actor_id != instance.starter_id:
            approved = True
    return approved


def _in_applicants_hands(session: Session, instance: Instance) -> bool:
    tasks = [t for t in current_tasks(session, instance.id) if t.status == "ready"]
    return bool(tasks) and all(t.candidates == [instance.starter_id] for t in tasks)


@metrics.timed("cancel")
def cancel_instance(session: Session, actor: Actor, instance_id: str, reason: str | None) -> Instance:
    instance = lock_instance(session, instance_id)
    user = session.get(User, actor.user_id)
    if user is None or not (user.role_ids & CANCEL_ROLES):
        raise Forbidden("只有管理员可以作废流程实例", {"required_roles": sorted(CANCEL_ROLES)})
    return _terminate(session, actor, instance, "cancelled", reason)


def _terminate(session: Session, actor: Actor, instance: Instance, status: str, reason: str | None) -> Instance:
    if instance.status not in ("running", "failed"):
        raise Conflict(f"流程实例已结束（{instance.status}），不能再{'撤回' if status == 'withdrawn' else '作废'}",
                       {"instance_id": instance.id, "status": instance.status})
    run_command(session, instance, model_for(session, instance.version_id), actor,
                lambda run: run.terminate(status, reason))
    return instance


def _business_key(process_key: str, instance_id: str, now) -> str:
    prefix = BUSINESS_KEY_PREFIX.get(process_key, process_key[:4].upper())
    return f"{prefix}-{now:%Y%m%d}-{instance_id[:6].upper()}"


def record_integration_incident(session: Session, actor: Actor, instance_id: str, channel: str, kind: str,
                                message: str, details: dict[str, Any] | None = None) -> None:
    """History of something a channel could not keep in step (an OA submission given up, a decision taken
    on both sides): `integration.incident` with channel, kind and message, in order with the instance's other
    events and offered to subscribers like them. The instance itself does not change."""
    instance = lock_instance(session, instance_id)
    payload = {"channel": channel, "kind": kind, "message": message[:1000], **(details or {})}
    run_command(session, instance, model_for(session, instance.version_id), actor,
                lambda run: run.history.record("integration.incident", payload))
