"""Every read that lists or opens instances and tasks goes through here, behind one data-scope rule
(engine.services.access: roles × scopes). An instance outside the viewer's scope is answered exactly
like one that does not exist (404), so ids cannot be probed; a list never holds a row its detail would
refuse, because both use the same rule.

Lists must not grow with the tables (issue 19). A list is therefore not `visible(viewer)` as one WHERE
clause with a correlated EXISTS per row, which PostgreSQL can only answer by reading every instance:
the viewer's scope is split into disjoint arms (what their roles grant, then what they started, were
copied on, were asked about — each arm without the rows of the arms before it), each arm answered from
its own index, newest first, and the page merged from the arms' first rows (`visible_arms`). The same
arms, concatenated, count the rows; the count stops at COUNT_CAP (or at the last row of the page asked
for), so a viewer who sees 100,000 instances is told "at least 10,000" (`total_estimated` true) instead
of waiting for a count of everything — what serious products do. The asked-about arm of a busy approver
is estimated rather than counted (see Arms). The detail (`get_instance`) keeps the one WHERE clause: for
one row by primary key it is a probe, not a scan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, text, union_all
from sqlalchemy.orm import Session

from engine import clock
from engine.errors import NotFound
from engine.history import instance_history
from engine.models import HistoryArchive, HistoryEvent, Instance, InstanceCc, Task, TaskCandidate, User
from engine.services import access

LOCAL_ZONE = ZoneInfo("Asia/Shanghai")
COUNT_CAP = 10_000  # a list's total is exact up to here (or up to the page asked for), "at least" beyond
ASKED_EXACT = 2_000  # a viewer with more candidate rows gets the asked part of their total estimated
ASKED_SAMPLE = 200  # candidate rows sampled for that estimate (about 2 ms; ±7 % on a uniform share)
NEWEST = (Instance.started_at.desc(), Instance.id)
OPEN = ("ready", "waiting")  # a to-do list's rows


@dataclass
class Page:
    items: list[Any]
    total: int
    page: int
    per_page: int
    total_estimated: bool = False  # True: `total` is a lower bound (the count stopped at it) or an estimate

    @property
    def meta(self) -> dict[str, int | bool]:
        return {"total": self.total, "page": self.page, "per_page": self.per_page,
                "total_estimated": self.total_estimated}


def _asked_ids(user_id: str) -> Select:
    """Ids of the instances with a task `user_id` was a candidate for (asked to act on it): an index-only
    scan of the user's candidate rows, then one task row each."""
    return (select(Task.instance_id).join(TaskCandidate, TaskCandidate.task_id == Task.id)
            .where(TaskCandidate.user_id == user_id))


def _asked(user_id: str) -> ColumnElement[bool]:
    return Instance.id.in_(_asked_ids(user_id))


@dataclass
class Arms:
    """access.visible(viewer) as disjoint predicates whose union is exactly it. Arm i excludes the arms
    before it with IS NOT TRUE (a NULL department is not "granted"), so arms are concatenated (UNION ALL,
    no de-duplication) and a LIMIT stops them early. `cheap` are ranges of one index each: what the roles
    grant, what the viewer started, what was copied to them. `asked` (instances with a task the viewer was
    a candidate for) is not: task_candidates holds no instance id, so it costs one task row per candidate
    row the viewer ever had — thousands for an approver — and is only read where it must be."""

    viewer_id: str
    cheap: list[ColumnElement[bool]]
    asked: ColumnElement[bool]

    @property
    def all(self) -> list[ColumnElement[bool]]:
        return [*self.cheap, self.asked]


