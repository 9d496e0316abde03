"""One command's work on one instance: restore the workflow, act, step the engine, project, persist.

This is where SpiffWorkflow meets the database. Everything a step changes (the instance row, the
projected task rows, the history events) is written by `InstanceRun.save` in the caller's transaction,
with few statements: one instance update, bulk inserts for tasks, candidates and history.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar
from uuid import UUID, uuid4

from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from engine import clock, operators, outbox
from engine.db import after_commit, jsonable
from engine.errors import Conflict, DeploymentInvalid
from engine.finance import settlement
from engine.history import Actor, HistoryRecorder
from engine.models import HistoryEvent, Instance, InstanceCc, Task, TaskCandidate, Timer
from engine.org.assignment import resolve_candidates
from engine.runner import timer_schedule, warm
from engine.runner.duties import barred_approvers
from engine.runner.limits import CommandBudget, EngineLimitExceeded
from engine.runner.model import NodeInfo, ProcessModel
from engine.runner.script_engine import FinflowScriptEngine, RestrictedEnvironment
from engine.runner.state import dump_state, load_state
from engine.runner.summary import amount_of, title_of

T = TypeVar("T")
SCRIPT_ENGINE = FinflowScriptEngine(RestrictedEnvironment(operators.invoke))
_DEFINITE = TaskState.READY | TaskState.STARTED | TaskState.WAITING | TaskState.COMPLETED | TaskState.ERROR


def utcnow() -> datetime:
    return clock.now()


def run_command(session: Session, instance: Instance, model: ProcessModel, actor: Actor,
                command: Callable[[InstanceRun], T]) -> T:
    """Restore the instance, apply one command to it and save what changed, in the caller's transaction."""
    run = InstanceRun.load(session, instance, model, actor)
    result = command(run)
    run.save()
    return result


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
        self._returned_to_applicant: UUID | None = None  # the node reopened behind the applicant's resubmit
        self._return_holders: dict[str, list[str]] = {}  # node id -> who held it when the task was returned
        self._pending_auto: list[tuple[Any, NodeInfo, str | None, str]] = []
        self._had_timers = bool(self.workflow.event_manager.tasks)

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def start(cls, session: Session, instance: Instance, model: ProcessModel, data: dict[str, Any],
              actor: Actor) -> InstanceRun:
        try:
            workflow = BpmnWorkflow(model.spec, model.subprocess_specs, script_engine=SCRIPT_ENGINE)
        except RecursionError:  # a loop with no way out, in a version stored before deploy refused those
            raise DeploymentInvalid(f"流程 {model.key} 无法启动：流程图中存在没有出口的循环，请修改流程定义后重新部署",
                                    {"process_key": model.key, "version_id": model.version_id}) from None
        # Every field the start form declares is a variable, null when left out, so a diagram can ask
        # whether an optional field was filled (budget_line) instead of failing on an unknown name.
        declared = dict.fromkeys(model.form(model.start_form).get("properties", {})) if model.start_form else {}
        for task in workflow.get_tasks(state=TaskState.READY):
            task.data.update({**declared, **data})
        run = cls(session, instance, model, workflow, actor)
        run.history.record("instance.started", {"process_key": model.key, "version_id": model.version_id,
                                                "business_key": instance.business_key, "data": data})
        run.step()
        return run

    @classmethod
    def load(cls, session: Session, instance: Instance, model: ProcessModel, actor: Actor) -> InstanceRun:
        if instance.archived_at is not None:  # its workflow state was dropped and its history frozen
            raise Conflict("流程实例已归档，不能再变更", {"instance_id": instance.id}, code="instance_archived")
        workflow = warm.take(instance.id, instance.state) or load_state(instance.state, model, SCRIPT_ENGINE)
        return cls(session, instance, model, workflow, actor)

    # -- commands -----------------------------------------------------------------------------------

    def complete_user_task(self, row: Task, action: str, comment: str | None, form_data: dict[str, Any]) -> None:
        """Apply one approver's decision; the BPMN task completes when its rows say the node is decided."""
        spiff_task = self._ready_spiff_task(row)
        actor = self.history.actor.user_id
        if row.delegation == "pending":
            self._resolve_delegation(row, action, comment, form_data)
            return
        row.status, row.action, row.comment, row.form_data = "completed", action, comment, form_data
        row.assignee_id, row.completed_at = actor, utcnow()
        self.history.record("task.completed", {"name": row.name, "action": action, "comment": comment,
                                               "form_data": form_data, "kind": row.kind},
                            task_id=row.id, node_id=row.node_id)
        if row.kind == "resubmit":
            spiff_task.data.update(form_data)
            self._activate(self._open_rows(row, status="waiting"))
            return
        if action == "reject":
            self._cancel_rows(self._open_rows(row), "rejected")
            self._decide_node(spiff_task, row, "reject")
            return
        if row.kind == "approval" and row.pending_after:
            self._add_rows(row, row.pending_after, kind="add_sign")
            row.pending_after = []
            return
        if row.mode == "any" and row.kind == "approval":
            self._decide_node(spiff_task, row, action)
            return
        others = self._open_rows(row)
        if row.kind == "add_sign" and row.sign_before and not any(o.sign_before for o in others):
            self._activate([o for o in others if o.status == "waiting" and o.kind == "approval"][:1])
        elif row.mode == "sequence" and not any(o.status == "ready" for o in others):
            self._activate([o for o in others if o.status == "waiting"][:1])
        if not others:
            self._decide_node(spiff_task, row, action)

    def transfer(self, row: Task, to_user: str, reason: str | None) -> None:
        """转办: the task now belongs to another person, who decides in the approver's place."""
        previous = list(row.candidates)
        self._reassign(row, [to_user])
        self.history.record("task.transferred", {"from": previous, "to": to_user, "reason": reason},
                            task_id=row.id, node_id=row.node_id)

    def delegate(self, row: Task, to_user: str, reason: str | None) -> None:
        """委派: the delegate gives an opinion, then the task comes back to the owner to decide."""
        row.owner_id, row.delegate_id, row.delegation = self.history.actor.user_id, to_user, "pending"
        self._reassign(row, [to_user])
        self.history.record("task.delegated", {"owner": row.owner_id, "delegate": to_user, "reason": reason},
                            task_id=row.id, node_id=row.node_id)

    def add_signers(self, row: Task, users: list[str], before: bool, reason: str | None) -> None:
        """加签: extra approvers ahead of the current one (前加签) or after their approval (后加签)."""
        if before:
            self._add_rows(row, users, kind="add_sign", sign_before=True)
            row.status = "waiting"
        else:
            row.pending_after = [*row.pending_after, *users]
        self.history.record("task.signers_added", {"users": users, "position": "before" if before else "after",
                                                   "reason": reason}, task_id=row.id, node_id=row.node_id)

    def return_to(self, row: Task, target: str, reason: str | None) -> None:
        """退回: rewind the workflow to an earlier user task (or to the applicant); later approvals redo."""
        spiff_target = self._first_completed_user_task() if target == "applicant" else self._last_completed(target)
        node_id = spiff_target.task_spec.bpmn_id
        self._return_holders[node_id] = self._holders(node_id)
        self._cancel_rows(self._all_open_rows(), "returned")
        self.history.record("task.returned", {"to": target, "reason": reason, "from_node": row.node_id},
                            task_id=row.id, node_id=row.node_id)
        self._ready_user_tasks.clear()
        current = deepcopy(self._task(UUID(row.spiff_task_id)).data)
        self.workflow.reset_from_task_id(spiff_target.id)
        # The reopened task holds the request as it stands now, not as it was when the task first ran
        # (the reset re-inherits its parent's data): a second return must not undo a resubmission.
        spiff_target.data = current
        spiff_target.workflow.last_task = spiff_target  # what the instance's data and summary show meanwhile
        if target == "applicant":
            self._returned_to_applicant = spiff_target.id
        self.step()

    def urge(self, rows: list[Task], message: str | None) -> None:
        for row in rows:
            self.history.record("task.urged", {"message": message, "candidates": row.candidates},
                                task_id=row.id, node_id=row.node_id)

    def copy_to(self, users: list[str], node_id: str | None, by_actor: bool = True) -> list[str]:
        """抄送: record readers of the instance; returns those newly added."""
        existing = set(self.session.scalars(select(InstanceCc.user_id).where(
            InstanceCc.instance_id == self.instance.id, InstanceCc.user_id.in_(users))))
        added = [u for u in dict.fromkeys(users) if u not in existing]
        self.session.add_all(InstanceCc(instance_id=self.instance.id, user_id=u, node_id=node_id,
                                        added_by=self.history.actor.user_id if by_actor else None,
                                        created_at=utcnow()) for u in added)
        if added:
            self.history.record("instance.cc", {"users": added}, node_id=node_id, by_actor=by_actor)
        return added

    def fire_timers(self, due: list[Timer]) -> int:
        """Let SpiffWorkflow see the instance's due timers; returns how many fired.

        SpiffWorkflow fires every timer whose time has passed when it refreshes, so all due timers of the
        instance are prepared together: a timeout that decides the task sets the decision first.
        """
        fired = []
        for timer in due:
            task = self._task(UUID(timer.spiff_task_id))
            if task is None or task.state != TaskState.WAITING:
                timer.status = "cancelled"
                continue
            node = self.model.nodes[timer.node_id]
            if node.timeout_action in ("approve", "reject") and timer.attached_to:
                attached = timer.attached_to
                task.data.update({"decision": node.timeout_action, f"{attached}_decision": node.timeout_action,
                                  f"{attached}_by": None, f"{attached}_comment": "超时自动处理"})
            timer.status, timer.fired_at = "fired", utcnow()
            self.history.record("timer.fired", {"name": node.name, "due_at": timer.due_at.isoformat(),
                                                "attached_to": timer.attached_to,
                                                "timeout_action": node.timeout_action},
                                node_id=node.id, by_actor=False)
            if node.kind == "boundaryEvent" and not timer.interrupting:
                self._after_boundary_timer(node)
            fired.append(timer)
        if fired:
            self.workflow.refresh_timers()
            self.step()
        return len(fired)

    # -- rows of a node -----------------------------------------------------------------------------

    def release_candidate(self, row: Task, user_id: str, reason: str) -> list[str]:
        """Take a person who may no longer approve (left the company, disabled) off an open row: an or-sign
        keeps its other candidates; a row left empty follows the node's `finflow.on_empty` rule (role:/assign:
        reassign, skip cancels the row, fail — the default — hands it to the admins). Returns the row's
        candidates afterwards ([] when it was closed)."""
        row.pending_after = [u for u in row.pending_after if u != user_id]
        if user_id not in row.candidates:
            return list(row.candidates)
        node = self.model.nodes[row.node_id]
        users = [c for c in row.candidates if c != user_id] or self._fallback_candidates(node, row)
        if not users:
            self._cancel_rows([row], reason)
            self._after_row_closed(row, node, reason)
            return []
        self._reassign(row, users)
        self.history.record("task.reassigned", {"user": user_id, "reason": reason, "candidates": users},
                            task_id=row.id, node_id=row.node_id)  # by whoever deactivated the user (sync, admin)
        return users

    def _fallback_candidates(self, node: NodeInfo, row: Task) -> list[str]:
        """Who gets a row nobody is left on: the node's on_empty target, else the admins ([] for skip)."""
        rule = node.on_empty
        if rule == "skip":
            return []
        spiff_task = self._task(UUID(row.spiff_task_id))
        data = spiff_task.data if spiff_task is not None else {}
        users: list[str] = []
        if rule.startswith(("role:", "assign:")):
            kind, _, target = rule.partition(":")
            users = resolve_candidates(self.session, f"role({target})" if kind == "role" else target,
                                       self.instance.starter_id, data)
        users = users or resolve_candidates(self.session, "role(admin)", self.instance.starter_id, data)
        names = {n.id: n.name for n in self.model.nodes.values()}
        barred = barred_approvers(node, self.instance.starter_id, data, names)
        return [u for u in users if u not in barred]

    def _after_row_closed(self, row: Task, node: NodeInfo, reason: str) -> None:
        """A skipped row: the next in sequence gets its turn; the last one open approves the node."""
        others = self._open_rows(row)
        if others and row.mode == "sequence" and not any(o.status == "ready" for o in others):
            self._activate([o for o in others if o.status == "waiting"][:1])
        if not others:
            self._auto_decide(self._ready_spiff_task(row), node, None, f"{reason}，按配置跳过")
            self.step()

    def _ready_spiff_task(self, row: Task):
        task = self._task(UUID(row.spiff_task_id))
        if task is None or task.state != TaskState.READY:
            raise Conflict(f"任务「{row.name}」已不在待办状态", {"task_id": row.id})
        return task

    def _open_rows(self, row: Task, status: str | None = None) -> list[Task]:
        statuses = [status] if status else ["ready", "waiting"]
        return list(self.session.scalars(select(Task).where(
            Task.activation == row.activation, Task.id != row.id, Task.status.in_(statuses))
            .order_by(Task.position)))

    def _all_open_rows(self) -> list[Task]:
        return list(self.session.scalars(select(Task).where(
            Task.instance_id == self.instance.id, Task.status.in_(["ready", "waiting"]))))

    def _activate(self, rows: list[Task]) -> None:
        for row in rows:
            row.status = "ready"
            self.history.record("task.activated", {"candidates": row.candidates}, task_id=row.id,
                                node_id=row.node_id, by_actor=False)

    def _cancel_rows(self, rows: list[Task], reason: str) -> None:
        for row in rows:
            row.status, row.completed_at = "cancelled", utcnow()
            self.history.record("task.cancelled", {"reason": reason}, task_id=row.id, node_id=row.node_id,
                                by_actor=False)

    def _reassign(self, row: Task, users: list[str]) -> None:
        row.candidates = users
        self.session.execute(delete(TaskCandidate).where(TaskCandidate.task_id == row.id))
        self.session.add_all(TaskCandidate(task_id=row.id, user_id=u) for u in users)

    def _resolve_delegation(self, row: Task, action: str, comment: str | None, form: dict[str, Any]) -> None:
        row.delegation = "resolved"
        self._reassign(row, [row.owner_id])
        self.history.record("task.delegation_resolved", {"delegate": row.delegate_id, "opinion": action,
                                                         "comment": comment, "form_data": form},
                            task_id=row.id, node_id=row.node_id)

    def _add_rows(self, row: Task, users: list[str], kind: str, sign_before: bool = False) -> None:
        for offset, user in enumerate(users):
            self._new_row(row.spiff_task_id, row.activation, self.model.nodes[row.node_id], [user],
                          kind=kind, mode="all", position=row.position * 100 + offset + 1,
                          sign_before=sign_before)

    def _decide_node(self, spiff_task, row: Task, action: str) -> None:
        node = row.node_id
        rows = [row] if row.mode == "any" and row.kind == "approval" else self._decided_rows(row)
        for decided in rows:
            spiff_task.data.update(decided.form_data or {})
        spiff_task.data.update({"decision": action, f"{node}_decision": action,
                                f"{node}_by": self.history.actor.user_id, f"{node}_comment": row.comment or "",
                                "last_approver": self.history.actor.user_id})
        self._closed_by_command.add(spiff_task.id)
        self._ready_user_tasks.discard(spiff_task.id)
        spiff_task.run()
        self.step()

    def _decided_rows(self, row: Task) -> list[Task]:
        rows = list(self.session.scalars(select(Task).where(Task.activation == row.activation,
                                                            Task.status == "completed")
                                         .order_by(Task.completed_at)))
        return rows if row in rows else [*rows, row]

    def terminate(self, status: str, reason: str | None) -> None:
        """Withdraw or cancel: end the workflow where it stands and close its open tasks."""
        self.workflow.cancel()
        self._close_vanished_tasks()
        self.instance.status = status
        self.instance.ended_at = utcnow()
        self._settle(approved=False, reason=f"流程{'撤回' if status == 'withdrawn' else '作废'}，释放预算与发票")
        self.history.record(f"instance.{status}", {"reason": reason})

    # -- stepping -----------------------------------------------------------------------------------

    @cached_property
    def _budget(self) -> CommandBudget:
        """The engine work this command may still do (all its steps share one budget)."""
        return CommandBudget()

    def step(self) -> None:
        """Run the engine until it waits for people or timers, within the command's budget (limits.py):
        every task the engine runs is a step, and so is every round (the first, and each after
        auto-approvals), so even a loop of auto-approved user tasks ends."""
        budget = self._budget
        with budget.running():
            while True:
                try:
                    budget.spend(self.workflow.last_task)
                    with operators.bound(operators.OperatorContext(self.session, self.instance.id,
                                                                   self.instance.starter_id, self._record_system)):
                        self.workflow.do_engine_steps(did_complete_task=budget.spend)
                except SQLAlchemyError:
                    raise
                except Exception as exc:
                    # A bad expression, a failing service or a runaway diagram fails this instance, not the
                    # server; the command then commits as usual.
                    self._observe()
                    self._fail(exc, node_id=exc.node_id if isinstance(exc, EngineLimitExceeded) else None)
                    return
                self._observe()
                if self.instance.status == "failed" or not self._run_auto_decisions():
                    break
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
        if node.chooses_flows:
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

    def _after_boundary_timer(self, node: NodeInfo) -> None:
        """A boundary timer on a user task fired: remind its approvers, or escalate to a role (催办/升级)."""
        attached = node.properties.get("attachedToRef")
        rows = [r for r in self._all_open_rows() if r.node_id == attached]
        action = node.timeout_action or ""
        if action.startswith("role:"):
            users = resolve_candidates(self.session, f"role({action.removeprefix('role:')})",
                                       self.instance.starter_id, {})
            for row in rows:
                if users:
                    self._reassign(row, users)
                    self.history.record("task.escalated", {"reason": "超时升级", "to": users}, task_id=row.id,
                                        node_id=attached, by_actor=False)
        elif node.properties.get("cancelActivity", "true") == "false":
            for row in rows:
                self.history.record("task.reminded", {"candidates": row.candidates, "reason": "超时提醒"},
                                    task_id=row.id, node_id=attached, by_actor=False)

    def _taken_flows(self, task, node: NodeInfo) -> list[dict[str, Any]]:
        taken = []
        for child in task.children:
            if child.state & _DEFINITE or child.state == TaskState.FUTURE:
                target = child.task_spec.bpmn_id
                flow = self.model.flows.get((node.id, target))
                taken.append({"flow_id": flow.id if flow else None, "flow_name": flow.name if flow else "",
                              "condition": flow.condition if flow else None, "target": target})
        return taken

    def _holders(self, node_id: str) -> list[str]:
        """Who decided the node's last activation: the people a return (退回) hands it back to, so a
        transferee, not the original assignee, gets it again."""
        rows = self.session.execute(select(Task.activation, Task.assignee_id).where(
            Task.instance_id == self.instance.id, Task.node_id == node_id, Task.kind == "approval",
            Task.status == "completed").order_by(Task.completed_at, Task.position)).all()
        last = rows[-1].activation if rows else None
        return list(dict.fromkeys(a for activation, a in rows if activation == last and a))

    def _candidates(self, node: NodeInfo, task) -> list[str]:
        """The node's approvers: its assignment (or, after a return, who held it), less anyone barred
        from approving this request (segregation of duties), which history records."""
        held = self._return_holders.pop(node.id, None)
        if held:
            candidates = resolve_candidates(self.session, f"users({', '.join(held)})", self.instance.starter_id, {})
        else:
            candidates = resolve_candidates(self.session, node.assignment, self.instance.starter_id, task.data)
        return self._without_barred(node, task, candidates)

    def _without_barred(self, node: NodeInfo, task, candidates: list[str]) -> list[str]:
        barred = barred_approvers(node, self.instance.starter_id, task.data,
                                  {n.id: n.name for n in self.model.nodes.values()})
        excluded = [c for c in candidates if c in barred]
        if excluded:
            self.history.record("task.candidates_excluded", {"users": excluded,
                                                             "reasons": {u: barred[u] for u in excluded}},
                                node_id=node.id, by_actor=False)
        return [c for c in candidates if c not in barred]

    def _open_user_task(self, task) -> None:
        node = self.model.nodes[task.task_spec.bpmn_id]
        self._ready_user_tasks.add(task.id)
        candidates = self._candidates(node, task)
        if not candidates:
            candidates = self._when_nobody(node, task)
            if not candidates:
                return
        if node.cc:
            cc = resolve_candidates(self.session, node.cc, self.instance.starter_id, task.data)
            self.copy_to(cc, node.id, by_actor=False)
        previous = task.data.get("last_approver")
        if node.dedupe and previous in candidates and self._returned_to_applicant != task.id:
            self._auto_decide(task, node, previous, "与上一节点审批人相同，自动通过")
            return
        activation = uuid4().hex
        waiting = self._returned_to_applicant == task.id
        groups = [candidates] if node.mode == "any" else [[c] for c in candidates]
        for position, users in enumerate(groups):
            status = "waiting" if waiting or (node.mode == "sequence" and position > 0) else "ready"
            self._new_row(str(task.id), activation, node, users, mode=node.mode, position=position, status=status)
        if waiting:
            start_form = self.model.start_form or ""
            self._new_row(str(task.id), activation, node, [self.instance.starter_id], kind="resubmit",
                          mode="all", position=-1, name="申请人修改", form_key=start_form, actions=["submit"])

    def _new_row(self, spiff_task_id: str, activation: str, node: NodeInfo, users: list[str], *, kind="approval",
                 mode="any", position=0, status="ready", sign_before=False, name=None, form_key=None,
                 actions=None) -> None:
        row_id = str(uuid4())
        name = name or (node.name if kind == "approval" else f"{node.name}（加签）")
        self._new_tasks.append({
            "id": row_id, "spiff_task_id": spiff_task_id, "activation": activation, "kind": kind, "mode": mode,
            "position": position, "sign_before": sign_before, "pending_after": [],
            "instance_id": self.instance.id, "process_key": self.model.key, "node_id": node.id,
            "name": name, "status": status, "assignment": node.assignment, "candidates": users,
            "form_key": form_key if form_key is not None else node.form_key,
            "actions": actions or ([a for a in node.actions if a != "submit"] or ["approve"]
                                   if kind == "add_sign" else list(node.actions)),
            "created_at": utcnow(),
        })
        self._new_candidates.extend({"task_id": row_id, "user_id": u} for u in users)
        self.history.record("task.created", {"name": name, "kind": kind, "status": status}, task_id=row_id,
                            node_id=node.id, by_actor=False)
        self.history.record("task.assigned", {"assignment": node.assignment, "candidates": users},
                            task_id=row_id, node_id=node.id, by_actor=False)

    def _when_nobody(self, node: NodeInfo, task) -> list[str]:
        """审批人为空: fail (default), skip the node, or hand it to a role — never a silent hang."""
        if node.on_empty == "skip":
            self._auto_decide(task, node, None, f"{node.assignment} 无可用审批人，按配置跳过")
            return []
        if node.on_empty.startswith(("role:", "assign:")):
            kind, _, target = node.on_empty.partition(":")
            expression = f"role({target})" if kind == "role" else target
            users = self._without_barred(node, task, resolve_candidates(
                self.session, expression, self.instance.starter_id, task.data))
            if users:
                self.history.record("task.escalated", {"reason": "审批人为空", kind: target, "candidates": users},
                                    node_id=node.id, by_actor=False)
                return users
        message = f"{node.name}（{node.id}）审批人为空：{node.assignment} 没有可用的在职人员"
        self._fail(RuntimeError(message), node_id=node.id)
        return []

    def _auto_decide(self, task, node: NodeInfo, user: str | None, reason: str) -> None:
        """Approve a node without a person acting (skip when nobody, or the same approver again)."""
        self._pending_auto.append((task, node, user, reason))

    def _run_auto_decisions(self) -> bool:
        ran = False
        while self._pending_auto:
            task, node, user, reason = self._pending_auto.pop(0)
            if task.state != TaskState.READY:
                continue
            task.data.update({"decision": "approve", f"{node.id}_decision": "approve", f"{node.id}_by": user,
                              f"{node.id}_comment": reason})
            self.history.record("task.auto_approved", {"reason": reason, "as": user}, node_id=node.id,
                                by_actor=False)
            self._closed_by_command.add(task.id)
            self._ready_user_tasks.discard(task.id)
            task.run()
            ran = True
        return ran

    def _close_vanished_tasks(self) -> None:
        """Rows whose BPMN task stopped being ready without a decision here (countersign ended early,
        withdrawal, a parallel branch rejected)."""
        for task_id in list(self._ready_user_tasks):
            task = self._task(task_id)
            if task is not None and task.state == TaskState.READY:
                continue
            self._ready_user_tasks.discard(task_id)
            if task_id in self._closed_by_command:
                continue
            spiff_id = str(task_id)
            vanished_new = [t for t in self._new_tasks if t["spiff_task_id"] == spiff_id]
            if vanished_new:
                ids = {t["id"] for t in vanished_new}
                self._new_tasks = [t for t in self._new_tasks if t["id"] not in ids]
                self._new_candidates = [c for c in self._new_candidates if c["task_id"] not in ids]
            self.session.execute(update(Task).where(Task.spiff_task_id == spiff_id,
                                                    Task.status.in_(["ready", "waiting"]))
                                 .values(status="cancelled", completed_at=utcnow()))
            self.history.record("task.cancelled", {}, task_id=None,
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
        approved = outcome == "approved"
        self._settle(approved, "审批通过，核销预算占用" if approved else "申请未通过，释放预算与发票")
        self.history.record("instance.completed", {"outcome": outcome}, by_actor=False)

    def _settle(self, approved: bool, reason: str) -> None:
        held = settlement.settle(self.session, self.instance.id, approved, self.history.actor.user_id, reason)
        for line, amount in held.items():
            self.history.record("budget.consumed" if approved else "budget.released",
                                {"budget_line": line, "amount": str(amount), "reason": reason}, by_actor=False)

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
        instance.state = state = dump_state(self.workflow)
        instance_id, workflow = instance.id, self.workflow
        after_commit(self.session, lambda: warm.keep(instance_id, state, workflow))
        last = self.workflow.last_task
        data = last.data if last is not None else {}
        self._refresh_summary(data)
        instance.data = _jsonable(data)
        instance.updated_at = utcnow()
        self._sync_timers()
        history = self.history.take_rows()  # numbers and hash-chains the events, advances last_seq and chain_head
        self.session.flush()  # the instance row (insert or versioned update) before rows that reference it
        # Core inserts: one executemany each, without the ORM's per-row bookkeeping.
        connection = self.session.connection()
        if self._new_tasks:
            connection.execute(Task.__table__.insert(), self._new_tasks)
            connection.execute(TaskCandidate.__table__.insert(), self._new_candidates)
        if history:
            connection.execute(HistoryEvent.__table__.insert(), history)
            outbox.record(self.session, self.instance, history)

    def _refresh_summary(self, data: dict[str, Any]) -> None:
        """Lists and detail pages show title and amount from the columns: keep them true to the data
        (a resubmission may change both) and record the change."""
        instance = self.instance
        changes = {}
        title, amount = title_of(data), amount_of(data)
        if title != instance.title:
            changes["title"] = {"old": instance.title, "new": title}
            instance.title = title
        if amount != instance.amount:
            changes["amount"] = {"old": _jsonable(instance.amount), "new": _jsonable(amount)}
            instance.amount = amount
        if changes:
            self.history.record("instance.summary_changed", changes)

    def _sync_timers(self) -> None:
        """Record the timers the instance now waits on; drop those it no longer waits on."""
        waiting = [(task, due) for task in self.workflow.event_manager.tasks.values()
                   if (due := _timer_due(task)) is not None]
        if not waiting and not self._had_timers:
            return
        existing = {(t.spiff_task_id, t.due_at): t for t in self.session.scalars(select(Timer).where(
            Timer.instance_id == self.instance.id, Timer.status == "pending"))}
        current, created = set(), []
        for task, due in waiting:
            key = (str(task.id), due)
            current.add(key)
            node = self.model.nodes.get(task.task_spec.bpmn_id or "")
            if key in existing or node is None:
                continue
            interrupting = node.properties.get("cancelActivity", "true") != "false"
            reminder = node.kind == "boundaryEvent" and not interrupting and not node.timeout_action
            attached = node.properties.get("attachedToRef")
            created.append(Timer(instance_id=self.instance.id, spiff_task_id=str(task.id), node_id=node.id,
                                 attached_to=attached, interrupting=interrupting and node.kind == "boundaryEvent",
                                 due_at=due, fire_at=timer_schedule.defer_for_quiet_hours(due) if reminder else due,
                                 status="pending"))
            if attached and interrupting:
                self._set_due(attached, due)
        for key, timer in existing.items():
            if key not in current and timer.status == "pending":
                timer.status = "cancelled"
        self.session.add_all(created)
        timer_schedule.schedule_after_commit(self.session, created)  # ids are assigned by the flush in save()

    def _set_due(self, node_id: str, due: datetime) -> None:
        for row in self._new_tasks:
            if row["node_id"] == node_id:
                row["due_at"] = due
        self.session.execute(update(Task).where(Task.instance_id == self.instance.id, Task.node_id == node_id,
                                                Task.status.in_(["ready", "waiting"]), Task.due_at.is_(None))
                             .values(due_at=due))

    # -- helpers ------------------------------------------------------------------------------------

    def _is_user_task(self, task) -> bool:
        node = self.model.nodes.get(task.task_spec.bpmn_id or "")
        return node is not None and node.kind == "userTask" and not task.task_spec.__class__.__name__.endswith(
            "MultiInstanceTask")

    def completed_user_tasks(self) -> list:
        """User tasks this instance has completed, oldest first (multi-instance children excluded)."""
        done = [t for t in self._all_tasks() if t.state == TaskState.COMPLETED and self._is_user_task(t)
                and not t.task_spec.name.endswith("[child]")]
        return sorted(done, key=lambda t: t.last_state_change)

    def _last_completed(self, node_id: str):
        return next(t for t in reversed(self.completed_user_tasks()) if t.task_spec.bpmn_id == node_id)

    def _first_completed_user_task(self):
        return self.completed_user_tasks()[0]

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


def _timer_due(task) -> datetime | None:
    """When a waiting timer task is next due (UTC), or None for non-timer events and spent cycles."""
    definition = getattr(task.task_spec, "event_definition", None)
    if not isinstance(definition, TimerEventDefinition):
        return None
    value = definition.details(task).value
    if not isinstance(value, str):
        return None
    due = datetime.fromisoformat(value)
    return due if due.tzinfo is not None else due.replace(tzinfo=UTC)


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


_jsonable = jsonable
