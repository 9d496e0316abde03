"""Engine events → WeCom: cards to whoever may now decide a task, results on the cards of whoever no longer
may, and plain messages (催办, 抄送, the applicant's result). An external subscription (engine/outbox/stream.py):
one ordered stream per instance, prepared in a short transaction, sent with no transaction open.

Cards are reconciled, not replayed: whatever event arrives, the instance's current task rows are compared
with its cards — an open (task row, candidate) without a live card gets one, a card whose pair is closed gets
its result (已同意 / 已被他人处理 / 已转办给 … / 已撤回 …). So every operation (转办, 委派, 加签, 退回, timers,
decisions on any channel) reaches WeCom through one rule, and a redelivered event changes nothing.

A card row is written before it is sent, with its WeCom task_id (`card_key`): a resend after a lost answer
uses the same task_id, and WeCom's 42014 ("taskid has existed") then means it was delivered. A button's
response_code works once: a click stores its fresh one on the card (adapters/wecom/inbound.py); when an
update is refused, the result is sent as a text message instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapters.wecom import cards
from adapters.wecom.client import Transient, WeComClient, WeComError, client
from adapters.wecom.config import WeComConfig
from adapters.wecom.models import WeComCard, WeComMessage
from engine import clock
from engine.db import database_url, transaction
from engine.models import Department, HistoryEvent, Instance, ProcessVersion, Task, User
from engine.outbox.delivery import Message
from engine.outbox.stream import Hold, RetryLater
from engine.services.deployments import model_for

log = logging.getLogger("finflow.wecom")
SUBSCRIPTION = "wecom.cards"
TARGET = "wecom"
EVENT_TYPES = frozenset({
    "task.assigned", "task.activated", "task.completed", "task.cancelled", "task.transferred", "task.delegated",
    "task.delegation_resolved", "task.signers_added", "task.returned", "task.escalated", "task.auto_approved",
    "task.reassigned", "task.urged", "task.reminded", "instance.cc", "instance.completed", "instance.withdrawn",
    "instance.cancelled", "instance.failed"})
URGE_WORDS = {"task.urged": "申请人催办", "task.reminded": "审批提醒"}


def targets(session: Session, process_key: str, event_type: str) -> list[str]:
    """One stream per instance when WeCom is configured; none (no outbox rows at all) when it is not."""
    try:
        return [TARGET] if WeComConfig.from_env() is not None else []
    except ValueError as exc:  # half-configured: tell the log, never fail the approval that caused the event
        log.error("wecom: %s; no cards are sent", exc)
        return []


@dataclass
class Op:
    kind: str  # card | update | message
    row_id: int
    user_id: str
    body: dict[str, Any] | None = None
    result: str | None = None
    subject: str = ""


@dataclass
class _Context:
    """What the cards of one instance need, read once per batch."""

    config: WeComConfig
    instance: Instance
    process: str
    names: dict[str, str] = field(default_factory=dict)
    department: str | None = None

    @property
    def subject(self) -> str:
        return f"{self.process} {self.instance.business_key or self.instance.id[:8]}"

    def url(self, kind: str, ident: str) -> str:
        return f"{self.config.public_url}/m/{kind}/{ident}"


def connect(session: Session, target: str, messages: list[Message]) -> Callable[[Message], None] | Hold:
    config = WeComConfig.from_env()
    if config is None:
        return Hold("WeCom is not configured", clock.now() + timedelta(hours=1))
    context = _context(session, config, messages[0].instance_id)
    plan: dict[int, list[Op]] = {messages[0].id: reconcile(session, context)}
    for message in messages:
        plan.setdefault(message.id, []).extend(_plain_messages(session, context, message))
    wecom, db_url = client(config), database_url(session)

    def send(message: Message) -> None:
        for op in plan.get(message.id, []):
            EXECUTORS[op.kind](wecom, op, db_url)

    return send


def _context(session: Session, config: WeComConfig, instance_id: str) -> _Context:
    instance = session.get(Instance, instance_id)
    process = session.scalar(select(ProcessVersion.name).where(ProcessVersion.id == instance.version_id))
    starter = session.get(User, instance.starter_id)
    department = session.scalar(select(Department.name).where(Department.id == starter.department_id))
    return _Context(config, instance, process or instance.process_key, {starter.id: starter.name}, department)


def reconcile(session: Session, context: _Context) -> list[Op]:
    """The sends and updates that bring the instance's cards in line with its task rows (rows written now)."""
    instance = context.instance
    rows = {t.id: t for t in session.scalars(select(Task).where(Task.instance_id == instance.id)
                                             .order_by(Task.created_at, Task.position))}
    latest: dict[tuple[str, str], WeComCard] = {}
    for card in session.scalars(select(WeComCard).where(WeComCard.instance_id == instance.id).order_by(WeComCard.id)):
        latest[(card.task_id, card.user_id)] = card
    open_pairs = [(row.id, user) for row in rows.values() if row.status == "ready" and instance.status == "running"
                  for user in row.candidates]
    context.names.update(_names(session, {u for r in rows.values() for u in r.candidates} | {
        u for _, u in latest} | {u for r in rows.values() for u in (r.delegate_id, r.owner_id) if u}))
    ops = [op for pair in open_pairs if (op := _card_op(session, context, rows[pair[0]], pair[1], latest.get(pair)))]
    closing = [(pair, card) for pair, card in latest.items()
               if pair not in open_pairs and card.status in ("sent", "pending")]
    reasons = _cancel_reasons(session, instance.id, sorted(
        {task_id for (task_id, _), _ in closing if rows[task_id].status == "cancelled"}))
    now = clock.now()
    for (task_id, user_id), card in closing:
        result = cards.result_for(rows[task_id], user_id, instance, context.names, reasons.get(task_id))
        if card.status == "pending":  # closed before it ever reached WeCom: nothing to update
            card.status, card.result, card.updated_at = "updated", result, now
            card.error = "任务在卡片送达前已结束，未发送"
            continue
        ops.append(Op("update", card.id, user_id, result=result, subject=context.subject))
    return ops


