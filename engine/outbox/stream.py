"""Delivering an external subscription's rows: in order per stream, with no transaction open while sending.

An external side effect (an HTTP POST, a broker publish) cannot join the database transaction and must
not be made inside one: on SQLite a write transaction blocks every approval, on PostgreSQL it pins a
connection. A stream is the rows of one (subscription, target, instance), numbered by `stream_seq`. A
job works on its row's stream in three steps, and loops until the stream is drained:

1. claim (short transaction, under the stream lock): the stream's pending rows in order. Nothing is sent
   when the head is in flight in another job (that job loops and takes the new rows), waits for a retry,
   or the target is held (paused, or failing: see below). Otherwise the rows are marked in flight
   (`claimed_until`, a lease) and the subscription's `connect` prepares a sender for them.
2. send, outside any transaction, in order; stop at the first failure that will be retried.
3. settle (short transaction, under the stream lock): sent rows are done; the failed row gets its next
   attempt or is dead; rows not sent are released to wait behind it.

A worker killed between sending and settling leaves its rows in flight until the lease ends; the sweeper
then hands them over again and they are re-sent with the same ids: delivery is at least once, and
consumers de-duplicate by id. The stream lock is a PostgreSQL advisory lock on the stream's key (SQLite
serializes writers anyway), so two jobs of one stream never claim or settle at the same time.

A target with a failed row waiting for its retry holds the heads of its other streams that have not
failed yet until the earliest such retry (a circuit breaker): a dead receiver costs one timeout per
backoff period and failing row, not one per new event, and does not occupy every worker. Rows that
failed keep their own backoff. A row that is dead does not block its stream: the consumer sees the gap in
`stream_seq`, and an administrator can send the row again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from engine import clock, events
from engine.db import is_postgres, transaction
from engine.outbox import dispatch
from engine.outbox.delivery import Message, describe, message, record_failure
from engine.outbox.models import OutboxMessage
from engine.outbox.policy import Policy

log = logging.getLogger("finflow.outbox")
BATCH = 100  # rows claimed at once; a stream rarely has more than a command's few events pending


class PermanentFailure(Exception):
    """The destination refused the message for good (an HTTP 4xx such as 410): the row is dead at once."""


class RetryLater(Exception):
    """A failure worth retrying; `after` (seconds) is the destination's own wish (HTTP Retry-After)."""

    def __init__(self, message: str, after: float | None = None):
        super().__init__(message)
        self.after = after


@dataclass(frozen=True)
class Hold:
    """`connect`'s answer when nothing may be sent to the target now (paused); rows wait until `until`."""

    reason: str
    until: datetime


Send = Callable[[Message], None]


@dataclass
class _Batch:
    key: tuple[str, str, str]  # (subscription, target, instance_id)
    messages: list[Message]
    send: Send
    sent: list[int] = field(default_factory=list)
    dead: dict[int, str] = field(default_factory=dict)  # refused for good: id -> reason
    failed: tuple[int, str, float | None] | None = None  # (id, error, Retry-After) of the one to retry


def deliver(key: tuple[str, str, str], database_url: str | None = None, *, now: datetime | None = None) -> None:
    """Deliver the stream `key` = (subscription, target, instance id), up to what is due."""
    policy = Policy.from_env()
    budget = time.monotonic() + policy.job_timeout / 2  # leave rq's job timeout a margin
    while True:
        batch = _claim(key, database_url, now, policy)
        if batch is None:
            break
        _send(batch)
        if not _settle(batch, database_url, now):
            break
        if time.monotonic() > budget:
            _hand_over(key, database_url)  # a fresh job goes on with the stream
            break


def _hand_over(key: tuple[str, str, str], database_url: str | None) -> None:
    with transaction(database_url, readonly=True) as session:
        head = next(iter(_pending(session, key)), None)
        rows = [(head.id, head.queue)] if head is not None else []
    dispatch.dispatch(rows, database_url)


