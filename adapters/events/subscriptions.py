"""Managing event subscriptions: create (validated and probed), list, pause, resume, delete, and the
deliveries of one (its outbox rows) with retry. Used by the API and by `finflow events`; callers check
who may do it (administrators).

Creation is in two steps so nothing is half-created and no transaction waits on the network: `check`
validates the body and connects to the destination (422 naming the field otherwise), then `create`
writes the row. The webhook secret is returned by `create` only: it is never shown again, and the row
holds it sealed (engine.crypto).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from adapters.events import SUBSCRIPTION, catalog, rabbitmq, webhook
from adapters.events.models import KINDS, SECRET_PURPOSE, EventSubscription
from engine import clock, crypto
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import ProcessDefinition
from engine.outbox import admin as outbox_admin
from engine.outbox.dispatch import dispatch_after_commit
from engine.outbox.models import OutboxMessage

DELIVERY_FILTERS = ("pending", "failing", "done", "dead", "dropped")  # failing: pending after a failure


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str
    url: str
    exchange: str | None
    process_keys: list[str]
    event_types: list[str]


def check(session: Session, body: dict[str, Any]) -> Spec:
    """Validate a creation body and probe its destination; 422 naming the first bad field."""
    kind = body.get("kind")
    if kind not in KINDS:
        raise _invalid("kind", f"must be one of {', '.join(KINDS)}")
    name = str(body.get("name") or "").strip()
    if not 0 < len(name) <= 100:
        raise _invalid("name", "must be 1 to 100 characters")
    url = str(body.get("url") or "").strip()
    exchange = body.get("exchange")
    if kind == "webhook" and exchange:
        raise _invalid("exchange", "applies to rabbitmq subscriptions only")
    spec = Spec(name, kind, url, exchange, _process_keys(session, body.get("process_keys") or []),
                catalog.normalize_patterns(body.get("event_types")))
    if kind == "webhook":
        webhook.check_url(url)
    else:
        rabbitmq.check(url, exchange)
    return spec


def create(session: Session, spec: Spec, created_by: str | None) -> tuple[EventSubscription, str | None]:
    """Write a checked subscription; returns it with the webhook secret (None for RabbitMQ)."""
    now = clock.now()
    secret = secrets.token_urlsafe(32) if spec.kind == "webhook" else None
    sealed = crypto.seal(secret, SECRET_PURPOSE) if secret is not None else None  # only sealed in the row
    subscription = EventSubscription(id=str(uuid4()), name=spec.name, kind=spec.kind, url=spec.url,
                                     exchange=spec.exchange, sealed_secret=sealed, process_keys=spec.process_keys,
                                     event_types=spec.event_types, status="active", created_by=created_by,
                                     created_at=now, updated_at=now, version=1)
    session.add(subscription)
    session.flush()
    return subscription, secret


def list_all(session: Session, include_deleted: bool = False) -> list[EventSubscription]:
    stmt = select(EventSubscription).order_by(EventSubscription.created_at)
    if not include_deleted:
        stmt = stmt.where(EventSubscription.status != "deleted")
    return list(session.scalars(stmt))


def get(session: Session, subscription_id: str, *, lock: bool = False,
        include_deleted: bool = False) -> EventSubscription:
    stmt = select(EventSubscription).where(EventSubscription.id == subscription_id)
    found = session.scalar(stmt.with_for_update() if lock else stmt)
    if found is None or (found.status == "deleted" and not include_deleted):
        raise NotFound(f"事件订阅 {subscription_id} 不存在", {"subscription_id": subscription_id})
    return found


def pause(session: Session, subscription_id: str) -> EventSubscription:
    """Stop sending; events keep being recorded for the subscription and go out, in order, on resume."""
    return _set_status(session, subscription_id, "paused")


def resume(session: Session, subscription_id: str) -> EventSubscription:
    """Send again, starting with what waited during the pause; its streams are queued on commit."""
    subscription = _set_status(session, subscription_id, "active")
    o = OutboxMessage
    mine = (o.subscription == SUBSCRIPTION, o.target == subscription.id, o.status == "pending")
    session.execute(update(o).where(*mine, o.attempts == 0).values(next_attempt_at=clock.now(), dispatched_at=None))
    heads = session.execute(select(func.min(o.id), func.min(o.queue)).where(*mine).group_by(o.instance_id)).all()
    dispatch_after_commit(session, [(outbox_id, queue) for outbox_id, queue in heads])
    return subscription


def delete(session: Session, subscription_id: str) -> EventSubscription:
    """Stop for good: undelivered events of the subscription are dropped; its delivery records stay."""
    subscription = _set_status(session, subscription_id, "deleted")
    o = OutboxMessage
    session.execute(update(o).where(o.subscription == SUBSCRIPTION, o.target == subscription.id,
                                    o.status == "pending")
                    .values(status="dropped", last_error="subscription deleted", claimed_until=None))
    return subscription


def counts(session: Session, subscription_ids: list[str]) -> dict[str, dict[str, int]]:
    """Deliveries per subscription and status, plus `failing` (pending after a failed attempt)."""
    o = OutboxMessage
    result: dict[str, dict[str, int]] = {i: dict.fromkeys(DELIVERY_FILTERS, 0) for i in subscription_ids}
    failed = o.attempts > 0  # one expression object: PostgreSQL must see the same one in GROUP BY
    rows = session.execute(select(o.target, o.status, failed, func.count()).where(
        o.subscription == SUBSCRIPTION, o.target.in_(subscription_ids)).group_by(o.target, o.status, failed))
    for target, status, failed, count in rows:
        result[target][status] += count
        if status == "pending" and failed:
            result[target]["failing"] += count
    return result


def deliveries(session: Session, subscription_id: str, status: str | None = None, page: int = 1,
               per_page: int = 20) -> tuple[list[OutboxMessage], int]:
    """The subscription's deliveries newest first (a deleted one's too); `failing` = still pending after a
    failed attempt."""
    get(session, subscription_id, include_deleted=True)
    o = OutboxMessage
    stmt = select(o).where(o.subscription == SUBSCRIPTION, o.target == subscription_id)
    if status == "failing":
        stmt = stmt.where(o.status == "pending", o.attempts > 0)
    elif status is not None:
        stmt = stmt.where(o.status == status)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(o.id.desc()).limit(per_page).offset((page - 1) * per_page))
    return list(rows), total


def retry(session: Session, subscription_id: str, delivery_id: int, now: datetime | None = None) -> OutboxMessage:
    """Send a dead delivery again (409 unless dead)."""
    get(session, subscription_id)
    row = outbox_admin.get_row(session, delivery_id, lock=True)
    if row.subscription != SUBSCRIPTION or row.target != subscription_id:
        raise NotFound(f"投递 {delivery_id} 不属于事件订阅 {subscription_id}",
                       {"subscription_id": subscription_id, "delivery_id": delivery_id})
    return outbox_admin.retry(session, delivery_id, now)


def retry_dead(session: Session, subscription_id: str) -> list[int]:
    """Send every dead delivery of the subscription again; returns their ids."""
    get(session, subscription_id)
    o = OutboxMessage
    ids = list(session.scalars(select(o.id).where(o.subscription == SUBSCRIPTION, o.target == subscription_id,
                                                  o.status == "dead").order_by(o.id)))
    for delivery_id in ids:
        outbox_admin.retry(session, delivery_id)
    return ids


def _set_status(session: Session, subscription_id: str, status: str) -> EventSubscription:
    subscription = get(session, subscription_id, lock=True)
    if subscription.status == status:
        raise Conflict(f"事件订阅 {subscription_id} 已经是 {status} 状态",
                       {"subscription_id": subscription_id, "status": status})
    subscription.status, subscription.updated_at = status, clock.now()
    subscription.version += 1
    return subscription


def _process_keys(session: Session, keys: Any) -> list[str]:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _invalid("process_keys", "must be a list of process keys ([] = every process)")
    known = set(session.scalars(select(ProcessDefinition.key).where(ProcessDefinition.key.in_(keys))))
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise InvalidInput(f"unknown process key(s): {', '.join(unknown)}",
                           {"fields": {"process_keys": [f"{k!r} is not a deployed process" for k in unknown]}})
    return list(dict.fromkeys(keys))


def _invalid(field: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{field} {reason}", {"fields": {field: [reason]}})