def _cancel_reasons(session: Session, instance_id: str, task_ids: list[str]) -> dict[str, str | None]:
    """Why each cancelled row was cancelled (退回, a rejection ending a countersign …), from its history."""
    if not task_ids:
        return {}
    return {task_id: (payload or {}).get("reason") for task_id, payload in session.execute(
        select(HistoryEvent.task_id, HistoryEvent.payload).where(
            HistoryEvent.instance_id == instance_id, HistoryEvent.type == "task.cancelled",
            HistoryEvent.task_id.in_(task_ids)))}


def _card_op(session: Session, context: _Context, row: Task, user_id: str, card: WeComCard | None) -> Op | None:
    if card is not None and card.status in ("sent", "failed"):
        return None  # live, or failed for a reason shown on the task (a new send would fail alike)
    if card is None or card.status != "pending":
        card = WeComCard(card_key=cards.new_card_key(row.id), task_id=row.id, instance_id=row.instance_id,
                         user_id=user_id, status="pending", created_at=clock.now())
        session.add(card)
        session.flush()
    return Op("card", card.id, user_id, body=_card_body(session, context, row, user_id, card.card_key))


def _card_body(session: Session, context: _Context, row: Task, user_id: str, card_key: str) -> dict[str, Any]:
    instance = context.instance
    model = model_for(session, instance.version_id)
    node = model.nodes.get(row.node_id)
    properties = node.properties if node is not None else {}
    chosen = [f.strip() for f in properties["card.fields"].split(",") if f.strip()] \
        if properties.get("card.fields") else None
    start_form = model.form(model.start_form) if model.start_form else {}
    heading = cards.title(instance, context.process, context.names.get(instance.starter_id, ""), row,
                          properties.get("card.title"))
    return cards.card_message(
        user_id=user_id, card_key=card_key, task=row, source=f"{context.config.source}", heading=heading,
        facts_=cards.facts(start_form, instance.data, chosen, context.department),
        url=context.url("tasks", row.id), with_buttons=cards.buttons_suffice(row, model.form(row.form_key)))


