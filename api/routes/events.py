"""Event subscriptions: engine events as CloudEvents to webhooks and RabbitMQ exchanges (admins only).

Create, list, read, pause, resume, delete; a subscription's deliveries with their last error, and
retry of dead ones. Creation validates the body and connects to the destination before anything is
written (422 naming the field), and returns the webhook signing secret once.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from adapters.events import catalog, envelope, subscriptions
from adapters.events.models import KINDS
from adapters.events.urls import mask
from api.context import authenticated, caller, command, honours_idempotency_key
from api.openapi import errors
from api.parsing import Blueprint
from api.routes.admin import require_admin
from api.schemas import PageArgsSchema, PageMetaSchema, StrictSchema
from engine.db import transaction

WHAT = "管理事件订阅"
blp = Blueprint("events", __name__, description="Events out: CloudEvents to webhooks and RabbitMQ (admins only)")
SUBSCRIPTION = "<key(36):subscription_id>"
NOT_ADMIN = {403: "The caller is not an administrator"}
NO_SUBSCRIPTION = {**NOT_ADMIN, 404: "No such subscription"}


class SubscriptionCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(1, 100))
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    url = fields.String(required=True, validate=validate.Length(1, 2000),
                        metadata={"description": "http(s)://… for a webhook; amqp(s)://user:password@host/vhost"})
    exchange = fields.String(allow_none=True, metadata={"description": "rabbitmq: durable topic exchange"})
    process_keys = fields.List(fields.String(), load_default=list,
                               metadata={"description": "deployed process keys; [] = every process"})
    event_types = fields.List(fields.String(), required=True, validate=validate.Length(min=1),
                              metadata={"description": "patterns such as task.*, instance.completed or *"})


class DeliveryCountsSchema(Schema):
    pending = fields.Integer()
    failing = fields.Integer(metadata={"description": "pending after a failed attempt"})
    done = fields.Integer()
    dead = fields.Integer()
    dropped = fields.Integer()


class SubscriptionSchema(Schema):
    id = fields.String()
    name = fields.String()
    kind = fields.String()
    url = fields.Function(lambda s: mask(s.url), metadata={"description": "password hidden"})
    exchange = fields.String(allow_none=True)
    process_keys = fields.List(fields.String())
    event_types = fields.List(fields.String())
    status = fields.String(metadata={"description": "active | paused | deleted"})
    created_by = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    deliveries = fields.Nested(DeliveryCountsSchema, dump_default=None)


class SubscriptionCreatedSchema(SubscriptionSchema):
    secret = fields.String(allow_none=True, metadata={"description": "webhook HMAC key; shown this once"})


class SubscriptionListSchema(Schema):
    items = fields.List(fields.Nested(SubscriptionSchema))


class DeliveryArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(subscriptions.DELIVERY_FILTERS))


class DeliverySchema(Schema):
    id = fields.Integer()
    event_id = fields.Function(lambda r: envelope.event_id(r.instance_id, r.event_seq),
                               metadata={"description": "the CloudEvent id"})
    event_type = fields.Function(lambda r: catalog.cloud_type(r.event_type))
    instance_id = fields.String()
    instance_seq = fields.Integer(attribute="event_seq")
    stream_seq = fields.Integer(allow_none=True)
    status = fields.String(metadata={"description": "pending | done | dead | dropped"})
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime()
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    done_at = fields.DateTime(allow_none=True)


class DeliveryPageSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))
    meta = fields.Nested(PageMetaSchema)


class RetriedSchema(Schema):
    retried = fields.List(fields.Integer())


def _with_counts(session, subscription):
    subscription.deliveries = subscriptions.counts(session, [subscription.id])[subscription.id]
    return subscription


@blp.route("/event-subscriptions", methods=["POST"])
@blp.arguments(SubscriptionCreateSchema)
@blp.response(201, SubscriptionCreatedSchema)
@errors(blp, {**NOT_ADMIN, 422: "A field is invalid or the destination unreachable"})
@honours_idempotency_key  # in _create
def create_subscription(body):
    """Create a subscription; the destination must accept a connection now. The webhook secret (for
    X-Finflow-Signature) is in this response only."""
    with transaction(readonly=True) as session:  # checked and probed before any write transaction
        require_admin(caller(session), WHAT)
        spec = subscriptions.check(session, body)
    return _create(spec)


@command(SubscriptionCreatedSchema, 201)
def _create(spec, session, user, actor):
    require_admin(user, WHAT)
    subscription, _secret = subscriptions.create(session, spec, user.id)  # the schema shows it, this once
    return _with_counts(session, subscription)


@blp.route("/event-subscriptions")
@blp.response(200, SubscriptionListSchema)
@errors(blp, NOT_ADMIN)
@authenticated
def list_subscriptions(session, user):
    """Subscriptions that are not deleted, oldest first, with their delivery counts."""
    require_admin(user, WHAT)
    items = subscriptions.list_all(session)
    counts = subscriptions.counts(session, [s.id for s in items])
    for item in items:
        item.deliveries = counts[item.id]
    return {"items": items}


@blp.route(f"/event-subscriptions/{SUBSCRIPTION}")
@blp.response(200, SubscriptionSchema)
@errors(blp, NO_SUBSCRIPTION)
@authenticated
def get_subscription(subscription_id, session, user):
    require_admin(user, WHAT)
    return _with_counts(session, subscriptions.get(session, subscription_id))


@blp.route(f"/event-subscriptions/{SUBSCRIPTION}/pause", methods=["POST"])
@blp.response(200, SubscriptionSchema)
@errors(blp, {**NO_SUBSCRIPTION, 409: "Already paused"})
@command(SubscriptionSchema)
def pause_subscription(subscription_id, session, user, actor):
    """Stop sending; events are still kept for the subscription and go out in order on resume."""
    require_admin(user, WHAT)
    return _with_counts(session, subscriptions.pause(session, subscription_id))


@blp.route(f"/event-subscriptions/{SUBSCRIPTION}/resume", methods=["POST"])
@blp.response(200, SubscriptionSchema)
@errors(blp, {**NO_SUBSCRIPTION, 409: "Already active"})
@command(SubscriptionSchema)
def resume_subscription(subscription_id, session, user, actor):
    """Send again, starting with the events kept during the pause."""
    require_admin(user, WHAT)
    return _with_counts(session, subscriptions.resume(session, subscription_id))


@blp.route(f"/event-subscriptions/{SUBSCRIPTION}", methods=["DELETE"])
@blp.response(200, SubscriptionSchema)
@errors(blp, NO_SUBSCRIPTION)
@command(SubscriptionSchema)
def delete_subscription(subscription_id, session, user, actor):
    """Stop for good; undelivered events are dropped, delivery records stay readable by id."""
    require_admin(user, WHAT)
    return _with_counts(session, subscriptions.delete(session, subscription_id))


@blp.route(f"/event-subscriptions/{SUBSCRIPTION}/deliveries")
@blp.arguments(DeliveryArgsSchema, location="query")
@blp.response(200, DeliveryPageSchema)
@errors(blp, NO_SUBSCRIPTION)
@authenticated
def list_deliveries(args, subscription_id, session, user):
    """The subscription's deliveries newest first; `status=failing` for those retrying, `dead` for
    those given up (with the reason)."""
    require_admin(user, WHAT)
    rows, total = subscriptions.deliveries(session, subscription_id, args.get("status"), args["page"],
                                           args["per_page"])
    return {"items": rows, "meta": {"total": total, "page": args["page"], "per_page": args["per_page"]}}


@blp.route(f"/event-subscriptions/{SUBSCRIPTION}/deliveries/<rowid:delivery_id>/retry", methods=["POST"])
@blp.response(200, DeliverySchema)
@errors(blp, {**NOT_ADMIN, 404: "No such subscription, or the delivery is not one of its",
              409: "The delivery is not dead"})
@command(DeliverySchema)
def retry_delivery(subscription_id, delivery_id, session, user, actor):
    """Send a dead delivery again, with a fresh set of attempts."""
    require_admin(user, WHAT)
    return subscriptions.retry(session, subscription_id, delivery_id)


@blp.route(f"/event-subscriptions/{SUBSCRIPTION}/deliveries/retry-dead", methods=["POST"])
@blp.response(200, RetriedSchema)
@errors(blp, NO_SUBSCRIPTION)
@command(RetriedSchema)
def retry_dead_deliveries(subscription_id, session, user, actor):
    """Send every dead delivery of the subscription again."""
    require_admin(user, WHAT)
    return {"retried": subscriptions.retry_dead(session, subscription_id)}
