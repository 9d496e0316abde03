"""Decisions taken in OA, from the callback or the poller, applied to finflow once.

Each is stored first (`oa_decisions`, unique per OA log line or per signed call, so a replay or the poller
reading what a callback already brought inserts nothing), then applied: the request must be a twin, its node
mapped to a user task and its operator linked to an active finflow user; then

* a decision finflow itself submitted, echoed back by OA's node Action or log, is ignored (ours);
* an open task at that node the user may decide is completed through engine.services.tasks.complete_task,
  the command the REST API runs, with channel "oa" (history says so, with the caller's address);
* a task already decided the same way by the same person is ignored (applied before);
* one decided otherwise in finflow (another decision, another person first) is a conflict: recorded on the
  decision and as an `integration.incident` in the instance's history, never applied twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.oa import mapping as mappings
from adapters.oa.models import OADecision, OARequest, OASubmission
from adapters.oa.users import user_of
from engine import clock
from engine.db import get_engine, insert_ignoring_duplicates, transaction
from engine.errors import FinflowError, Forbidden
from engine.history import Actor
from engine.models import Instance, Task, User
from engine.services.deployments import model_for
from engine.services.instances import record_integration_incident
from engine.services.tasks import complete_task, record_refused_action

log = logging.getLogger("finflow.oa.inbound")
ACTIONS = {"submit": "submit", "approve": "submit", "reject": "reject"}
MAX_ATTEMPTS = 5
STALE_AFTER = timedelta(seconds=30)
ACTOR_AGENT = "OA"


@dataclass
class Outcome:
    status: str  # applied | ignored | refused | conflict | failed
    result: str
    instance_id: str | None = None
    task_id: str | None = None


def store(decision: dict[str, Any], database_url: str | None = None) -> tuple[int, bool]:
    """Insert a decision once by its `dedupe_key`; (id, whether it is new). Core, pooled: callbacks come in bursts."""
    table = OADecision.__table__
    values = {**decision, "status": "received", "attempts": 0, "received_at": clock.now()}
    with get_engine(database_url).begin() as connection:
        new_id = connection.execute(insert_ignoring_duplicates(connection, table, ["dedupe_key"])
                                    .values(**values).returning(table.c.id)).scalar()
        if new_id is not None:
            return new_id, True
        existing = select(table.c.id).where(table.c.dedupe_key == decision["dedupe_key"])
        return connection.execute(existing).scalar(), False


def apply(decision_id: int, database_url: str | None = None) -> Outcome:
    """Apply one stored decision once; safe to run again (a decided row is left as it is)."""
    if not _count_attempt(decision_id, database_url):
        return _outcome(database_url, decision_id)
    try:
        with transaction(database_url) as session:
            row = _lock_received(session, decision_id)
            if row is None:
                return _outcome(database_url, decision_id)
            outcome = _decide(session, row)
            _finish(row, outcome)
    except FinflowError as refusal:  # complete_task refused: its transaction is gone, record the refusal
        with transaction(database_url) as session:
            row = _lock_received(session, decision_id)
            if row is None:
                return _outcome(database_url, decision_id)
            outcome = _refused(session, row, refusal)
            _finish(row, outcome)
    return outcome


def apply_stale(database_url: str | None = None) -> int:
    """Apply decisions stored but never applied (the process died between storing and applying)."""
    with transaction(database_url, readonly=True) as session:
        ids = list(session.scalars(select(OADecision.id).where(
            OADecision.status == "received", OADecision.received_at < clock.now() - STALE_AFTER)
            .order_by(OADecision.id).limit(200)))
    for decision_id in ids:
        apply(decision_id, database_url)
    return len(ids)


def _count_attempt(decision_id: int, database_url: str | None) -> bool:
    with transaction(database_url) as session:
        row = _lock_received(session, decision_id)
        if row is None:
            return False
        row.attempts += 1
        if row.attempts > MAX_ATTEMPTS:
            _finish(row, Outcome("failed", f"gave up after {MAX_ATTEMPTS} attempts that did not finish"))
            return False
    return True


def _lock_received(session: Session, decision_id: int) -> OADecision | None:
    row = session.scalar(select(OADecision).where(OADecision.id == decision_id).with_for_update())
    return row if row is not None and row.status == "received" else None


def _outcome(database_url: str | None, decision_id: int) -> Outcome:
    with transaction(database_url, readonly=True) as session:
        row = session.get(OADecision, decision_id)
        if row is None:
            return Outcome("missing", f"no decision {decision_id}")
        return Outcome(row.status, row.result or "", row.instance_id, row.task_id)


def _finish(row: OADecision, outcome: Outcome) -> None:
    row.status, row.result, row.applied_at = outcome.status, outcome.result[:2000], clock.now()
    row.instance_id, row.task_id = outcome.instance_id or row.instance_id, outcome.task_id or row.task_id
    line = log.info if outcome.status in ("applied", "ignored") else log.warning
    line("oa decision %s (%s %s by OA user %s at node %s of request %s): %s: %s", row.id, row.source, row.action,
         row.oa_user, row.oa_node, row.request_id, outcome.status, outcome.result)


def _decide(session: Session, row: OADecision) -> Outcome:
    twin = session.scalar(select(OARequest).where(OARequest.request_id == row.request_id))
    if twin is None:
        return Outcome("refused", f"OA 请求 {row.request_id} 不是 finflow 实例的孪生请求")
    instance = session.get(Instance, twin.instance_id)
    mapping = mappings.of(model_for(session, instance.version_id))
    nodes = mapping.tasks_at(row.oa_node) if mapping is not None else []
    if not nodes:
        return Outcome("refused", f"OA 节点 {row.oa_node} 没有映射到流程的用户任务", instance.id)
    if _echo_of_ours(session, row, mapping):
        return Outcome("ignored", "finflow 自己提交到 OA 的决定（OA 回传），无需处理", instance.id)
    user_id = user_of(session, row.oa_user)
    user = session.get(User, user_id) if user_id else None
    if user is None or not user.active:
        return Outcome("refused", f"OA 用户 {row.oa_user} 没有对应的在职 finflow 用户", instance.id)
    action = ACTIONS[row.action]
    task = _open_task(session, instance, nodes, user.id)
    if task is None:
        return _already_decided(session, row, instance, nodes, user.id, action)
    verb = "reject" if action == "reject" else ("submit" if "approve" not in task.actions else "approve")
    complete_task(session, Actor(user.id, "oa", row.client_ip, ACTOR_AGENT), task.id, verb, row.remark or None)
    return Outcome("applied", f"{verb} task {task.id} ({task.node_id})", instance.id, task.id)


def _echo_of_ours(session: Session, row: OADecision, mapping: mappings.Mapping) -> bool:
    """Whether the decision is one finflow made itself (node Action or log line of our own call); each of our
    calls is matched once, so the same person deciding again later in OA is not mistaken for an echo."""
    kinds = ["reject"] if row.action == "reject" else ["submit", "create"]
    ours = session.scalar(select(OASubmission).where(
        OASubmission.request_id == row.request_id, OASubmission.oa_user == row.oa_user,
        OASubmission.kind.in_(kinds), OASubmission.echoed.is_(False), OASubmission.status.in_(("sending", "sent")))
        .order_by(OASubmission.id).with_for_update())
    if ours is None:
        return False
    at_node = ours.oa_node == row.oa_node or (ours.kind == "create" and row.oa_node == mapping.create_node)
    if not at_node:
        return False
    ours.echoed = True
    return True


def _open_task(session: Session, instance: Instance, nodes: list[str], user_id: str) -> Task | None:
    if instance.status != "running":
        return None
    rows = session.scalars(select(Task).where(Task.instance_id == instance.id, Task.node_id.in_(nodes),
                                              Task.status == "ready").order_by(Task.created_at, Task.position))
    return next((t for t in rows if user_id in t.candidates), None)


def _already_decided(session: Session, row: OADecision, instance: Instance, nodes: list[str], user_id: str,
                     action: str) -> Outcome:
    """No open task of this person at the node: applied before (ignored), or finflow decided otherwise."""
    last = session.scalar(select(Task).where(Task.instance_id == instance.id, Task.node_id.in_(nodes),
                                             Task.status == "completed").order_by(Task.completed_at.desc()).limit(1))
    same = last is not None and last.assignee_id == user_id and \
        ("reject" if last.action == "reject" else "submit") == action
    if same:
        return Outcome("ignored", f"已处理：finflow 中该任务已由同一人{_word(last.action)}", instance.id, last.id)
    if last is None and instance.status == "running":
        return Outcome("refused", f"finflow 中节点 {'、'.join(nodes)} 没有 {user_id} 可处理的任务", instance.id)
    taken = f"已由 {last.assignee_id} {_word(last.action)}" if last is not None else f"流程已{instance.status}"
    message = f"OA 中 {user_id} 在节点 {row.oa_node} {_word(action)}，但 finflow 中该节点{taken}：未重复处理"
    record_integration_incident(session, Actor(user_id, "oa", row.client_ip, ACTOR_AGENT), instance.id, "oa",
                                "conflict", message, {"oa_node": row.oa_node, "oa_user": row.oa_user,
                                                      "oa_action": row.action})
    return Outcome("conflict", message, instance.id, last.id if last is not None else None)


def _word(action: str | None) -> str:
    return {"reject": "驳回", "approve": "同意", "submit": "提交"}.get(action or "", "处理")


def _refused(session: Session, row: OADecision, refusal: FinflowError) -> Outcome:
    """complete_task said no (not a candidate, a form the task needs): recorded on the task's history."""
    twin = session.scalar(select(OARequest).where(OARequest.request_id == row.request_id))
    instance_id = twin.instance_id if twin else None
    task_id = None
    if isinstance(refusal, Forbidden) and instance_id is not None:
        user_id = user_of(session, row.oa_user)
        mapping = mappings.of(model_for(session, session.get(Instance, instance_id).version_id))
        task = session.scalar(select(Task).where(Task.instance_id == instance_id, Task.status == "ready",
                                                 Task.node_id.in_(mapping.tasks_at(row.oa_node))).limit(1))
        if task is not None:
            task_id = task.id
            record_refused_action(session, Actor(user_id, "oa", row.client_ip, ACTOR_AGENT), task.id,
                                  f"OA: {refusal.message}", ACTIONS.get(row.action))
    return Outcome("refused", f"{type(refusal).__name__}: {refusal.message}", instance_id, task_id)