def _plain_messages(session: Session, context: _Context, message: Message) -> list[Op]:
    payload, kind = message.event.get("payload", {}), message.event_type
    task_name = session.scalar(select(Task.name).where(Task.id == message.event.get("task_id"))) or ""
    if kind in URGE_WORDS:
        note = f"（{payload['message']}）" if payload.get("message") else ""
        content = f"{URGE_WORDS[kind]}：{context.subject}「{task_name}」等待您审批{note}"
        return _message_ops(session, message, payload.get("candidates") or [], "text",
                            lambda user: cards.text(content, user), content)
    if kind == "instance.cc":
        title = f"抄送：{context.subject}"
        body = context.instance.title or task_name or context.process
        url = context.url("instances", context.instance.id)
        return _message_ops(session, message, payload.get("users") or [], "textcard",
                            lambda user: cards.textcard(title, body, url, user), title)
    if kind == "task.completed" and payload.get("action") == "reject" \
            and message.event.get("actor_id") != context.instance.starter_id:
        who = context.names.get(message.event.get("actor_id") or "", message.event.get("actor_id") or "")
        title = f"已驳回：{context.subject}"
        opinion = f"，意见：{payload['comment']}" if payload.get("comment") else ""
        description = f"{who}驳回了「{task_name}」{opinion}"
        url = context.url("instances", context.instance.id)
        return _message_ops(session, message, [context.instance.starter_id], "textcard",
                            lambda user: cards.textcard(title, description, url, user), title)
    if kind in ("instance.completed", "instance.failed"):
        word = {"approved": "审批通过", "rejected": "审批未通过"}.get(payload.get("outcome"), "流程已结束") \
            if kind == "instance.completed" else "流程出错，已停止"
        title = f"{word}：{context.subject}"
        url = context.url("instances", context.instance.id)
        description = _last_decision(session, context.instance.id, context.names) or (context.instance.title or "")
        return _message_ops(session, message, [context.instance.starter_id], "textcard",
                            lambda user: cards.textcard(title, description, url, user), title)
    return []


def _message_ops(session: Session, message: Message, users: list[str], kind: str,
                 build: Callable[[str], dict[str, Any]], title: str) -> list[Op]:
    ops = []
    for user in dict.fromkeys(users):
        row = session.scalar(select(WeComMessage).where(WeComMessage.outbox_id == message.id,
                                                        WeComMessage.user_id == user))
        if row is None:
            row = WeComMessage(outbox_id=message.id, instance_id=message.instance_id, user_id=user, kind=kind,
                               task_id=message.event.get("task_id"), title=title[:255], status="pending",
                               created_at=clock.now())
            session.add(row)
            session.flush()
        if row.status == "pending":
            ops.append(Op("message", row.id, user, body=build(user)))
    return ops


def _last_decision(session: Session, instance_id: str, names: dict[str, str]) -> str:
    task = session.scalar(select(Task).where(Task.instance_id == instance_id, Task.status == "completed",
                                             Task.action.in_(["approve", "reject"]))
                          .order_by(Task.completed_at.desc()).limit(1))
    if task is None:
        return ""
    who = names.get(task.assignee_id or "", task.assignee_id or "")
    line = f"{who}{cards.ACTION_RESULTS.get(task.action or '', '已处理')}「{task.name}」"
    return line + (f"，意见：{task.comment}" if task.comment else "")


def result_of(session: Session, task: Task, user_id: str) -> str:
    """What `user_id`'s card on `task` says now that it is not theirs to decide (a late click's answer)."""
    instance = session.get(Instance, task.instance_id)
    names = _names(session, {*task.candidates, task.delegate_id, task.owner_id})
    reason = _cancel_reasons(session, instance.id, [task.id]).get(task.id) if task.status == "cancelled" else None
    return cards.result_for(task, user_id, instance, names, reason)


def _names(session: Session, users: set[str]) -> dict[str, str]:
    users.discard(None)  # type: ignore[arg-type]
    return {row.id: row.name for row in session.execute(select(User.id, User.name).where(User.id.in_(users)))} \
        if users else {}


# -- sending (no transaction open) and recording what WeCom answered (a short one) ---------------------
def _send_card(wecom: WeComClient, op: Op, db_url: str | None) -> None:
    try:
        answer = wecom.send(op.body)
    except Transient as exc:
        raise RetryLater(str(exc), after=exc.after) from exc
    except WeComError as exc:
        if exc.errcode == 42014:  # our own task_id exists: an earlier attempt got through, its answer was lost
            _record_card(db_url, op.row_id, status="sent", error="重发时 WeCom 答复 task_id 已存在：卡片已送达")
        else:
            log.warning("wecom: card %s to %s refused: %s", op.row_id, op.user_id, exc)
            _record_card(db_url, op.row_id, status="failed", errcode=exc.errcode, error=str(exc))
        return
    invalid = [u for u in str(answer.get("invaliduser") or "").split("|") if u]
    if op.user_id in invalid:
        log.warning("wecom: card %s: %s is an invalid user for the app", op.row_id, op.user_id)
        _record_card(db_url, op.row_id, status="failed", errcode=81013, msgid=answer.get("msgid"),
                     error=f"invaliduser {op.user_id}: 不在应用可见范围、未激活或已离职")
        return
    _record_card(db_url, op.row_id, status="sent", msgid=answer.get("msgid"), response_code=answer.get("response_code"))


