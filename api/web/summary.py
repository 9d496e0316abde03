"""What the approver page shows of a request: its key facts (the start form's `x-card` fields, the
`x-sensitive` ones masked) and the history as a timeline, in Chinese."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.history import instance_history
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
          "task.reassigned": "重新分配", "integration.incident": "集成异常"}
ACTIONS = {"approve": "同意", "reject": "驳回", "submit": "提交"}
ENGINE_EVENTS = {"task.created": "生成任务", "node.completed": "经过节点", "gateway.decision": "网关判断",
                 "dmn.decision": "决策表", "service.completed": "自动处理", "timer.fired": "定时触发"}
# the auditor's timeline filter: an event type's first word -> its group
KINDS = {"instance": "流程", "task": "审批", "node": "节点", "gateway": "节点", "dmn": "节点", "service": "节点",
         "timer": "定时", "integration": "流程"}


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


def item_lists(model: ProcessModel, instance: Instance) -> list[tuple[str, list[list[tuple[str, str]]]]]:
    """The start form's lists of records (发票明细 …) as (title, items of (label, value)), formatted as the
    facts are: what an approver checks an amount against."""
    properties = model.form(model.start_form).get("properties", {})
    lists = []
    for name, spec in properties.items():
        items, schema = instance.data.get(name), spec.get("items") or {}
        if spec.get("type") == "array" and schema.get("type") == "object" and isinstance(items, list) and items:
            fields = list(schema.get("properties", {}))
            lists.append((str(spec.get("title") or name),
                          [shown_fields(schema, item, fields) for item in items if isinstance(item, dict)]))
    return lists


def names(session: Session, ids: set[str]) -> dict[str, str]:
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return {user_id: name for user_id, name in session.execute(select(User.id, User.name).where(User.id.in_(ids)))}


def human_seconds(seconds: float | None) -> str:
    """A time spent as a reader says it: 45 秒, 12.5 分钟, 3.2 小时, 1.5 天 (— when unknown)."""
    if seconds is None:
        return "—"
    for limit, unit, size in ((60, "秒", 1), (3600, "分钟", 60), (86400, "小时", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit}" if size == 1 else f"{seconds / size:.1f} {unit}"
    return f"{seconds / 86400:.1f} 天"


def local_time(moment: datetime | None, seconds: bool = False) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") if moment else ""


def timeline(session: Session, instance_id: str) -> list[Step]:
    events = instance_history(session, instance_id)
    who = names(session, {e.actor_id for e in events})
    return [Step(who.get(e.actor_id, e.actor_id or "系统"), _what(e), local_time(e.at),
                 CHANNELS.get(e.channel, e.channel), _note(e.payload or {}))
            for e in events if e.type in EVENTS]


@dataclass(frozen=True)
class AuditRow:
    """One history event as the auditor's timeline shows it: every event, nothing left out."""

    seq: int
    when: str
    kind: str  # a KINDS group, for the filter
    what: str
    who: str
    node: str | None
    note: str | None
    channel: str
    client_ip: str | None
    device: str | None


def audit_timeline(session: Session, instance_id: str, node_names: dict[str, str]) -> list[AuditRow]:
    events = instance_history(session, instance_id)
    who = names(session, {e.actor_id for e in events})
    return [AuditRow(e.seq, local_time(e.at, seconds=True), KINDS.get(e.type.split(".")[0], "其他"),
                     _what(e) if e.type in EVENTS else ENGINE_EVENTS.get(e.type, e.type),
                     who.get(e.actor_id, e.actor_id or "系统"), node_names.get(e.node_id or "", e.node_id),
                     _note(e.payload or {}), CHANNELS.get(e.channel, e.channel or "系统"), e.client_ip,
                     device(e.user_agent)) for e in events]


def device(user_agent: str | None) -> str | None:
    """A reader's name for the client a user agent string describes (the raw string is in the API)."""
    if not user_agent:
        return None
    ua = user_agent.lower()
    app = "企业微信 " if "wxwork" in ua else ""
    for needle, name in (("iphone", "iPhone"), ("ipad", "iPad"), ("android", "Android"), ("windows", "Windows"),
                         ("mac os", "Mac"), ("linux", "Linux")):
        if needle in ua:
            return app + name
    return app.strip() or user_agent[:40]


def _note(payload: dict[str, Any]) -> str | None:
    return payload.get("comment") or payload.get("reason") or payload.get("message") or None


def _what(event: HistoryEvent) -> str:
    label = EVENTS[event.type]
    action = (event.payload or {}).get("action")
    return f"{label}：{ACTIONS.get(action, action)}" if action and event.type == "task.completed" else label


def status_text(instance: Instance) -> str:
    if instance.status == "completed" and instance.outcome:
        return OUTCOME.get(instance.outcome, instance.outcome)
    return STATUS.get(instance.status, instance.status)
