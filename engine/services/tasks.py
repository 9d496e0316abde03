"""Completing human tasks: the command an API call, a WeCom click and an OA callback all end in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.history import Actor
from engine.models import Instance, ProcessVersion, Task
from engine.runner.execution import InstanceRun
from engine.services.deployments import model_for
from engine.services.forms import validate_form

ACTION_LABELS = {"approve": "同意", "reject": "驳回", "submit": "提交"}


def complete_task(session: Session, actor: Actor, task_id: str, action: str, comment: str | None = None,
                  form_data: dict[str, Any] | None = None) -> tuple[Task, Instance]:
    locked = session.execute(
        select(Instance, ProcessVersion.content_hash).join(Task, Task.instance_id == Instance.id)
        .join(ProcessVersion, ProcessVersion.id == Instance.version_id).where(Task.id == task_id)
        .with_for_update(of=Instance).execution_options(populate_existing=True)).first()
    if locked is None:
        raise NotFound(f"任务 {task_id} 不存在", {"task_id": task_id})
    instance, content_hash = locked
    task = session.get(Task, task_id, populate_existing=True)  # read after the lock: the current status
    if task.status != "ready":
        raise Conflict(f"任务「{task.name}」已{'处理' if task.status == 'completed' else '取消'}，不能重复操作",
                       {"task_id": task_id, "status": task.status, "completed_by": task.assignee_id})
    if instance.status != "running":
        raise Conflict(f"流程实例状态为 {instance.status}，不能处理任务", {"instance_id": instance.id,
                                                                        "status": instance.status})
    if actor.user_id not in task.candidates:
        raise Forbidden(f"您不是任务「{task.name}」的审批人", {"task_id": task_id})
    if action not in task.actions:
        raise InvalidInput(f"action must be one of {task.actions}", {"fields": {"action": [
            f"'{action}' is not allowed here; allowed: {', '.join(task.actions)}"]}})
    model = model_for(session, instance.version_id, content_hash)
    form_data = validate_form(model.form(task.form_key), form_data or {}, "form_data")
    run = InstanceRun.load(session, instance, model, actor)
    run.complete_user_task(task, action, comment, form_data)
    run.save()
    return task, instance
