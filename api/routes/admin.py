"""Administration of the outbox: list side effects by status, read one with its last error, retry a dead one.

Administrators only (role admin); everyone else gets 403, before any lookup.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.context import authenticated, command
from api.openapi import errors
from api.parsing import Blueprint
from api.schemas import PageArgsSchema, PageMetaSchema
from engine.errors import Forbidden
from engine.models import User
from engine.outbox import admin
from engine.outbox.models import STATUSES
from engine.services import access

blp = Blueprint("admin", __name__, description="Administration: the outbox of side effects (admins only)")



class OutboxListArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(STATUSES))


class OutboxSchema(Schema):
    id = fields.Integer()
    subscription = fields.String(metadata={"description": "the handler, e.g. inbox.notify"})
    target = fields.String(metadata={"description": "the destination (event subscription id), or empty"})
    stream_seq = fields.Integer(allow_none=True, metadata={"description": "order among the target's events "
                                                                          "of the instance (external only)"})
    queue = fields.String()
    instance_id = fields.String()
    event_seq = fields.Integer()
    event_type = fields.String()
    payload = fields.Dict(metadata={"description": "{event: the history row, instance: summary}"})
    status = fields.String(metadata={"description": "pending | done | dead | dropped"})
    attempts = fields.Integer(metadata={"description": "handler runs that finished, failed or not"})
    next_attempt_at = fields.DateTime()
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    dispatched_at = fields.DateTime(allow_none=True)
    done_at = fields.DateTime(allow_none=True)


class OutboxPageSchema(Schema):
    items = fields.List(fields.Nested(OutboxSchema))
    meta = fields.Nested(PageMetaSchema)


def require_admin(user: User, what: str = "查看和重试出站消息") -> None:
    if not access.may(user, "administer"):
        raise Forbidden(f"仅管理员可以{what}")


@blp.route("/outbox")
@blp.arguments(OutboxListArgsSchema, location="query")
@blp.response(200, OutboxPageSchema)
@errors(blp, {403: "The caller is not an administrator"})
@authenticated
def list_outbox(args, session, user):
    """Outbox rows newest first, optionally by status (`dead` = gave up, with the last error)."""
    require_admin(user)
    rows, total = admin.list_rows(session, args.get("status"), args["page"], args["per_page"])
    return {"items": rows, "meta": {"total": total, "page": args["page"], "per_page": args["per_page"]}}


@blp.route("/outbox/<rowid:outbox_id>")
@blp.response(200, OutboxSchema)
@errors(blp, {403: "The caller is not an administrator", 404: "No such outbox row"})
@authenticated
def get_outbox(outbox_id, session, user):
    """One outbox row with its payload and last error."""
    require_admin(user)
    return admin.get_row(session, outbox_id)


@blp.route("/outbox/<rowid:outbox_id>/retry", methods=["POST"])
@blp.response(200, OutboxSchema)
@errors(blp, {403: "The caller is not an administrator", 404: "No such outbox row", 409: "The row is not dead"})
@command(OutboxSchema)
def retry_outbox(outbox_id, session, user, actor):
    """Send a dead row again, with a fresh set of attempts; it is queued when this call commits."""
    require_admin(user)
    return admin.retry(session, outbox_id)
