"""The OA twin of an instance (request id, node, sync state, the calls made on it, the decisions taken in OA)
and the OA adapter's metrics, so an integrator sees why OA and finflow differ."""

from __future__ import annotations

from marshmallow import Schema, fields

from adapters.oa import reconcile, sync
from api.context import authenticated
from api.openapi import errors
from api.parsing import Blueprint
from api.routes.admin import require_admin
from api.schemas import OATwinSchema
from engine.services import queries

blp = Blueprint("oa", __name__, description="The OA twin of each instance and the OA adapter's metrics")


class OASubmissionSchema(Schema):
    id = fields.Integer()
    kind = fields.String(metadata={"description": "create | submit | reject | withdraw | force_over"})
    task_id = fields.String(allow_none=True)
    oa_node = fields.String(allow_none=True)
    oa_user = fields.String()
    to_node = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "sending | sent | failed"})
    echoed = fields.Boolean()
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)


class OADecisionSchema(Schema):
    id = fields.Integer()
    source = fields.String(metadata={"description": "callback | poll | reconcile"})
    oa_node = fields.String()
    oa_user = fields.String()
    action = fields.String()
    remark = fields.String(allow_none=True)
    task_id = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "received | applied | ignored | refused | conflict | failed"})
    result = fields.String(allow_none=True)
    received_at = fields.DateTime()


class OAInstanceSchema(Schema):
    twin = fields.Nested(OATwinSchema, allow_none=True)
    submissions = fields.List(fields.Nested(OASubmissionSchema))
    decisions = fields.List(fields.Nested(OADecisionSchema))


class OAMetricsSchema(Schema):
    twins = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "by sync state"})
    decisions = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "by outcome"})
    last_reconcile = fields.Dict(allow_none=True)


@blp.route("/instances/<key(36):instance_id>/oa")
@blp.response(200, OAInstanceSchema)
@errors(blp, {404: "No such instance, or outside the caller's scope (the same answer)"})
@authenticated
def instance_oa(instance_id, session, user):
    """The instance's OA twin, every call finflow made on it and every decision OA sent, oldest first."""
    queries.get_instance(session, user, instance_id)
    return sync.history_of(session, instance_id)


@blp.route("/admin/oa/metrics")
@blp.response(200, OAMetricsSchema)
@errors(blp, {403: "The caller is not an administrator"})
@authenticated
def oa_metrics(session, user):
    """Twins by sync state, OA decisions by outcome and the last reconciliation's counts (administrators)."""
    require_admin(user, "查看 OA 同步统计")
    return reconcile.metrics(session)
