from __future__ import annotations

from api.context import authenticated, command
from api.openapi import errors
from api.parsing import Blueprint
from api.routes.instances import instance_detail
from api.routes.second_factor import otp_header, records_failures, takes_otp
from api.schemas import (
    AddSignersSchema,
    CompletedSchema,
    CompleteTaskSchema,
    InstanceDetailSchema,
    ReturnSchema,
    TaskDetailSchema,
    TaskListArgsSchema,
    TaskPageSchema,
    TaskSchema,
    TransferSchema,
)
from engine.models import Instance
from engine.services import deployments, queries, tasks
from engine.services.second_factor_policy import approval_need

blp = Blueprint("tasks", __name__, description="List, read and complete human tasks")


@blp.route("/tasks")
@blp.arguments(TaskListArgsSchema, location="query")
@blp.response(200, TaskPageSchema)
@authenticated
def list_tasks(args, session, user):
    """Tasks: `mine=true` for the caller's to-do list, or by instance and status."""
    return queries.list_tasks(session, user, **args)


@blp.route("/tasks/<key(36):task_id>")
@blp.response(200, TaskDetailSchema)
@errors(blp, {404: "No such task, or its instance is outside the caller's scope (the same answer)"})
@authenticated
def get(task_id, session, user):
    """A task with its form schema and the instance it belongs to."""
    task = queries.get_task(session, user, task_id)
    instance = session.get(Instance, task.instance_id)
    model = deployments.model_for(session, instance.version_id)
    view = {name: getattr(task, name) for name in TaskSchema().fields}
    needs_code = "approve" in task.actions and approval_need(instance) is not None
    return {**view, "form": model.form(task.form_key), "instance": instance_detail(session, instance, user),
            "requires_second_factor": needs_code}


@blp.route("/tasks/<key(36):task_id>/complete", methods=["POST"])
@blp.arguments(CompleteTaskSchema)
@blp.response(200, CompletedSchema)
@errors(blp, {403: "The caller is not an approver of the task, or a second factor is needed and missing or wrong",
              404: "No such task",
              409: "The task is done, delegated, not the caller's turn yet, or the instance has ended",
              429: "Too many wrong second-factor codes (`too_many_second_factor_attempts`)"})
@takes_otp
@records_failures
@command(CompletedSchema)
def complete(body, task_id, session, user, actor):
    """Approve, reject or submit a task with a comment and the form's fields. Approving a large payment, or
    changing a field marked `x-second-factor`, needs the caller's code in `X-Finflow-OTP`."""
    task, instance = tasks.complete_task(session, actor, task_id, body["action"], body["comment"],
                                         body["form_data"], otp=otp_header())
    return {"task": task, "instance": instance_detail(session, instance, user)}


@blp.route("/tasks/<key(36):task_id>/transfer", methods=["POST"])
@blp.arguments(TransferSchema)
@blp.response(200, TaskSchema)
@errors(blp, {403: "The caller is not an approver of the task", 404: "No such task",
              409: "The task is done, delegated, not the caller's turn yet, or the instance has ended"})
@command(TaskSchema)
def transfer(body, task_id, session, user, actor):
    """转办: hand the task to another active user, who then decides in your place."""
    return tasks.transfer_task(session, actor, task_id, body["to"], body["reason"])


@blp.route("/tasks/<key(36):task_id>/delegate", methods=["POST"])
@blp.arguments(TransferSchema)
@blp.response(200, TaskSchema)
@errors(blp, {403: "The caller is not an approver of the task", 404: "No such task",
              409: "The task is done, delegated, not the caller's turn yet, or the instance has ended"})
@command(TaskSchema)
def delegate(body, task_id, session, user, actor):
    """委派: ask another user for an opinion; the task returns to you to decide afterwards."""
    return tasks.delegate_task(session, actor, task_id, body["to"], body["reason"])


@blp.route("/tasks/<key(36):task_id>/add-signers", methods=["POST"])
@blp.arguments(AddSignersSchema)
@blp.response(200, TaskSchema)
@errors(blp, {403: "The caller is not an approver of the task", 404: "No such task",
              409: "The task is done, delegated, not the caller's turn yet, or the instance has ended"})
@command(TaskSchema)
def add_signers(body, task_id, session, user, actor):
    """加签: add approvers before you (they approve first) or after you (they approve after you)."""
    return tasks.add_signers(session, actor, task_id, body["users"], body["position"], body["reason"])


@blp.route("/tasks/<key(36):task_id>/return", methods=["POST"])
@blp.arguments(ReturnSchema)
@blp.response(200, InstanceDetailSchema)
@errors(blp, {403: "The caller is not an approver of the task", 404: "No such task",
              409: "The task is done, delegated, not the caller's turn yet, or the instance has ended"})
@command(InstanceDetailSchema)
def return_(body, task_id, session, user, actor):
    """退回: send the instance back to a node it passed, or to the applicant; later approvals are redone."""
    return instance_detail(session, tasks.return_task(session, actor, task_id, body["to"], body["reason"]), user)
