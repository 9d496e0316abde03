"""Engine events → the instance's twin request in OA: created on start, submitted or rejected as each decision
is taken in finflow, withdrawn or force-archived with the instance; after every call OA is asked where the
request is now (getRequestStatus), since a countersign node answers SUCCESS without moving.

An external subscription (engine/outbox/stream.py): one ordered stream per instance, prepared in a short
transaction, sent with no transaction open, so OA down or slow never blocks an approver; failures are retried
with backoff, and a call OA refuses for good (PARAM_ERROR, NO_PERMISSION, an unlinked user) ends the row dead
with an `integration.incident` in the instance's history and the twin's state `failed`.

Exactly once on OA's side: every call is recorded in `oa_submissions` before it is made. A row sent again
after an answer was lost (a timeout: OA may have done it) first reads OA's sign-off log and counts it done if
the decision is there. Decisions that came from OA (channel "oa") are not sent back.

Where finflow expects the request is worked out per event from the instance's history (the open user tasks
at the end of the command that recorded it, mapped to OA nodes), so a backlog sent after an outage is checked
step by step against the state each step left, not against today's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapters.oa import mapping as mappings
from adapters.oa.config import OAConfig
from adapters.oa.models import OADecision, OARequest, OASubmission
from adapters.oa.system import ARCHIVED, OPEN, WITHDRAWN, NewRequest, OAError, OASystem, OATransient, system
from adapters.oa.users import oa_user_of, oa_users_of
from engine import clock
from engine.db import database_url, transaction
from engine.history import Actor
from engine.models import Department, HistoryEvent, Instance, ProcessDefinition, ProcessVersion, User
from engine.outbox.delivery import Message
from engine.outbox.stream import Hold, PermanentFailure, RetryLater
from engine.services.deployments import model_for
from engine.services.instances import record_integration_incident

log = logging.getLogger("finflow.oa")
SUBSCRIPTION = "oa.sync"
TARGET = "oa"
OA_ACTOR = Actor(None, "oa", None, "finflow OA sync")
EVENT_TYPES = frozenset({"instance.started", "task.completed", "task.auto_approved", "task.returned",
                         "instance.withdrawn", "instance.cancelled", "instance.completed"})
CLOSED = "closed"  # expected node of an instance that has ended
OPENING = {"task.created"}
CLOSING = {"task.completed", "task.cancelled"}
ENDING = {"instance.completed", "instance.withdrawn", "instance.cancelled", "instance.failed"}


def targets(session: Session, process_key: str, event_type: str) -> list[str]:
    """One stream per instance when OA is configured and the process's latest version maps onto OA."""
    try:
        if OAConfig.from_env() is None:
            return []
    except ValueError as exc:  # half-configured: tell the log, never fail the approval that caused the event
        log.error("oa: %s; nothing is sent to OA", exc)
        return []
    version = session.execute(select(ProcessVersion.id, ProcessVersion.content_hash).join(
        ProcessDefinition, (ProcessDefinition.key == ProcessVersion.process_key)
        & (ProcessDefinition.latest_version == ProcessVersion.version)).where(
        ProcessVersion.process_key == process_key)).first()
    if version is None or mappings.of(model_for(session, version.id, version.content_hash)) is None:
        return []
    return [TARGET]


@dataclass
class Op:
    kind: str  # create | submit | reject | withdraw | force_over | check
    oa_user: str | None
    task_id: str | None = None
    oa_node: str | None = None  # where the decision is taken
    to_node: str | None = None  # a reject's target
    remark: str = ""
    main: dict[str, str] | None = None
    request: NewRequest | None = None
    expected: frozenset[str] = frozenset()  # OA nodes finflow is at after the event ({CLOSED}: ended)
    problem: str | None = None  # why it cannot be sent (an unlinked user): the row is dead


