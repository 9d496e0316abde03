"""WeCom deliveries: which cards and messages reached whom, so an integrator can see why someone got no card."""

from __future__ import annotations

from marshmallow import Schema, fields

from adapters.wecom import deliveries
from api.context import authenticated
from api.openapi import errors
from api.parsing import Blueprint
from api.routes.admin import require_admin
from engine.services import queries

blp = Blueprint("deliveries", __name__, description="WeCom cards and messages per task and instance")


class WeComDeliverySchema(Schema):
    kind = fields.String(metadata={"description": "card, text, markdown or textcard"})
    id = fields.Integer()
    task_id = fields.String(allow_none=True)
    user_id = fields.String()
    status = fields.String(metadata={"description": "pending | sent | failed | updated | update_failed"})
    result = fields.String(allow_none=True, metadata={"description": "what the card shows once decided"})
    title = fields.String(allow_none=True)
    msgid = fields.String(allow_none=True)
    errcode = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class WeComDeliveryListSchema(Schema):
    items = fields.List(fields.Nested(WeComDeliverySchema))


class WeComCountSchema(Schema):
    status = fields.String()
    errcode = fields.Integer(allow_none=True)
    count = fields.Integer()


class WeComStatsSchema(Schema):
    cards = fields.List(fields.Nested(WeComCountSchema))
    messages = fields.List(fields.Nested(WeComCountSchema))


@blp.route("/tasks/<key(36):task_id>/deliveries")
@blp.response(200, WeComDeliveryListSchema)
@errors(blp, {404: "No such task, or its instance is outside the caller's scope (the same answer)"})
@authenticated
def task_deliveries(task_id, session, user):
    """The WeCom cards and messages of a task, with their state and, when they failed, WeCom's errcode."""
    queries.get_task(session, user, task_id)
    return {"items": deliveries.deliveries(session, task_id=task_id)}


@blp.route("/instances/<key(36):instance_id>/deliveries")
@blp.response(200, WeComDeliveryListSchema)
@errors(blp, {404: "No such instance, or outside the caller's scope (the same answer)"})
@authenticated
def instance_deliveries(instance_id, session, user):
    """The WeCom cards and messages of every task of an instance, and its plain messages."""
    queries.get_instance(session, user, instance_id)
    return {"items": deliveries.deliveries(session, instance_id=instance_id)}


@blp.route("/admin/wecom/stats")
@blp.response(200, WeComStatsSchema)
@errors(blp, {403: "The caller is not an administrator"})
@authenticated
def wecom_stats(session, user):
    """Cards and messages by status and errcode (administrators)."""
    require_admin(user, "查看企业微信送达统计")
    return deliveries.stats(session)
