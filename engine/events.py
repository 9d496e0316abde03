"""The one event interface out of the engine.

Every history event the engine records (task.created, task.completed, instance.completed, ...) is also
offered to the subscriptions registered here. A subscription names a handler and the rq queue it runs on;
for each matching event an outbox row is written in the same transaction as the state change, and the
outbox delivers it later, at least once (see engine/outbox). The engine imports no channel: adapters
call `subscribe` when they are loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

QUEUES = ("channels", "timers", "sync")


@dataclass(frozen=True)
class Subscription:
    name: str  # stable handler id stored on outbox rows, e.g. "inbox.notify"
    event_types: frozenset[str]
    queue: str
    handler: Callable[..., Any]  # handler(session, message) -> None; must be idempotent per message id


_SUBSCRIPTIONS: dict[str, Subscription] = {}


def subscribe(name: str, event_types: set[str] | frozenset[str], queue: str,
              handler: Callable[..., Any]) -> Subscription:
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; use one of {QUEUES}")
    subscription = Subscription(name, frozenset(event_types), queue, handler)
    _SUBSCRIPTIONS[name] = subscription
    return subscription


def unsubscribe(name: str) -> None:
    _SUBSCRIPTIONS.pop(name, None)


def subscription(name: str) -> Subscription | None:
    return _SUBSCRIPTIONS.get(name)


def subscriptions_for(event_type: str) -> list[Subscription]:
    return [s for s in _SUBSCRIPTIONS.values() if event_type in s.event_types]