@dataclass
class _Twin:
    """What the sender knows of the twin while it works through a batch."""

    instance_id: str
    request_id: str | None
    creator: str | None
    create_node: str
    db_url: str | None
    incidents: list[tuple[str, str]] = field(default_factory=list)


def connect(session: Session, target: str, messages: list[Message]) -> Callable[[Message], None] | Hold:
    config = OAConfig.from_env()
    if config is None:
        return Hold("OA is not configured", clock.now() + timedelta(hours=1))
    instance = session.get(Instance, messages[0].instance_id)
    model = model_for(session, instance.version_id)
    mapping = mappings.of(model)
    if mapping is None:  # a version without a mapping: nothing of it goes to OA
        return lambda message: None
    twin_row = _twin_row(session, instance, mapping)
    plan = _plan(session, instance, model, mapping, messages)
    twin = _Twin(instance.id, twin_row.request_id, twin_row.creator, mapping.create_node, database_url(session))
    client = system(config)

    def send(message: Message) -> None:
        for op in plan.get(message.id, []):
            _execute(client, twin, message, op)

    return send


def _twin_row(session: Session, instance: Instance, mapping: mappings.Mapping) -> OARequest:
    row = session.get(OARequest, instance.id)
    if row is None:
        row = OARequest(instance_id=instance.id, workflow_id=mapping.workflow_id, state="pending",
                        creator=oa_user_of(session, instance.starter_id), created_at=clock.now())
        session.add(row)
        session.flush()
    return row


# -- planning (in the claim's transaction) -------------------------------------------------------------
def _plan(session: Session, instance: Instance, model, mapping: mappings.Mapping,
          messages: list[Message]) -> dict[int, list[Op]]:
    positions = _positions(session, instance.id, mapping)
    people = {m.event.get("actor_id") for m in messages} | {instance.starter_id} | \
        {(m.event.get("payload") or {}).get("as") for m in messages}
    links = oa_users_of(session, {p for p in people if p})
    facts = _facts(session, instance, model)
    plan: dict[int, list[Op]] = {}
    for message in messages:
        expected = positions(message.seq)
        ops = _ops_for(session, instance, mapping, message, links, facts, expected)
        for op in ops:
            op.expected = expected
        plan[message.id] = ops
    return plan


def _ops_for(session: Session, instance: Instance, mapping: mappings.Mapping, message: Message,
             links: dict[str, str], facts: dict[str, Any], expected: frozenset[str]) -> list[Op]:
    event, kind = message.event, message.event_type
    payload = event.get("payload") or {}
    actor = event.get("actor_id")
    starter = links.get(instance.starter_id)
    main = mapping.main_fields(facts)
    if kind == "instance.started":
        request = NewRequest(mapping.workflow_id, mapping.name_for(facts["name_values"]), main,
                             mapping.detail_rows(instance.data), submit=expected != {mapping.create_node})
        return [_needs(Op("create", starter, request=request), instance.starter_id, starter)]
    if event.get("channel") == "oa":  # decided in OA: nothing to send, only see where OA is now
        return [Op("check", starter)]
    if kind in ("task.completed", "task.auto_approved"):
        node = mapping.create_node if payload.get("kind") == "resubmit" else mapping.node_of(event.get("node_id"))
        if node is None:
            return []
        who = payload.get("as") if kind == "task.auto_approved" else actor
        user = links.get(who or "") or (starter if node == mapping.create_node else None)
        remark = payload.get("comment") or payload.get("reason") or ""
        if payload.get("action") == "reject":
            to_node = next(iter(expected), None) if expected and CLOSED not in expected else mapping.create_node
            op = Op("reject", user, event.get("task_id"), node, to_node, remark)
        else:
            op = Op("submit", user, event.get("task_id"), node, remark=remark, main=main)
        return [_needs(op, who, user)]
    if kind == "task.returned":
        node = mapping.node_of(payload.get("from_node"))
        to = mapping.create_node if payload.get("to") == "applicant" else mapping.node_of(payload.get("to"))
        if node is None:
            return []
        user = links.get(actor or "")
        op = Op("reject", user, event.get("task_id"), node, to, payload.get("reason") or "退回")
        return [_needs(op, actor, user)]
    if kind == "instance.withdrawn":
        return [_needs(Op("withdraw", starter, remark=payload.get("reason") or "申请人撤回"), instance.starter_id,
                       starter)]
    if kind == "instance.cancelled" or (kind == "instance.completed" and payload.get("outcome") != "approved"):
        user = links.get(actor or "") or starter
        return [_needs(Op("force_over", user, remark=payload.get("reason") or "finflow 流程已结束"), actor, user)]
    if kind == "instance.completed":
        return [Op("check", starter)]
    return []


