from __future__ import annotations

import adapters
from api.context import authenticated, command, note_instance_access
from api.openapi import errors
from api.parsing import Blueprint
from api.schemas import (
    CcResultSchema,
    CcSchema,
    HistoryEventSchema,
    HistorySchema,
    InstanceDetailSchema,
    InstancePageSchema,
    InstanceSchema,
    InstanceSearchArgsSchema,
    ReasonSchema,
    StartInstanceSchema,
    UrgedSchema,
    UrgeSchema,
)
from engine.services import disclosure, instances, queries
from engine.services.disclosure import Disclosure

blp = Blueprint("instances", __name__, description="Start, search, withdraw and cancel process instances")


def instance_summary(session, instance, viewer, disclosed: Disclosure | None = None) -> dict:
    """An instance as InstanceSchema shows it to `viewer`: a sensitive amount left out and named."""
    disclosed = disclosed or disclosure.for_viewer(session, viewer, instance)
    view = {name: getattr(instance, name) for name in InstanceSchema().fields if name != "masked_fields"}
    if disclosed.hides_amount:
        view["amount"] = None
    return {**view, "masked_fields": sorted(disclosed.hidden)}


def instance_detail(session, instance, viewer) -> dict:
    """The instance with its open tasks, for InstanceDetailSchema, as `viewer` may see it."""
    disclosed = disclosure.for_viewer(session, viewer, instance)
    return {**instance_summary(session, instance, viewer, disclosed), "data": disclosed.data(instance.data),
            "current_tasks": queries.current_tasks(session, instance.id),
            "integrations": adapters.integrations(session, instance.id)}


@blp.route("/instances", methods=["POST"])
@blp.arguments(StartInstanceSchema)
@blp.response(201, InstanceDetailSchema)
@errors(blp, {404: "No such process", 422: "The start form's data is invalid; details.fields names each field"})
@command(InstanceDetailSchema, status=201)
def start(body, session, user, actor):
    """Start an instance of the latest version of a process with the applicant's form data."""
    instance = instances.start_instance(session, actor, body["process_key"], body["data"],
                                        body.get("business_key"))
    return instance_detail(session, instance, user)


@blp.route("/instances")
@blp.arguments(InstanceSearchArgsSchema, location="query")
@blp.response(200, InstancePageSchema)
@authenticated
def search(args, session, user):
    """Search instances by process, status, business key, starter and start date, paginated."""
    page = queries.search_instances(session, user, **args)
    disclosed: dict[tuple[int, bool], Disclosure] = {}  # for_viewer depends on these only: once per page, not per row
    summaries = []
    for instance in page.items:
        key = (instance.version_id, instance.starter_id == user.id)
        if key not in disclosed:
            disclosed[key] = disclosure.for_viewer(session, user, instance)
        summaries.append(instance_summary(session, instance, user, disclosed[key]))
    page.items = summaries
    return page


@blp.route("/instances/<key(36):instance_id>")
@blp.response(200, InstanceDetailSchema)
@errors(blp, {404: "No such instance, or outside the caller's scope (the same answer)"})
@authenticated
def get(instance_id, session, user):
    """Status, data and current tasks of an instance."""
    detail = instance_detail(session, queries.get_instance(session, user, instance_id), user)
    note_instance_access(user, instance_id, "api.detail")
    return detail


@blp.route("/instances/<key(36):instance_id>/withdraw", methods=["POST"])
@blp.arguments(ReasonSchema)
@blp.response(200, InstanceDetailSchema)
@errors(blp, {403: "The caller is not the applicant", 404: "No such instance",
              409: "Already approved by someone, or the instance has ended"})
@command(InstanceDetailSchema)
def withdraw(body, instance_id, session, user, actor):
    """The applicant withdraws a running instance (撤回); its open tasks are cancelled."""
    return instance_detail(session, instances.withdraw_instance(session, actor, instance_id, body["reason"]), user)


@blp.route("/instances/<key(36):instance_id>/cancel", methods=["POST"])
@blp.arguments(ReasonSchema)
@blp.response(200, InstanceDetailSchema)
@errors(blp, {403: "The caller is not an administrator", 404: "No such instance", 409: "The instance has ended"})
@command(InstanceDetailSchema)
def cancel(body, instance_id, session, user, actor):
    """An administrator cancels (作废) a running or failed instance."""
    return instance_detail(session, instances.cancel_instance(session, actor, instance_id, body["reason"]), user)


@blp.route("/instances/<key(36):instance_id>/history")
@blp.response(200, HistorySchema)
@errors(blp, {404: "No such instance, or outside the caller's scope (the same answer)"})
@authenticated
def history(instance_id, session, user):
    """The instance's append-only history, in order."""
    instance = queries.get_instance(session, user, instance_id)
    disclosed = disclosure.for_viewer(session, user, instance)
    events = [{name: getattr(event, name) for name in HistoryEventSchema().fields} | {
        "payload": disclosed.data(event.payload)} for event in queries.history(session, user, instance_id)]
    note_instance_access(user, instance_id, "api.history")
    return {"instance_id": instance_id, "events": events}


@blp.route("/instances/<key(36):instance_id>/urge", methods=["POST"])
@blp.arguments(UrgeSchema)
@blp.response(200, UrgedSchema)
@errors(blp, {403: "The caller is not the applicant", 404: "No such instance", 409: "The instance has ended",
              429: "Urged within the last hour; Retry-After says when again"})
@command(UrgedSchema)
def urge(body, instance_id, session, user, actor):
    """催办: the applicant nudges the current approvers (once an hour per task, else 429)."""
    return {"urged": instances.urge_instance(session, actor, instance_id, body["message"])}


@blp.route("/instances/<key(36):instance_id>/cc", methods=["POST"])
@blp.arguments(CcSchema)
@blp.response(200, CcResultSchema)
@errors(blp, {403: "The caller is neither the applicant nor a current approver", 404: "No such instance",
              422: "A user does not exist or is inactive"})
@command(CcResultSchema)
def cc(body, instance_id, session, user, actor):
    """抄送: let more people read the instance (applicant or current approvers)."""
    return {"added": instances.copy_instance(session, actor, instance_id, body["users"], body["note"])}
