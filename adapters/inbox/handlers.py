"""Turning an engine event into notifications: who is told what.

* task.assigned → each candidate: 「待审批：{流程名} {业务编号}」.
* task.completed → the starter, when someone else acted: the step and its result.
* instance.completed → the starter: the final result.
* transfers, delegations, escalations, a waiting task's turn, reminders, urging, copies → the people
  the event names.

Runs inside the outbox job's transaction; rows are inserted with ON CONFLICT DO NOTHING on
(outbox_id, user_id), so a redelivered message adds nothing even outside that guarantee.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from adapters.inbox.models import Notification
from engine import clock
from engine.models import ProcessVersion, Task, User
from engine.outbox.delivery import Message

ACTION_WORDS = {"approve": "已同意", "reject": "已驳回", "submit": "已提交"}
OUTCOME_WORDS = {"approved": "审批通过", "rejected": "审批未通过"}


def notify(session: Session, message: Message) -> None:
    builder = {"task.assigned": _assigned, "task.completed": _completed,
               "instance.completed": _instance_completed, **{t: _to_people for t in PEOPLE_EVENTS}
               }.get(message.event_type)
    if builder is None:
        return
    rows = builder(session, message)
    if rows:
        now = clock.now()
        insert_ignoring_duplicates(session, [{**row, "outbox_id": message.id, "kind": message.event_type,
                                              "instance_id": message.instance_id, "created_at": now} for row in rows])


def _assigned(session: Session, message: Message) -> list[dict[str, Any]]:
    payload = message.event.get("payload", {})
    task_name = _task_name(session, message.event.get("task_id")) or "审批任务"
    title = f"待审批：{_subject(session, message)}"
    body = task_name + (f"（{message.instance['title']}）" if message.instance.get("title") else "")
    return [{"user_id": user_id, "title": title, "body": body, "task_id": message.event.get("task_id")}
            for user_id in dict.fromkeys(payload.get("candidates", []))]


# event type -> (title prefix, the payload field naming who is told)
PEOPLE_EVENTS = {
    "task.transferred": ("转办给您", "to"),
    "task.delegated": ("委派给您", "delegate"),
    "task.escalated": ("超时升级给您", "to"),
    "task.activated": ("轮到您审批", "candidates"),
    "task.reminded": ("催办提醒", "candidates"),
    "task.urged": ("申请人催办", "candidates"),
    "instance.cc": ("抄送给您", "users"),
}


def _to_people(session: Session, message: Message) -> list[dict[str, Any]]:
    prefix, field = PEOPLE_EVENTS[message.event_type]
    payload = message.event.get("payload", {})
    people = payload.get(field) or payload.get("candidates") or []
    people = [people] if isinstance(people, str) else people
    task_id = message.event.get("task_id")
    body = _task_name(session, task_id) or (message.instance.get("title") or "")
    if payload.get("reason") or payload.get("message"):
        body += f"（{payload.get('reason') or payload.get('message')}）"
    return [{"user_id": user_id, "title": f"{prefix}：{_subject(session, message)}", "body": body,
             "task_id": task_id} for user_id in dict.fromkeys(people)]


def _completed(session: Session, message: Message) -> list[dict[str, Any]]:
    starter, actor = message.instance.get("starter_id"), message.event.get("actor_id")
    if not starter or actor == starter:
        return []  # the applicant needs no news of their own step
    payload = message.event.get("payload", {})
    word = ACTION_WORDS.get(payload.get("action"), "已处理")
    name = payload.get("name") or "审批任务"
    body = f"{_user_name(session, actor)}{word}「{name}」"
    if payload.get("comment"):
        body += f"，意见：{payload['comment']}"
    return [{"user_id": starter, "title": f"{name}{word}：{_subject(session, message)}", "body": body,
             "task_id": message.event.get("task_id")}]


def _instance_completed(session: Session, message: Message) -> list[dict[str, Any]]:
    starter = message.instance.get("starter_id")
    if not starter:
        return []
    outcome = message.event.get("payload", {}).get("outcome")
    word = OUTCOME_WORDS.get(outcome, "流程已结束")
    subject = _subject(session, message)
    return [{"user_id": starter, "title": f"{word}：{subject}", "body": f"您的申请 {subject} {word}",
             "task_id": None}]


def _subject(session: Session, message: Message) -> str:
    """「{流程名} {业务编号}」, e.g. 「费用报销 BX-20261123-0001」."""
    version_id = message.instance.get("version_id")
    name = session.scalar(select(ProcessVersion.name).where(ProcessVersion.id == version_id)) if version_id else None
    name = name or message.instance.get("process_key") or ""
    return f"{name} {message.instance.get('business_key') or message.instance_id[:8]}".strip()


def _task_name(session: Session, task_id: str | None) -> str | None:
    return session.scalar(select(Task.name).where(Task.id == task_id)) if task_id else None


def _user_name(session: Session, user_id: str | None) -> str:
    if not user_id:
        return "系统"
    return session.scalar(select(User.name).where(User.id == user_id)) or user_id


def insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Notification).on_conflict_do_nothing(index_elements=["outbox_id", "user_id"])
    session.execute(stmt, rows)