def _update_card(wecom: WeComClient, op: Op, db_url: str | None) -> None:
    with transaction(db_url, readonly=True) as session:
        code = session.scalar(select(WeComCard.response_code).where(WeComCard.id == op.row_id))
    try:
        if not code:
            raise WeComError(0, "no response_code to update the card with", "message/update_template_card")
        wecom.update_card([op.user_id], code, op.result or "已处理")
    except Transient as exc:
        raise RetryLater(str(exc), after=exc.after) from exc
    except WeComError as exc:
        _fall_back_to_text(wecom, op, db_url, exc)
        return
    _record_card(db_url, op.row_id, status="updated", result=op.result, response_code=None, updated=True)


def _fall_back_to_text(wecom: WeComClient, op: Op, db_url: str | None, refused: WeComError) -> None:
    """The card cannot change any more (its code was used or is older than 72 h): tell the result in words."""
    try:
        wecom.send(cards.text(f"「{op.subject}」{op.result}", op.user_id))
        error = f"卡片无法更新（{refused.errmsg}），已改发文本消息"
    except Transient as exc:
        raise RetryLater(str(exc), after=exc.after) from exc
    except WeComError as exc:
        error = f"卡片无法更新（{refused.errmsg}），文本消息也未送达：{exc}"
    _record_card(db_url, op.row_id, status="update_failed", result=op.result, errcode=refused.errcode,
                 error=error, response_code=None, updated=True)


def _send_message(wecom: WeComClient, op: Op, db_url: str | None) -> None:
    fields: dict[str, Any]
    try:
        answer = wecom.send(op.body)
        invalid = op.user_id in str(answer.get("invaliduser") or "").split("|")
        fields = {"status": "failed", "errcode": 81013, "error": f"invaliduser {op.user_id}"} if invalid else \
            {"status": "sent", "msgid": answer.get("msgid"), "sent_at": clock.now()}
    except Transient as exc:
        raise RetryLater(str(exc), after=exc.after) from exc
    except WeComError as exc:
        fields = {"status": "failed", "errcode": exc.errcode, "error": str(exc)}
    with transaction(db_url) as session:
        row = session.get(WeComMessage, op.row_id)
        for name, value in fields.items():
            setattr(row, name, value)


def _record_card(db_url: str | None, card_id: int, *, updated: bool = False, **fields: Any) -> None:
    with transaction(db_url) as session:
        card = session.get(WeComCard, card_id)
        now = clock.now()
        if updated:
            card.updated_at = now
        elif fields.get("status") == "sent":
            card.sent_at = now
        for name, value in fields.items():
            setattr(card, name, value)


EXECUTORS = {"card": _send_card, "update": _update_card, "message": _send_message}


# -- reading deliveries ------------------------------------------------------------------------------
def deliveries(session: Session, *, task_id: str | None = None, instance_id: str | None = None) -> list[dict]:
    """Cards and messages of a task or an instance, oldest first: who, what state, and why it failed."""
    card_filter = WeComCard.task_id == task_id if task_id else WeComCard.instance_id == instance_id
    message_filter = WeComMessage.task_id == task_id if task_id else WeComMessage.instance_id == instance_id
    rows = [{"kind": "card", "id": c.id, "task_id": c.task_id, "user_id": c.user_id, "status": c.status,
             "result": c.result, "msgid": c.msgid, "errcode": c.errcode, "error": c.error, "title": None,
             "created_at": c.created_at, "sent_at": c.sent_at, "updated_at": c.updated_at}
            for c in session.scalars(select(WeComCard).where(card_filter))]
    rows += [{"kind": m.kind, "id": m.id, "task_id": m.task_id, "user_id": m.user_id, "status": m.status,
              "result": None, "msgid": m.msgid, "errcode": m.errcode, "error": m.error, "title": m.title,
              "created_at": m.created_at, "sent_at": m.sent_at, "updated_at": None}
             for m in session.scalars(select(WeComMessage).where(message_filter))]
    return sorted(rows, key=lambda r: (r["created_at"], r["kind"], r["id"]))


def stats(session: Session) -> dict[str, list[dict]]:
    """Counts by status and errcode: how many cards and messages reached people, and why the others did not."""
    def counted(model) -> list[dict]:
        return [{"status": status, "errcode": errcode, "count": count} for status, errcode, count in session.execute(
            select(model.status, model.errcode, func.count()).group_by(model.status, model.errcode)
            .order_by(model.status, model.errcode))]

    return {"cards": counted(WeComCard), "messages": counted(WeComMessage)}