def _claim(key: tuple[str, str, str], database_url: str | None, now: datetime | None,
           policy: Policy) -> _Batch | None:
    """Mark the stream's due rows in flight and prepare their sender; None when there is nothing to send
    now. Called again after every settle, so rows committed while a batch was sent are not left behind."""
    with transaction(database_url) as session:
        _lock(session, key)
        now = now or clock.now()  # read under the lock: a job that waited for it must not judge by old time
        rows = _pending(session, key)
        head = rows[0] if rows else None
        if head is None or (head.claimed_until is not None and head.claimed_until > now):
            return None  # drained, or in flight in another job, which claims again after it settles
        if head.next_attempt_at > now:
            _wait(rows[1:], head.next_attempt_at)  # behind a retry: sent when the head is
            return None
        subscription_name, target, _ = key
        subscription = events.subscription(subscription_name)
        if subscription is None:
            _wait(rows, now + policy.lease_delta)
            log.error("outbox: subscription %r is not loaded in this process (check FINFLOW_PLUGINS)",
                      subscription_name)
            return None
        failing_until = _target_failing_until(session, key, now) if head.attempts == 0 else None
        if failing_until is not None:
            _wait(rows, failing_until)
            return None
        messages = [message(r) for r in rows]
        prepared = subscription.handler(session, target, messages)
        if isinstance(prepared, Hold):
            _wait(rows, prepared.until)
            return None
        for r in rows:
            r.claimed_until, r.dispatched_at, r.next_attempt_at = now + policy.lease_delta, now, now
        return _Batch(key, messages, prepared)


def _send(batch: _Batch) -> None:
    for msg in batch.messages:
        try:
            batch.send(msg)
        except PermanentFailure as exc:
            batch.dead[msg.id] = describe(exc)
            continue
        except RetryLater as exc:
            batch.failed = (msg.id, describe(exc), exc.after)
            return
        except Exception as exc:  # a bug or an unexpected client error: retried like any failure
            batch.failed = (msg.id, describe(exc), None)
            return
        batch.sent.append(msg.id)


def _settle(batch: _Batch, database_url: str | None, now: datetime | None) -> bool:
    """Record what the send did; returns whether the stream may go on (nothing waits for a retry)."""
    go_on = True
    with transaction(database_url) as session:
        _lock(session, batch.key)
        now = now or clock.now()
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_([m.id for m in batch.messages]))
                               .order_by(OutboxMessage.event_seq))
        retry_at: datetime | None = None
        for row in rows:
            if row.status != "pending":  # dropped meanwhile (its subscription was deleted)
                continue
            row.claimed_until = None
            if row.id in batch.sent:
                row.attempts += 1
                row.status, row.done_at = "done", now
            elif row.id in batch.dead:
                record_failure(session, row, batch.dead[row.id], now, database_url, permanent=True)
            elif batch.failed is not None and row.id == batch.failed[0]:
                _, error, after = batch.failed
                retry_at = record_failure(session, row, error, now, database_url, retry_after=after)
                go_on = retry_at is None
            else:  # not sent: behind the failed row, or the send was cut short
                row.next_attempt_at, row.dispatched_at = retry_at or now, None
    return go_on


def _pending(session: Session, key: tuple[str, str, str]) -> list[OutboxMessage]:
    o = OutboxMessage
    subscription, target, instance_id = key
    return list(session.scalars(select(o).where(o.subscription == subscription, o.target == target,
                                                o.instance_id == instance_id, o.status == "pending")
                                .order_by(o.event_seq).limit(BATCH)))


def _wait(rows: list[OutboxMessage], until: datetime) -> None:
    """Leave rows to the sweeper, due at `until` (their own later due time wins)."""
    for r in rows:
        r.next_attempt_at, r.dispatched_at = max(r.next_attempt_at, until), None


def _target_failing_until(session: Session, key: tuple[str, str, str], now: datetime) -> datetime | None:
    """When the target's earliest pending retry is due, if any row to it failed and waits (the breaker).
    A failed row being sent again right now does not count: its outcome decides the next wait."""
    o = OutboxMessage
    subscription, target, _ = key
    return session.scalar(select(func.min(o.next_attempt_at)).where(
        o.subscription == subscription, o.target == target, o.status == "pending", o.attempts > 0,
        o.next_attempt_at > now, or_(o.claimed_until.is_(None), o.claimed_until <= now)))


def _lock(session: Session, key: tuple[str, str, str]) -> None:
    if is_postgres(session):
        digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8).digest()
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int.from_bytes(digest, "big", signed=True)})
