"""Where an engine event goes, and how a batch of it is sent.

`targets` runs in the command's transaction: the subscriptions (active or paused: a paused one keeps
its events for later) whose process keys and type patterns match. `connect` runs in the outbox's claim
transaction: it builds the CloudEvents and returns the sender the outbox calls with no transaction open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cloudevents.core.v1.event import CloudEvent
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.events import catalog, envelope
from adapters.events.models import EventSubscription
from adapters.events.rabbitmq import RabbitMQPublisher
from adapters.events.webhook import WebhookPublisher
from engine import clock
from engine.outbox.delivery import Message
from engine.outbox.stream import Hold, PermanentFailure, Send

PAUSE_RECHECK = timedelta(hours=1)  # a paused target's rows are looked at again (resume wakes them at once)
_CACHE = "events.subscriptions"  # session.info key: the subscriptions, read once per transaction


@dataclass(frozen=True)
class _Filter:
    id: str
    process_keys: frozenset[str]
    event_types: tuple[str, ...]


def targets(session: Session, process_key: str, event_type: str) -> list[str]:
    filters: list[_Filter] | None = session.info.get(_CACHE)
    if filters is None:
        filters = session.info[_CACHE] = [
            _Filter(s.id, frozenset(s.process_keys or ()), tuple(s.event_types))
            for s in session.scalars(select(EventSubscription).where(
                EventSubscription.status.in_(("active", "paused"))).order_by(EventSubscription.created_at))]
    return [f.id for f in filters if (not f.process_keys or process_key in f.process_keys)
            and catalog.matches(f.event_types, event_type)]


def routing_key(message: Message) -> str:
    return f"{message.instance.get('process_key')}.{message.event_type}"


def publisher_for(subscription: EventSubscription):
    """The publisher of a subscription's kind. A Kafka publisher would be a third class with the same
    `publish(event, routing_key)` method (see the README)."""
    if subscription.kind == "webhook":
        return WebhookPublisher(subscription.url, subscription.sealed_secret or "")
    return RabbitMQPublisher(subscription.url, subscription.exchange or "")


def connect(session: Session, target: str, messages: list[Message]) -> Send | Hold:
    subscription = session.get(EventSubscription, target)
    if subscription is None or subscription.status == "deleted":
        return _refuse(f"event subscription {target} was deleted")
    if subscription.status == "paused":
        return Hold("paused", clock.now() + PAUSE_RECHECK)
    publisher = publisher_for(subscription)
    built: dict[int, CloudEvent] = {m.id: envelope.build(session, m) for m in messages}

    def send(message: Message) -> None:
        publisher.publish(built[message.id], routing_key(message))

    return send


def _refuse(reason: str) -> Send:
    def send(message: Message) -> None:
        raise PermanentFailure(reason)

    return send
