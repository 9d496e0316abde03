"""Commands on human tasks: the one path an API call, a WeCom click and an OA callback all end in.

complete (同意/驳回/提交), transfer (转办), delegate (委派), add signers (加签) and return (退回). Every
command locks the instance, checks that the caller is a current approver, and records itself in history.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from SpiffWorkflow.exceptions import TaskNotFoundException
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import metrics
from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.history import Actor
from engine.models import Instance, ProcessVersion, Task, User
from engine.org.directory import require_active_users
from engine.runner.duties import barred_approvers
from engine.runner.execution import InstanceRun, run_command
from engine.runner.model import ProcessModel
from engine.services import second_factor
from engine.services.controls import check_submission
from engine.services.deployments import model_for
from engine.services.forms import validate_form
from engine.services.second_factor_policy import need_for


@metrics.timed("complete", by_action=True)
def complete_task(session: Session, actor: Actor, task_id: str, action: str, comment: str | None = None,
                  form_data: dict[str, Any] | None = None, *,
                  otp: str | None | second_factor.InProcess = second_factor.IN_PROCESS) -> tuple[Task, Instance]:
    """`otp`: the second-factor code a person sent with the command (None: none sent). Approving a large
    payment or changing a payee's bank account needs one (second_factor_policy); the check runs after
    every other, on the restored workflow (a resubmission's current values are in its task's data, not yet
    in instance.data) and before anything is written. In-process callers leave the default (IN_PROCESS)."""
    instance, task, model = _load_actionable(session, actor, task_id)
    if action not in task.actions:
        raise InvalidInput(f"action must be one of {task.actions}", {"fields": {"action": [
            f"'{action}' is not allowed here; allowed: {', '.join(task.actions)}"]}})
    if action != "submit":  # also for rows made before a rule applied, or by a path that missed it
        _refuse_barred(instance, task, model, [actor.user_id], "action", "审批", Forbidden)
    form_data = validate_form(model.form(task.form_key), form_data or {}, "form_data")
    if action == "submit":  # a revised request passes the same controls as a new one
        check_submission(session, instance.starter_id, model.form(model.start_form),
                         {**instance.data, **form_data}, instance.id, resubmission=True)
    form = model.form(task.form_key)

    def complete(run: InstanceRun) -> None:
        need = need_for(instance, action, form, form_data, _current_data(run, task, instance))
        second_factor.guard(session, actor, need, otp)
        run.complete_user_task(task, action, comment, form_data)

    run_command(session, instance, model, actor, complete)
    return task, instance


def _current_data(run: InstanceRun, task: Task, instance: Instance) -> dict[str, Any]:
    """The values the task's BPMN task holds now: what a submission changes (a second resubmission
    compares with the first, not with the start)."""
    try:
        return run.workflow.get_task_from_id(UUID(task.spiff_task_id)).data
    except (TaskNotFoundException, ValueError):
        return instance.data or {}


@metrics.timed("transfer")
def transfer_task(session: Session, actor: Actor, task_id: str, to_user: str, reason: str | None) -> Task:
    instance, task, model = _load_actionable(session, actor, task_id)
    require_active_users(session, [to_user], "to")
    _refuse_barred(instance, task, model, [to_user], "to", "转办")
    if to_user in task.candidates:
        raise InvalidInput(f"{to_user} 已是该任务的审批人", {"fields": {"to": ["already on the task"]}})
    run_command(session, instance, model, actor, lambda run: run.transfer(task, to_user, reason))
    return task


@metrics.timed("delegate")
def delegate_task(session: Session, actor: Actor, task_id: str, to_user: str, reason: str | None) -> Task:
    instance, task, model = _load_actionable(session, actor, task_id)
    if task.delegation == "pending":
        raise Conflict("任务已委派，等待被委派人处理", {"task_id": task_id, "delegate": task.delegate_id})
    require_active_users(session, [to_user], "to")
    if to_user == actor.user_id:
        raise InvalidInput("不能委派给自己", {"fields": {"to": ["is yourself"]}})
    _refuse_barred(instance, task, model, [to_user], "to", "委派")
    run_command(session, instance, model, actor, lambda run: run.delegate(task, to_user, reason))
    return task


@metrics.timed("add_signers")
def add_signers(session: Session, actor: Actor, task_id: str, users: list[str], position: str,
                reason: str | None) -> Task:
    instance, task, model = _load_actionable(session, actor, task_id)
    if task.delegation == "pending":
        raise Conflict("任务已委派，等待被委派人处理", {"task_id": task_id})
    users = list(dict.fromkeys(users))
    require_active_users(session, users, "users")
    _refuse_barred(instance, task, model, users, "users", "加签")
    on_task = {user for candidates in session.scalars(select(Task.candidates).where(
        Task.activation == task.activation, Task.status.in_(["ready", "waiting"]))) for user in candidates}
    already = sorted(set(users) & (on_task | set(task.pending_after)))
    if already:
        raise InvalidInput(f"{', '.join(already)} 已在该任务上",
                           {"fields": {"users": [f"already on the task: {already}"]}})
    run_command(session, instance, model, actor, lambda run: run.add_signers(task, users, position == "before", reason))
    return task


@metrics.timed("return")
def return_task(session: Session, actor: Actor, task_id: str, to: str, reason: str | None) -> Instance:
    instance, task, model = _load_actionable(session, actor, task_id)
    run = InstanceRun.load(session, instance, model, actor)
    visited = {t.task_spec.bpmn_id for t in run.completed_user_tasks()}
    if to != "applicant" and to not in visited:
        raise InvalidInput(f"不能退回到未经过的节点 {to}", {"fields": {"to": [
            f"'{to}' was never completed in this instance; visited: {sorted(visited)} or 'applicant'"]}})
    if not visited:
        raise InvalidInput("尚无已完成的审批节点，无法退回", {"fields": {"to": ["nothing to return to"]}})
    run.return_to(task, to, reason)
    run.save()
    return instance


def record_refused_action(session: Session, actor: Actor, task_id: str, reason: str,
                          action: str | None = None) -> None:
    """History of an attempt to act that was refused (a WeCom click by someone who may not act): the
    instance is locked and the event goes through the runner's history path, so its seq and outbox row
    are in order with every other event. Nothing else changes. Unknown task → NotFound."""
    instance, content_hash = _lock_instance(session, task_id)
    task = session.get(Task, task_id)
    model = model_for(session, instance.version_id, content_hash)
    payload = {"reason": reason, "user": actor.user_id, "action": action}
    run_command(session, instance, model, actor,
                lambda run: run.history.record("task.action_refused", payload, task_id=task.id, node_id=task.node_id))


def _refuse_barred(instance: Instance, task: Task, model: ProcessModel, users: list[str], field: str,
                   operation: str, error: type[InvalidInput] | type[Forbidden] = InvalidInput) -> None:
    """Nobody barred from approving the node (the applicant, an earlier approver of a distinct node) may
    be brought onto it by transfer, delegation or added signers."""
    node = model.nodes[task.node_id]
    barred = barred_approvers(node, instance.starter_id, instance.data, {n.id: n.name for n in model.nodes.values()})
    refused = {u: barred[u] for u in users if u in barred}
    if refused:
        user, reason = next(iter(refused.items()))
        message = f"{reason}，不能{operation}" if error is Forbidden else f"不能{operation}给 {user}：{reason}"
        fields = {field: [f"{u} may not approve this request: {r}" for u, r in refused.items()]}
        raise error(message, {"fields": fields}, code="segregation_of_duties")


def _lock_instance(session: Session, task_id: str) -> tuple[Instance, str]:
    """The task's instance, locked for this transaction, and its version's content hash."""
    locked = session.execute(
        select(Instance, ProcessVersion.content_hash).join(Task, Task.instance_id == Instance.id)
        .join(ProcessVersion, ProcessVersion.id == Instance.version_id).where(Task.id == task_id)
        .with_for_update(of=Instance).execution_options(populate_existing=True)).first()
    if locked is None:
        raise NotFound(f"任务 {task_id} 不存在", {"task_id": task_id})
    instance, content_hash = locked
    return instance, content_hash


def _load_actionable(session: Session, actor: Actor, task_id: str) -> tuple[Instance, Task, ProcessModel]:
    """Lock the task's instance, then check the caller may act on the task now."""
    instance, content_hash = _lock_instance(session, task_id)
    task = session.get(Task, task_id, populate_existing=True)  # read after the lock: the current status
    if task.status in ("completed", "cancelled"):
        raise Conflict(f"任务「{task.name}」已{'处理' if task.status == 'completed' else '取消'}，不能重复操作",
                       {"task_id": task_id, "status": task.status, "completed_by": task.assignee_id})
    if instance.status != "running":
        raise Conflict(f"流程实例状态为 {instance.status}，不能处理任务", {"instance_id": instance.id,
                                                                        "status": instance.status})
    if not session.scalar(select(User.active).where(User.id == actor.user_id)):  # left, or disabled in WeCom
        raise Forbidden("用户已停用，不能处理任务", {"task_id": task_id, "user_id": actor.user_id})
    if actor.user_id not in task.candidates:
        raise Forbidden(f"您不是任务「{task.name}」的审批人", {"task_id": task_id})
    if task.status == "waiting":
        raise Conflict(f"任务「{task.name}」尚未轮到您处理（等待加签人或前序审批人）", {"task_id": task_id,
                                                                                    "status": task.status})
    return instance, task, model_for(session, instance.version_id, content_hash)
