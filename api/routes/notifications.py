"""站内通知: the caller's own notifications, and marking one read."""

from __future__ import annotations

from marshmallow import Schema, fields

from adapters.inbox import queries
from api.context import authenticated, command
from api.openapi import errors
from api.parsing import Blueprint
from api.schemas import PageArgsSchema, PageMetaSchema

blp = Blueprint("notifications", __name__, description="The caller's in-app notifications")


class NotificationListArgsSchema(PageArgsSchema):
    unread = fields.Boolean(load_default=False, metadata={"description": "only notifications not read yet"})


class NotificationSchema(Schema):
    id = fields.Integer()
    kind = fields.String(metadata={"description": "the event it tells about, e.g. task.assigned"})
    title = fields.String()
    body = fields.String()
    instance_id = fields.String(allow_none=True)
    task_id = fields.String(allow_none=True)
    created_at = fields.DateTime()
    read_at = fields.DateTime(allow_none=True)


class NotificationPageMetaSchema(PageMetaSchema):
    unread = fields.Integer(metadata={"description": "how many of the caller's notifications are unread"})


class NotificationPageSchema(Schema):
    items = fields.List(fields.Nested(NotificationSchema))
    meta = fields.Nested(NotificationPageMetaSchema)


@blp.route("/notifications")
@blp.arguments(NotificationListArgsSchema, location="query")
@blp.response(200, NotificationPageSchema)
@authenticated
def list_notifications(args, session, user):
    """The caller's notifications, newest first; `unread=true` for the unread ones only."""
    items, total, unread = queries.list_for(session, user.id, unread=args["unread"], page=args["page"],
                                            per_page=args["per_page"])
    return {"items": items, "meta": {"total": total, "page": args["page"], "per_page": args["per_page"],
                                     "unread": unread}}


@blp.route("/notifications/<rowid:notification_id>/read", methods=["POST"])
@blp.response(200, NotificationSchema)
@errors(blp, {404: "No such notification of the caller's"})
@command(NotificationSchema)
def mark_read(notification_id, session, user, actor):
    """Mark one of the caller's notifications read (again is fine: the first read time stays)."""
    return queries.mark_read(session, user.id, notification_id)