def visible_arms(session: Session, viewer: User) -> Arms | None:
    """The viewer's scope as Arms, or None when they see every instance."""
    granted = access.granted_reach(session, viewer)  # the rule's own grant, not a copy of it
    if granted is None:
        return None
    raw = [*([or_(*granted)] if granted else []), Instance.starter_id == viewer.id,
           Instance.id.in_(select(InstanceCc.instance_id).where(InstanceCc.user_id == viewer.id)), _asked(viewer.id)]
    arms = [and_(arm, *(earlier.is_not(True) for earlier in raw[:i])) for i, arm in enumerate(raw)]
    return Arms(viewer.id, arms[:-1], arms[-1])


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
    stmt = instance_filter(**criteria)
    arms = visible_arms(session, viewer)
    offset, cap = (page - 1) * per_page, _cap(page, per_page)
    if arms is None:
        items = list(session.scalars(stmt.order_by(*NEWEST).limit(per_page).offset(offset)))
        total = _known_total(items, page, per_page)
        if total is None:
            total = _capped_count(session, stmt.with_only_columns(Instance.id), cap)
        return _page(items, total, cap, page, per_page)
    ids = stmt.with_only_columns(Instance.id)
    items = _scoped_page(session, ids, arms, offset, per_page)
    total = _known_total(items, page, per_page)
    if total is None:
        return _scoped_count(session, ids, arms, items, page, per_page)
    return _page(items, total, cap, page, per_page)


def _scoped_page(session: Session, ids: Select, arms: Arms, offset: int, per_page: int) -> list[Instance]:
    """The page, merged from each arm's first offset + per_page rows. The asked arm is read from the
    instances' side, newest first, down to the oldest of the cheap arms' first rows: rows older than that
    cannot make the page, so an approver's history is not read to show their newest twenty."""
    k = offset + per_page
    firsts = [ids.where(arm).order_by(*NEWEST).limit(k) for arm in arms.cheap]
    cheap = session.execute(union_all(*(f.with_only_columns(Instance.id, Instance.started_at).subquery().select()
                                        for f in firsts)).order_by(text("started_at DESC"), text("id"))
                            .limit(k)).all()
    asked = ids.where(arms.asked)
    if len(cheap) == k:
        asked = asked.where(Instance.started_at >= cheap[-1].started_at)
    found = [row.id for row in cheap] + list(session.scalars(asked.order_by(*NEWEST).limit(k)))
    return list(session.scalars(select(Instance).where(Instance.id.in_(found)).order_by(*NEWEST)
                                .limit(per_page).offset(offset)))


def _scoped_count(session: Session, ids: Select, arms: Arms, items: list[Instance], page: int,
                  per_page: int) -> Page:
    """Exact up to the cap when the viewer has few candidate rows; otherwise the cheap arms exactly (up to
    the cap) plus an estimate of the asked arm (`_asked_estimate`), flagged as estimated."""
    cap = _cap(page, per_page)
    cheap = _capped_count(session, union_all(*(ids.where(arm) for arm in arms.cheap)), cap)
    if cheap > cap:
        return _page(items, cheap, cap, page, per_page)
    if _candidate_rows(session, arms.viewer_id, ASKED_EXACT) <= ASKED_EXACT:
        total = _capped_count(session, union_all(*(ids.where(arm) for arm in arms.all)), cap)
        return _page(items, total, cap, page, per_page)
    estimate = max(cheap + _asked_estimate(session, ids, arms), (page - 1) * per_page + len(items))
    return Page(items, min(estimate, cap), page, per_page, total_estimated=True)


def _candidate_rows(session: Session, user_id: str, cap: int) -> int:
    """The user's candidate rows, counted up to cap + 1 (an index-only range)."""
    return _capped_count(session, select(TaskCandidate.task_id).where(TaskCandidate.user_id == user_id), cap)


