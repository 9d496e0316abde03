"""Every read that lists or opens instances and tasks goes through here, behind one data-scope rule
(engine.services.access: roles × scopes). An instance outside the viewer's scope is answered exactly
like one that does not exist (404), so ids cannot be probed; a list never holds a row its detail would
refuse, because both use the same WHERE clause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from engine import clock
from engine.errors import NotFound
from engine.history import instance_history
from engine.models import HistoryArchive, HistoryEvent, Instance, InstanceCc, Task, TaskCandidate, User
from engine.services import access

LOCAL_ZONE = ZoneInfo("Asia/Shanghai")


@dataclass
class Page:
    items: list[Any]
    total: int
    page: int
    per_page: int

    @property
    def meta(self) -> dict[str, int]:
        return {"total": self.total, "page": self.page, "per_page": self.per_page}


def _asked(user_id: str):
    """The instance has a task `user_id` was a candidate for (asked to act on it)."""
    return exists().where(Task.instance_id == Instance.id, TaskCandidate.task_id == Task.id,
                          TaskCandidate.user_id == user_id)


def scope_instances(session: Session, stmt: Select, viewer: User) -> Select:
    """`stmt` (a SELECT with Instance in it) limited to what `viewer` may see."""
    return access.scope_instances(session, stmt, viewer)


def get_instance(session: Session, viewer: User, instance_id: str) -> Instance:
    """The instance, or 404 alike whether it does not exist or lies outside the viewer's scope."""
    instance = session.scalar(scope_instances(session, select(Instance).where(Instance.id == instance_id), viewer))
    if instance is None:
        raise NotFound(f"流程实例 {instance_id} 不存在", {"instance_id": instance_id})
    return instance


def search_instances(session: Session, viewer: User, *, page: int = 1, per_page: int = 20, **criteria: Any) -> Page:
    """Instances the viewer may see matching `criteria` (instance_filter's), newest first, a page of them."""
    stmt = scope_instances(session, instance_filter(**criteria), viewer)
    return _paginate(session, stmt.order_by(Instance.started_at.desc(), Instance.id), page, per_page)


def instance_filter(*, process_key: str | None = None, status: str | None = None, business_key: str | None = None,
                    starter: str | None = None, started_from: datetime | None = None,
                    started_to: datetime | None = None, approver: str | None = None,
                    amount_min: Decimal | None = None, amount_max: Decimal | None = None) -> Select:
    """The SELECT of instances matching a search (search_instances pages it; the auditor's export streams it)."""
    stmt = select(Instance)
    for column, value in ((Instance.process_key, process_key), (Instance.status, status),
                          (Instance.business_key, business_key), (Instance.starter_id, starter)):
        if value is not None:
            stmt = stmt.where(column == value)
    if started_from is not None:
        stmt = stmt.where(Instance.started_at >= _aware(started_from))
    if started_to is not None:
        stmt = stmt.where(Instance.started_at < _aware(started_to))
    if amount_min is not None:
        stmt = stmt.where(Instance.amount >= amount_min)
    if amount_max is not None:
        stmt = stmt.where(Instance.amount <= amount_max)
    if approver is not None:
        stmt = stmt.where(_asked(approver))
    return stmt


def list_tasks(session: Session, viewer: User, *, mine: bool = False, instance_id: str | None = None,
               status: str | None = None, overdue: bool = False, page: int = 1, per_page: int = 20) -> Page:
    stmt = select(Task)
    if overdue:
        stmt = stmt.where(Task.status.in_(["ready", "waiting"]), Task.due_at < clock.now())
    if mine:
        stmt = stmt.join(TaskCandidate, TaskCandidate.task_id == Task.id).where(TaskCandidate.user_id == viewer.id)
    if instance_id is not None:
        stmt = stmt.where(Task.instance_id == instance_id)
    if status is not None:
        stmt = stmt.where(Task.status == status)
    if not mine and not access.sees_everything(session, viewer):
        stmt = stmt.join(Instance, Instance.id == Task.instance_id)
        stmt = scope_instances(session, stmt, viewer)
    return _paginate(session, stmt.order_by(Task.created_at, Task.id), page, per_page)


INBOX_TABS = ("todo", "done", "started", "cc")  # 待办, 已办, 我发起的, 抄送我的


def inbox(session: Session, viewer: User, tab: str, limit: int = 50) -> list[tuple[Task | None, Instance]]:
    """The approver page's lists, newest first: tasks waiting for the viewer, tasks they decided,
    instances they started, instances copied to them — (task or None, instance) pairs."""
    if tab == "todo":
        stmt = (select(Task, Instance).join(Instance, Instance.id == Task.instance_id)
                .join(TaskCandidate, TaskCandidate.task_id == Task.id)
                .where(TaskCandidate.user_id == viewer.id, Task.status == "ready").order_by(Task.created_at.desc()))
    elif tab == "done":
        stmt = (select(Task, Instance).join(Instance, Instance.id == Task.instance_id)
                .where(Task.assignee_id == viewer.id, Task.status == "completed")
                .order_by(Task.completed_at.desc()))
    elif tab == "started":
        stmt = select(Instance).where(Instance.starter_id == viewer.id).order_by(Instance.started_at.desc())
        return [(None, instance) for instance in session.scalars(stmt.limit(limit))]
    elif tab == "cc":
        stmt = (select(Instance).join(InstanceCc, InstanceCc.instance_id == Instance.id)
                .where(InstanceCc.user_id == viewer.id).order_by(InstanceCc.created_at.desc()))
        return [(None, instance) for instance in session.scalars(stmt.limit(limit))]
    else:
        raise ValueError(f"unknown tab {tab!r}; use one of {INBOX_TABS}")
    return [(task, instance) for task, instance in session.execute(stmt.limit(limit))]


def get_task(session: Session, viewer: User, task_id: str) -> Task:
    """The task, or 404 alike whether it does not exist or its instance lies outside the viewer's scope."""
    task = session.get(Task, task_id)
    if task is not None and viewer.id not in task.candidates:
        try:
            get_instance(session, viewer, task.instance_id)
        except NotFound:
            task = None
    if task is None:
        raise NotFound(f"任务 {task_id} 不存在", {"task_id": task_id})
    return task


def current_tasks(session: Session, instance_id: str) -> list[Task]:
    """Open rows of an instance: ready ones, and waiting ones (behind an add-signer or a sequence)."""
    return list(session.scalars(select(Task).where(Task.instance_id == instance_id,
                                                   Task.status.in_(["ready", "waiting"]))
                                .order_by(Task.created_at, Task.position)))


def history(session: Session, viewer: User, instance_id: str) -> list[HistoryEvent | HistoryArchive]:
    """The timeline, live or archived (engine.audit.archive moves finished instances' events)."""
    instance = get_instance(session, viewer, instance_id)
    return instance_history(session, instance_id, archived=instance.archived_at is not None)


def _aware(moment: datetime) -> datetime:
    """A date-time without a zone is what a user in China means: Asia/Shanghai."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=LOCAL_ZONE)


def _paginate(session: Session, stmt: Select, page: int, per_page: int) -> Page:
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    items = list(session.scalars(stmt.limit(per_page).offset((page - 1) * per_page)))
    return Page(items, total or 0, page, per_page)
