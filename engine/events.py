"""The one event interface out of the engine.

Every history event the engine records (task.created, task.completed, instance.completed, ...) is also
offered to the subscriptions registered here. A subscription names a handler and the rq queue it runs on;
for each matching event an outbox row is written in the same transaction as the state change, and the
outbox delivers it later, at least once (see engine/outbox). The engine imports no channel: adapters
call `subscribe` when they are loaded.

Two kinds of subscription:
* in-database (default): `handler(session, message)` runs inside the delivery transaction, so whatever it
  writes happens exactly once (in-app notifications).
* external: the side effect leaves the process (HTTP, a message broker). The handler is then a `connect`
  function, `handler(session, target, messages) -> send | Hold`, called in a short transaction to
  prepare a batch; `send(message)` runs with no transaction open, so a slow receiver never holds a lock
  an approval needs. External rows of one instance are delivered in sequence order (engine/outbox/stream).

`on_dead`, when given, is called as `on_dead(session, message, error)` in the transaction that marks one of
the subscription's rows dead, so a channel can record what it could not do (an integration incident on the
instance) exactly when delivery is given up.

`targets`, when given, fans one event out to several destinations of the same subscription (one outbox
row each), e.g. the webhooks and exchanges configured in the database: `targets(session, process_key,
event_type) -> list[str]`, called in the command's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

QUEUES = ("channels", "timers", "sync", "events")
ALL = "*"  # an event_types entry that matches every event type


@dataclass(frozen=True)
class Subscription:
    name: str  # stable handler id stored on outbox rows, e.g. "inbox.notify"
    event_types: frozenset[str]
    queue: str
    handler: Callable[..., Any]  # handler(session, message) -> None; must be idempotent per message id
    targets: Callable[..., list[str]] | None = None  # targets(session, process_key, event_type) -> ids
    external: bool = False  # handler is connect(session, target, messages) -> send | Hold (see above)
    on_dead: Callable[..., Any] | None = None  # on_dead(session, message, error) when a row is given up

    def matches(self, event_type: str) -> bool:
        return ALL in self.event_types or event_type in self.event_types


_SUBSCRIPTIONS: dict[str, Subscription] = {}
_PERIODIC: dict[str, Callable[[str | None], object]] = {}


def subscribe(name: str, event_types: set[str] | frozenset[str], queue: str, handler: Callable[..., Any], *,
              targets: Callable[..., list[str]] | None = None, external: bool = False,
              on_dead: Callable[..., Any] | None = None) -> Subscription:
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; use one of {QUEUES}")
    subscription = Subscription(name, frozenset(event_types), queue, handler, targets, external, on_dead)
    _SUBSCRIPTIONS[name] = subscription
    return subscription


def unsubscribe(name: str) -> None:
    _SUBSCRIPTIONS.pop(name, None)


def subscription(name: str) -> Subscription | None:
    return _SUBSCRIPTIONS.get(name)


def subscriptions_for(event_type: str) -> list[Subscription]:
    return [s for s in _SUBSCRIPTIONS.values() if s.matches(event_type)]


def every_sweep(name: str, work: Callable[[str | None], object]) -> None:
    """Run `work(database_url)` on every sweep interval, beside the outbox sweep and due timers: in every
    worker and in an embedded API process (e.g. an adapter re-queueing callbacks whose job was lost, or a
    nightly sync that checks whether it is due). It must be cheap when there is nothing to do and safe
    when several workers run it at once. Registered again under the same name, it is replaced."""
    _PERIODIC[name] = work


def periodic_work() -> list[Callable[[str | None], object]]:
    return list(_PERIODIC.values())