def _asked_estimate(session: Session, ids: Select, arms: Arms) -> int:
    """How many rows the asked arm holds, from a sample of the viewer's candidate rows: the first
    ASKED_SAMPLE by task id (uuid4, so a uniform sample) scaled by the planner's estimate of all of them.
    Each sampled row in the arm counts 1/c, c being the viewer's candidate rows on that instance, so an
    instance is counted once however many of its tasks asked the viewer (Horvitz–Thompson)."""
    user = arms.viewer_id
    sample = (select(TaskCandidate.task_id).where(TaskCandidate.user_id == user).order_by(TaskCandidate.task_id)
              .limit(ASKED_SAMPLE).subquery())
    per_instance = (select(func.count()).select_from(Task).join(TaskCandidate, TaskCandidate.task_id == Task.id)
                    .where(Task.instance_id == Instance.id, TaskCandidate.user_id == user).scalar_subquery())
    weight = session.scalar(ids.with_only_columns(func.sum(1.0 / per_instance)).select_from(Instance)
                            .join(Task, Task.instance_id == Instance.id).join(sample, sample.c.task_id == Task.id)
                            .where(*(arm.is_not(True) for arm in arms.cheap))) or 0
    return round(float(weight) * _planned_rows(session, user) / ASKED_SAMPLE)


def _planned_rows(session: Session, user_id: str) -> int:
    """The planner's estimate of the user's candidate rows (PostgreSQL keeps the frequent users' share in
    its statistics); the exact count elsewhere."""
    if session.get_bind().dialect.name != "postgresql":
        return _candidate_rows(session, user_id, 10**12)
    plan = session.execute(text("EXPLAIN (FORMAT JSON) SELECT 1 FROM task_candidates WHERE user_id = :user"),
                           {"user": user_id}).scalar()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


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
    """Tasks, oldest first. `mine`: the viewer's to-do list — the open rows (ready or waiting) they are a
    candidate for, or those of `status` when one is asked for; open rows are few whatever the history,
    so the list starts from them (ix_tasks_status_created) and never from everything the viewer ever held.
    Otherwise the tasks of the instances the viewer may see."""
    stmt = select(Task)
    if overdue:
        stmt = stmt.where(Task.status.in_(OPEN), Task.due_at < clock.now())
    if mine:
        stmt = stmt.join(TaskCandidate, (TaskCandidate.task_id == Task.id) & (TaskCandidate.user_id == viewer.id))
        if status is None:
            stmt = stmt.where(Task.status.in_(OPEN))
    if instance_id is not None:
        stmt = stmt.where(Task.instance_id == instance_id)
    if status is not None:
        stmt = stmt.where(Task.status == status)
    arms = None if mine else visible_arms(session, viewer)
    if arms is not None:
        seen = union_all(*(select(Instance.id).where(arm) for arm in arms.all))
        stmt = stmt.where(Task.instance_id.in_(seen))
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


def _cap(page: int, per_page: int) -> int:
    """How far a list's count goes: COUNT_CAP, or further when the page asked for lies beyond it, so the
    total is never below a row the viewer is shown."""
    return max(COUNT_CAP, page * per_page)


def _capped_count(session: Session, stmt: Any, cap: int) -> int:
    """Rows of `stmt`, counted up to cap + 1 (a LIMIT: the scan stops there)."""
    limited = stmt.limit(cap + 1).subquery() if isinstance(stmt, Select) else stmt.subquery().select().limit(
        cap + 1).subquery()
    return session.scalar(select(func.count()).select_from(limited)) or 0


def _page(items: list[Any], total: int, cap: int, page: int, per_page: int) -> Page:
    return Page(items, min(total, cap), page, per_page, total_estimated=total > cap)


def _known_total(items: list[Any], page: int, per_page: int) -> int | None:
    """A page that is not full ends the list, so its total needs no count (a first page of a few rows:
    most searches by business key, one applicant's open requests)."""
    if 0 < len(items) < per_page or (page == 1 and not items):
        return (page - 1) * per_page + len(items)
    return None


def _paginate(session: Session, stmt: Select, page: int, per_page: int) -> Page:
    cap = _cap(page, per_page)
    items = list(session.scalars(stmt.limit(per_page).offset((page - 1) * per_page)))
    total = _known_total(items, page, per_page)
    if total is None:
        total = _capped_count(session, stmt.order_by(None).with_only_columns(Task.id, maintain_column_froms=True),
                              cap)
    return _page(items, total, cap, page, per_page)