def _needs(op: Op, finflow_user: str | None, oa_user: str | None) -> Op:
    if oa_user is None:
        op.problem = (f"finflow 用户 {finflow_user or '（系统）'} 没有对应的 OA 用户，无法在 OA 中{_WORDS[op.kind]}"
                      "（finflow oa users --sync 或 --link）")
    return op


_WORDS = {"create": "创建请求", "submit": "提交", "reject": "退回", "withdraw": "收回", "force_over": "归档",
          "check": "查询"}


def _facts(session: Session, instance: Instance, model) -> dict[str, Any]:
    starter = session.get(User, instance.starter_id)
    department = session.scalar(select(Department.name).where(Department.id == starter.department_id)) or ""
    summary = {"id": instance.id, "business_key": instance.business_key, "starter_id": instance.starter_id,
               "title": instance.title, "amount": instance.amount}
    facts = mappings.context(instance.data, summary, starter.name, department, model.name)
    facts["name_values"] = {"process": model.name, "starter_name": starter.name, "title": instance.title or "",
                            "business_key": instance.business_key or "", "amount": facts["amount_text"]}
    return facts


def _positions(session: Session, instance_id: str, mapping: mappings.Mapping) -> Callable[[int], frozenset[str]]:
    """expected(seq): the OA nodes of the user tasks open at the end of the command that recorded event `seq`."""
    rows = session.execute(select(HistoryEvent.seq, HistoryEvent.type, HistoryEvent.task_id, HistoryEvent.node_id,
                                  HistoryEvent.at).where(HistoryEvent.instance_id == instance_id)
                           .order_by(HistoryEvent.seq)).all()

    def expected(seq: int) -> frozenset[str]:
        at = next((r.at for r in rows if r.seq == seq), None)
        open_tasks: dict[str, str] = {}
        for row in rows:
            if row.seq > seq and row.at != at:
                break
            if row.type in OPENING and row.task_id:
                open_tasks[row.task_id] = row.node_id
            elif row.type in CLOSING and row.task_id:
                open_tasks.pop(row.task_id, None)
            elif row.type in ENDING:
                return frozenset({CLOSED})
        return frozenset(n for n in (mapping.node_of(node) for node in open_tasks.values()) if n)

    return expected


# -- sending (no transaction open) ---------------------------------------------------------------------
def _execute(client: OASystem, twin: _Twin, message: Message, op: Op) -> None:
    if op.problem is not None:
        _record_twin(twin, state="failed", last_error=op.problem)
        raise PermanentFailure(op.problem)
    if op.kind == "check" and twin.request_id is None:
        return
    if op.kind != "create" and twin.request_id is None:
        _record_twin(twin, state="failed", last_error="OA 请求尚未创建")
        raise PermanentFailure("the OA request of this instance was never created; see its first event")
    try:
        if op.kind != "check":
            _make_call(client, twin, message, op)
        _check(client, twin, op)
    except OATransient as exc:
        _record_twin(twin, state="retrying", last_error=str(exc))
        raise RetryLater(str(exc)) from exc
    except OAError as exc:
        log.warning("oa: %s of instance %s refused: %s", op.kind, twin.instance_id, exc)
        _record_submission_error(twin, message, op, str(exc))
        _record_twin(twin, state="failed", last_error=str(exc))
        raise PermanentFailure(str(exc)) from exc


