"""One command's work on one instance: restore the workflow, act, step the engine, project, persist.

This is where SpiffWorkflow meets the database. Everything a step changes (the instance row, the
projected task rows, the history events) is written by `InstanceRun.save` in the caller's transaction,
with few statements: one instance update, bulk inserts for tasks, candidates and history.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from engine import operators
from engine.errors import Conflict
from engine.history import Actor, HistoryRecorder
from engine.models import HistoryEvent, Instance, Task, TaskCandidate
from engine.org.assignment import resolve_candidates
from engine.runner.model import NodeInfo, ProcessModel
from engine.runner.script_engine import FinflowScriptEngine, RestrictedEnvironment
from engine.runner.state import dump_state, load_state

SCRIPT_ENGINE = FinflowScriptEngine(RestrictedEnvironment(operators.invoke))
_DEFINITE = TaskState.READY | TaskState.STARTED | TaskState.WAITING | TaskState.COMPLETED | TaskState.ERROR


def utcnow() -> datetime:
    return datetime.now(UTC)


class InstanceRun:
    def __init__(self, session: Session, instance: Instance, model: ProcessModel, workflow: BpmnWorkflow,
                 actor: Actor):
        self.session = session
        self.instance = instance
        self.model = model
        self.workflow = workflow
        self.history = HistoryRecorder(instance, actor)
        self._states = {t.id: t.state for t in self._all_tasks()}
        self._ready_user_tasks = {i for i, state in self._states.items()
                                  if state == TaskState.READY and self._is_user_task(self._task(i))}
        self._new_tasks: list[dict[str, Any]] = []
        self._new_candidates: list[dict[str, str]] = []
        self._closed_by_command: set[UUID] = set()

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def start(cls, session: Session, instance: Instance, model: ProcessModel, data: dict[str, Any],
              actor: Actor) -> InstanceRun:
        workflow = BpmnWorkflow(model.spec, model.subprocess_specs, script_engine=SCRIPT_ENGINE)
        for task in workflow.get_tasks(state=TaskState.READY):
            task.data.update(data)
        run = cls(session, instance, model, workflow, actor)
        run.history.record("instance.started", {"process_key": model.key, "version_id": model.version_id,
                                                "business_key": instance.business_key, "data": data})
        run.step()
        return run

    @classmethod
    def load(cls, session: Session, instance: Instance, model: ProcessModel, actor: Actor) -> InstanceRun:
        return cls(session, instance, model, load_state(instance.state, model, SCRIPT_ENGINE), actor)

    # -- commands -----------------------------------------------------------------------------------

    def complete_user_task(self, row: Task, action: str, comment: str | None, form_data: dict[str, Any]) -> None:
        task = self._task(UUID(row.id))
        if task is None or task.state != TaskState.READY:
            raise Conflict(f"任务「{row.name}」已不在待办状态", {"task_id": row.id})
        node = row.node_id
        task.data.update(form_data)
        task.data.update({"decision": action, f"{node}_decision": action, f"{node}_by": self.history.actor.user_id,
                          f"{node}_comment": comment or ""})
        row.status, row.action, row.comment = "completed", action, comment
        row.assignee_id, row.completed_at = self.history.actor.user_id, utcnow()
        self._closed_by_command.add(task.id)
        self.history.record("task.completed", {"name": row.name, "action": action, "comment": comment,
                                               "form_data": form_data}, task_id=row.id, node_id=node)
        task.run()
        self.step()

    def terminate(self, status: str, reason: str | None) -> None:
        """Withdraw or cancel: end the workflow where it stands and close its open tasks."""
        self.workflow.cancel()
        self._close_vanished_tasks()
        self.instance.status = status
        self.instance.ended_at = utcnow()
        self.history.record(f"instance.{status}", {"reason": reason})

    # -- stepping -----------------------------------------------------------------------------------

    def step(self) -> None:
        try:
            with operators.bound(operators.OperatorContext(self.session, self.instance.id, self._record_system)):
                self.workflow.do_engine_steps()
        except SQLAlchemyError:
            raise
        except Exception as exc:  # a bad expression or failing service fails this instance, not the server
            self._observe()
            self._fail(exc)
            return
        self._observe()
        if self.workflow.is_completed():
            self._finish()

    def _record_system(self, type_: str, payload: dict[str, Any]) -> None:
        self.history.record(type_, payload, by_actor=False)

    def _observe(self) -> None:
        tasks = self._all_tasks()
        changed = [t for t in tasks if self._states.get(t.id) != t.state]
        changed.sort(key=lambda t: t.last_state_change)
        for task in changed:
            if task.state == TaskState.COMPLETED and not self._is_user_task(task):
                self._record_completed_node(task)
        for task in changed:
            if task.state == TaskState.READY and self._is_user_task(task):
                self._open_user_task(task)
        self._close_vanished_tasks()
        self._states = {t.id: t.state for t in tasks}

    def _record_completed_node(self, task) -> None:
        node = self.model.nodes.get(task.task_spec.bpmn_id or "")
        if node is None:
            return
        kind, payload = "node.completed", {"name": node.name, "kind": node.kind}
        if node.kind in ("exclusiveGateway", "inclusiveGateway"):
            kind = "gateway.decision"
            payload["taken"] = self._taken_flows(task, node)
        elif node.kind == "businessRuleTask":
            kind = "dmn.decision"
            payload.update(_dmn_trace(task))
        elif node.kind == "serviceTask":
            kind = "service.completed"
            spec = task.task_spec
            payload.update(operator=spec.operation_name, result=task.data.get(spec.result_variable))
        self.history.record(kind, payload, node_id=node.id, by_actor=False)

    def _taken_flows(self, task, node: NodeInfo) -> list[dict[str, Any]]:
        taken = []
        for child in task.children:
            if child.state & _DEFINITE or child.state == TaskState.FUTURE:
                target = child.task_spec.bpmn_id
                flow = self.model.flows.get((node.id, target))
                taken.append({"flow_id": flow.id if flow else None, "flow_name": flow.name if flow else "",
                              "condition": flow.condition if flow else None, "target": target})
        return taken

    def _open_user_task(self, task) -> None:
        node = self.model.nodes[task.task_spec.bpmn_id]
        candidates = resolve_candidates(self.session, node.assignment, self.instance.starter_id, task.data)
        if not candidates:
            raise_empty = f"{node.name}（{node.id}）审批人为空：{node.assignment} 没有可用的在职人员"
            self._fail(RuntimeError(raise_empty), node_id=node.id)
            return
        row_id = str(task.id)
        self._new_tasks.append({
            "id": row_id, "instance_id": self.instance.id, "process_key": self.model.key, "node_id": node.id,
            "name": node.name, "status": "ready", "assignment": node.assignment, "candidates": candidates,
            "form_key": node.form_key, "actions": list(node.actions), "created_at": utcnow(),
        })
        self._new_candidates.extend({"task_id": row_id, "user_id": c} for c in candidates)
        self._ready_user_tasks.add(task.id)
        self.history.record("task.created", {"name": node.name}, task_id=row_id, node_id=node.id, by_actor=False)
        self.history.record("task.assigned", {"assignment": node.assignment, "candidates": candidates},
                            task_id=row_id, node_id=node.id, by_actor=False)

    def _close_vanished_tasks(self) -> None:
        """User tasks that stopped being ready without a completion (countersign ended early, withdrawal)."""
        for task_id in list(self._ready_user_tasks):
            task = self._task(task_id)
            if task is not None and task.state == TaskState.READY:
                continue
            self._ready_user_tasks.discard(task_id)
            if task_id in self._closed_by_command:
                continue
            row_id = str(task_id)
            if any(t["id"] == row_id for t in self._new_tasks):
                self._new_tasks = [t for t in self._new_tasks if t["id"] != row_id]
                self._new_candidates = [c for c in self._new_candidates if c["task_id"] != row_id]
            else:
                self.session.execute(update(Task).where(Task.id == row_id, Task.status == "ready")
                                     .values(status="cancelled", completed_at=utcnow()))
            self.history.record("task.cancelled", {}, task_id=row_id,
                                node_id=task.task_spec.bpmn_id if task else None, by_actor=False)

    def _finish(self) -> None:
        ends = [t for t in self.workflow.get_tasks(state=TaskState.COMPLETED)
                if self.model.nodes.get(t.task_spec.bpmn_id or "", None) is not None
                and self.model.nodes[t.task_spec.bpmn_id].kind == "endEvent"]
        outcome = None
        if ends:
            last = max(ends, key=lambda t: t.last_state_change)
            outcome = self.model.nodes[last.task_spec.bpmn_id].properties.get("finflow.outcome")
        self.instance.status = "completed"
        self.instance.outcome = outcome
        self.instance.ended_at = utcnow()
        self.history.record("instance.completed", {"outcome": outcome}, by_actor=False)

    def _fail(self, exc: Exception, node_id: str | None = None) -> None:
        error_task = next(iter(self.workflow.get_tasks(state=TaskState.ERROR)), None)
        node_id = node_id or (error_task.task_spec.bpmn_id if error_task else None)
        message = str(exc).split("\n")[0]
        self.instance.status = "failed"
        self.instance.error = {"node_id": node_id, "type": type(exc).__name__, "message": message,
                               "line": getattr(exc, "line_number", None) or None}
        self.history.record("instance.failed", self.instance.error, node_id=node_id, by_actor=False)

    # -- persistence --------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the step: one instance insert/update (with the history sequence), then bulk inserts."""
        instance = self.instance
        instance.state = dump_state(self.workflow)
        last = self.workflow.last_task
        instance.data = _jsonable(last.data if last is not None else {})
        instance.updated_at = utcnow()
        history = self.history.take_rows()  # numbers the events and advances instance.last_seq
        self.session.flush()  # the instance row (insert or versioned update) before rows that reference it
        # Core inserts: one executemany each, without the ORM's per-row bookkeeping.
        connection = self.session.connection()
        if self._new_tasks:
            connection.execute(Task.__table__.insert(), self._new_tasks)
            connection.execute(TaskCandidate.__table__.insert(), self._new_candidates)
        if history:
            connection.execute(HistoryEvent.__table__.insert(), history)

    # -- helpers ------------------------------------------------------------------------------------

    def _is_user_task(self, task) -> bool:
        node = self.model.nodes.get(task.task_spec.bpmn_id or "")
        return node is not None and node.kind == "userTask" and not task.task_spec.__class__.__name__.endswith(
            "MultiInstanceTask")

    def _all_tasks(self) -> list:
        """Every task of the instance, read from the id maps (much cheaper than walking the tree)."""
        tasks = list(self.workflow.tasks.values())
        for sub in self.workflow.subprocesses.values():
            tasks.extend(sub.tasks.values())
        return tasks

    def _task(self, task_id: UUID):
        task = self.workflow.tasks.get(task_id)
        if task is None:
            task = next((s.tasks[task_id] for s in self.workflow.subprocesses.values() if task_id in s.tasks), None)
        return task


def _dmn_trace(task) -> dict[str, Any]:
    """Which rule matched, on which input values, with which outputs: re-evaluated for the record."""
    table = task.task_spec.dmnEngine.decision_table
    rules = task.task_spec.dmnEngine.decide(task)
    if table.hit_policy != "COLLECT":
        rules = rules[:1]  # SpiffWorkflow lists every match for FIRST; only the first one decided
    engine = task.workflow.script_engine
    inputs = {}
    for item in table.inputs:
        try:
            inputs[item.label or item.expression] = engine.evaluate(task, item.expression)
        except Exception:  # a record of inputs must never break the step it describes
            inputs[item.label or item.expression] = None
    outputs = {o.name: task.data.get(o.name) for o in table.outputs}
    return {"decision_id": table.id, "hit_policy": table.hit_policy, "inputs": _jsonable(inputs),
            "matched_rules": [{"id": r.id, "row": r.row_number, "description": r.description} for r in rules],
            "outputs": _jsonable(outputs)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))
