"""Events out: every engine event as a CloudEvent to the company's webhooks and RabbitMQ exchanges.

Subscriptions live in the database (managed through /api/v1/event-subscriptions and `finflow events`).
One engine subscription fans each event out to the matching ones, an outbox row per destination, on the
`events` queue; the outbox delivers each destination's events of an instance in order, at least once,
with no transaction open while sending (engine/outbox/stream.py).
"""

from __future__ import annotations

from engine import events

SUBSCRIPTION = "events.publish"


def load() -> None:
    from adapters.events.routing import connect, targets

    events.subscribe(SUBSCRIPTION, {events.ALL}, "events", connect, targets=targets, external=True)