def _make_call(client: OASystem, twin: _Twin, message: Message, op: Op) -> None:
    """The call, once: recorded before it is made; after a lost answer, OA's log says whether it happened."""
    submission = _begin(twin, message, op)
    if submission.status == "sent":
        return
    if submission.status == "sending" and message.attempt > 1 and _happened(client, twin, op, submission):
        _sent(twin, submission.id, note="重发前在 OA 日志中查到该操作已生效，未重复提交")
        return
    if op.kind == "create":
        request_id = client.create_request(op.oa_user, op.request)
        twin.request_id, twin.creator = request_id, op.oa_user
        _sent(twin, submission.id, request_id=request_id)
        return
    call = {"submit": lambda: client.submit(op.oa_user, twin.request_id, op.remark, op.main),
            "reject": lambda: client.reject(op.oa_user, twin.request_id, op.remark, op.to_node),
            "withdraw": lambda: client.withdraw(op.oa_user, twin.request_id, op.remark),
            "force_over": lambda: client.force_over(op.oa_user, twin.request_id, op.remark)}[op.kind]
    call()
    _sent(twin, submission.id)


def _happened(client: OASystem, twin: _Twin, op: Op, submission: OASubmission) -> bool:
    """Whether an earlier attempt whose answer was lost took effect: OA's log holds more entries of this kind
    by this user at this node than finflow has recorded as sent."""
    if op.kind == "create" or twin.request_id is None:
        return False  # E9 cannot be asked for a request by finflow's id: reconciliation reports a duplicate
    action = {"submit": "submit", "reject": "reject", "withdraw": "withdraw", "force_over": "archive"}[op.kind]
    logged = sum(1 for entry in client.logs(op.oa_user, twin.request_id) if entry.action == action
                 and entry.operator_id == op.oa_user and (op.oa_node is None or entry.node_id == op.oa_node))
    with transaction(twin.db_url, readonly=True) as session:
        sent = session.scalar(select(func.count()).select_from(OASubmission).where(
            OASubmission.request_id == twin.request_id, OASubmission.kind == op.kind,
            OASubmission.oa_user == op.oa_user, OASubmission.status == "sent",
            OASubmission.oa_node.is_(None) if op.oa_node is None else OASubmission.oa_node == op.oa_node))
    return logged > (sent or 0)


def _check(client: OASystem, twin: _Twin, op: Op) -> None:
    """Where OA says the request is, against where finflow expects it after this event."""
    status = client.status(twin.creator or op.oa_user, twin.request_id)
    expected = op.expected
    if CLOSED in expected:
        in_step = status.state in (ARCHIVED, WITHDRAWN)
        wanted = "已结束"
    else:
        in_step = status.state == OPEN and (not expected or status.node_id in expected)
        wanted = "、".join(sorted(expected)) or "（无待办节点）"
    error = None if in_step else (f"OA 请求在节点 {status.node_id}（{status.node_name}，{status.state}），"
                                  f"finflow 期望 {wanted}")
    if error and op.kind == "submit" and status.node_id == op.oa_node:
        error += "：OA 答复成功但未流转（会签节点仍在等待其他人？）"
    first_mismatch = _record_twin(twin, state="mismatch" if error else (CLOSED if CLOSED in expected else "synced"),
                                  last_error=error, oa_node=status.node_id, oa_node_name=status.node_name,
                                  oa_state=status.state, expected_node=",".join(sorted(expected)) or None,
                                  synced_at=clock.now())
    if error and first_mismatch:
        log.warning("oa: instance %s: %s", twin.instance_id, error)
        _incident(twin.db_url, twin.instance_id, "node_mismatch", error, {"oa_node": status.node_id})


