"""What the approver page shows of a request: its key facts (the start form's `x-card` fields, the
`x-sensitive` ones masked) and the history as a timeline, in Chinese."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.models import HistoryEvent, Instance, User
from engine.runner.model import ProcessModel
from engine.services.forms import shown_fields

CHINA = ZoneInfo("Asia/Shanghai")
STATUS = {"running": "审批中", "completed": "已完成", "withdrawn": "已撤回", "cancelled": "已取消", "failed": "已出错"}
OUTCOME = {"approved": "已通过", "rejected": "已驳回"}
CHANNELS = {"api": "接口", "wecom": "企业微信", "web": "网页", "engine": "系统", "timer": "定时", "oa": "OA",
            "cli": "命令行"}
EVENTS = {"instance.started": "提交申请", "instance.completed": "流程结束", "instance.withdrawn": "撤回申请",
          "instance.cancelled": "取消流程", "instance.failed": "流程出错", "instance.cc": "抄送",
          "task.assigned": "待审批", "task.completed": "审批", "task.transferred": "转办", "task.delegated": "委派",
          "task.signers_added": "加签", "task.returned": "退回", "task.urged": "催办", "task.reminded": "提醒",
          "task.escalated": "升级", "task.activated": "轮到审批", "task.action_refused": "操作被拒绝",
          "task.reassigned": "重新分配"}
ACTIONS = {"approve": "同意", "reject": "驳回", "submit": "提交"}


@dataclass(frozen=True)
class Step:
    who: str
    what: str
    when: str
    channel: str
    note: str | None


def facts(model: ProcessModel, instance: Instance) -> list[tuple[str, str]]:
    """(label, value) of the start form's x-card fields, money as ¥…, x-sensitive masked."""
    form = model.form(model.start_form)
    names = [n for n, p in form.get("properties", {}).items() if p.get("x-card") or p.get("x-sensitive")]
    return shown_fields(form, instance.data, names)


def names(session: Session, ids: set[str]) -> dict[str, str]:
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return {user_id: name for user_id, name in session.execute(select(User.id, User.name).where(User.id.in_(ids)))}


def local_time(moment: datetime | None) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M") if moment else ""


def timeline(session: Session, instance_id: str) -> list[Step]:
    events = list(session.scalars(select(HistoryEvent).where(HistoryEvent.instance_id == instance_id)
                                  .order_by(HistoryEvent.seq)))
    who = names(session, {e.actor_id for e in events})
    return [Step(who.get(e.actor_id, e.actor_id or "系统"), _what(e), local_time(e.at),
                 CHANNELS.get(e.channel, e.channel), _note(e.payload or {}))
            for e in events if e.type in EVENTS]


def _note(payload: dict[str, Any]) -> str | None:
    return payload.get("comment") or payload.get("reason") or None


def _what(event: HistoryEvent) -> str:
    label = EVENTS[event.type]
    action = (event.payload or {}).get("action")
    return f"{label}：{ACTIONS.get(action, action)}" if action and event.type == "task.completed" else label


def status_text(instance: Instance) -> str:
    if instance.status == "completed" and instance.outcome:
        return OUTCOME.get(instance.outcome, instance.outcome)
    return STATUS.get(instance.status, instance.status)