# -- recording (short transactions of their own) ---------------------------------------------------------
def _begin(twin: _Twin, message: Message, op: Op) -> OASubmission:
    with transaction(twin.db_url) as session:
        row = session.scalar(select(OASubmission).where(OASubmission.outbox_id == message.id,
                                                        OASubmission.kind == op.kind))
        if row is None:
            row = OASubmission(outbox_id=message.id, instance_id=twin.instance_id, request_id=twin.request_id,
                               task_id=op.task_id, kind=op.kind, oa_node=op.oa_node, oa_user=op.oa_user,
                               to_node=op.to_node, status="sending", created_at=clock.now())
            session.add(row)
            session.flush()
        session.expunge(row)
        return row


def _sent(twin: _Twin, submission_id: int, request_id: str | None = None, note: str | None = None) -> None:
    with transaction(twin.db_url) as session:
        row = session.get(OASubmission, submission_id)
        row.status, row.sent_at, row.error = "sent", clock.now(), note
        if request_id is not None:
            row.request_id = request_id
            twin_row = session.get(OARequest, twin.instance_id)
            twin_row.request_id, twin_row.creator = request_id, twin.creator


def _record_submission_error(twin: _Twin, message: Message, op: Op, error: str) -> None:
    with transaction(twin.db_url) as session:
        row = session.scalar(select(OASubmission).where(OASubmission.outbox_id == message.id,
                                                        OASubmission.kind == op.kind))
        if row is not None:
            row.status, row.error = "failed", error[:2000]


def _record_twin(twin: _Twin, **fields: Any) -> bool:
    """Update the twin; returns whether its state changed to the one given (a first mismatch)."""
    with transaction(twin.db_url) as session:
        row = session.get(OARequest, twin.instance_id)
        changed = row.state != fields.get("state", row.state)
        for name, value in fields.items():
            setattr(row, name, value)
        return changed


def _incident(db_url: str | None, instance_id: str, kind: str, message: str, details: dict[str, Any]) -> None:
    with transaction(db_url) as session:
        record_integration_incident(session, OA_ACTOR, instance_id, "oa", kind, message, details)


def on_dead(session: Session, message: Message, error: str) -> None:
    """A row given up: the twin shows it failed, and the instance's history says what OA did not get."""
    row = session.get(OARequest, message.instance_id)
    reason = error.splitlines()[0][:500]
    if row is not None:
        row.state, row.last_error = "failed", reason
    record_integration_incident(session, OA_ACTOR, message.instance_id, "oa", "delivery_failed",
                                f"{message.event_type} 未能同步到 OA：{reason}", {"outbox_id": message.id})


# -- reading the twin (GET /instances/{id}) ----------------------------------------------------------------
def twin_view(session: Session, instance_id: str) -> dict[str, Any] | None:
    row = session.get(OARequest, instance_id)
    if row is None:
        return None
    return {"request_id": row.request_id, "workflow_id": row.workflow_id, "node": row.oa_node,
            "node_name": row.oa_node_name, "oa_state": row.oa_state, "expected_node": row.expected_node,
            "sync_state": row.state, "last_error": row.last_error, "synced_at": row.synced_at,
            "open_submissions": session.scalar(select(func.count()).select_from(OASubmission).where(
                OASubmission.instance_id == instance_id, OASubmission.status != "sent")) or 0}



def history_of(session: Session, instance_id: str) -> dict[str, Any]:
    """The twin with every call made on it and every decision OA sent, oldest first (GET /instances/{id}/oa)."""
    submissions = session.scalars(select(OASubmission).where(OASubmission.instance_id == instance_id)
                                  .order_by(OASubmission.id))
    decisions = session.scalars(select(OADecision).where(OADecision.instance_id == instance_id)
                                .order_by(OADecision.id))
    return {"twin": twin_view(session, instance_id), "submissions": list(submissions), "decisions": list(decisions)}
