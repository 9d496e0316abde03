"""Running one outbox row: the rq job every dispatch enqueues, in workers and in embedded mode alike.

The job holds the row's lock for its whole run and does three things in ONE transaction: check the row
is still pending, run the subscription's handler, and mark the row done. So a job that runs twice (the
sweeper re-dispatched it, a worker was killed half-way, two workers got copies) has the effect of one
for everything the handler writes to the database: the second run finds the row done and returns.
Effects outside the database must be made idempotent by the handler, keyed by `Message.id`.

A failing handler is rolled back to a savepoint; the same transaction then records the failure: attempt
count, last error, and either the next attempt time (the retry is scheduled on rq once committed) or,
after the last attempt, status `dead`.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import clock, events
from engine.db import after_commit, transaction
from engine.outbox import dispatch
from engine.outbox.models import OutboxMessage
from engine.outbox.policy import Policy

log = logging.getLogger("finflow.outbox")
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class Message:
    """What a handler receives: the event, the instance it happened to, and the id to deduplicate on."""

    id: int  # the outbox row id: stable across redeliveries, the key for idempotent handlers
    subscription: str
    event_type: str
    instance_id: str
    seq: int
    event: dict[str, Any]  # the history row: type, payload, task_id, node_id, actor_id, channel, at, ...
    instance: dict[str, Any]  # summary at the time of the event: process_key, business_key, starter_id, status …
    attempt: int  # 1 on the first run
    target: str = ""  # the destination, for subscriptions that fan out ("" otherwise)
    stream_seq: int | None = None  # position among the target's events of this instance (external only)


def deliver(outbox_id: int, database_url: str | None = None, *, now: datetime | None = None) -> str:
    """Run the row's handler once, unless it already ran; returns the row's status afterwards.

    `database_url` is passed only by in-process (embedded) dispatch; workers use their configured database.
    Rows of external subscriptions are delivered by engine.outbox.stream instead, outside the transaction.
    """
    with transaction(database_url) as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.id == outbox_id).with_for_update())
        if row is None:
            log.warning("outbox: row %s does not exist (job for another database?)", outbox_id)
            return "missing"
        if row.status != "pending":
            return row.status  # a duplicate delivery: the first one did the work
        subscription = events.subscription(row.subscription)
        if subscription is None or not subscription.external:
            _run(session, row, now or clock.now(), database_url)
            return row.status
        stream_key = (row.subscription, row.target, row.instance_id)
    from engine.outbox import stream  # stream builds on this module

    stream.deliver(stream_key, database_url, now=now)
    with transaction(database_url, readonly=True) as session:
        return session.scalar(select(OutboxMessage.status).where(OutboxMessage.id == outbox_id)) or "missing"


def _run(session: Session, row: OutboxMessage, now: datetime, database_url: str | None) -> None:
    subscription = events.subscription(row.subscription)
    error: str | None = None
    if subscription is None:
        error = f"subscription {row.subscription!r} is not loaded in this process (check FINFLOW_PLUGINS)"
    else:
        try:
            with session.begin_nested():
                subscription.handler(session, message(row))
        except Exception as exc:  # the handler's writes are rolled back with the savepoint
            error = describe(exc)
    if error is None:
        row.attempts += 1
        row.status, row.done_at = "done", now
        return
    record_failure(session, row, error, now, database_url)


def record_failure(session: Session, row: OutboxMessage, error: str, now: datetime, database_url: str | None,
                   *, permanent: bool = False, retry_after: float | None = None) -> datetime | None:
    """Count a failed run of `row`: dead when refused for good or out of attempts; otherwise due again
    after the backoff (or the destination's Retry-After, when longer), its retry scheduled on rq once the
    transaction commits. Returns the next attempt's time, or None when the row is dead."""
    policy = Policy.from_env()
    row.attempts += 1
    row.last_error = error
    where = f"{row.subscription} → {row.target}" if row.target else row.subscription
    if permanent or row.attempts >= policy.max_attempts:
        row.status = "dead"
        log.error("outbox: row %s (%s) is dead after %d attempt(s): %s", row.id, where, row.attempts,
                  error.splitlines()[0])
        subscription = events.subscription(row.subscription)
        if subscription is not None and subscription.on_dead is not None:
            subscription.on_dead(session, message(row), error)
        return None
    delay = policy.backoff(row.attempts)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=min(retry_after, policy.max_delay)))
    row.next_attempt_at = now + delay
    # Embedded mode has no rq scheduler: leave the row undispatched, the sweeper thread runs it when due.
    row.dispatched_at = None if dispatch.redis_url() is None else now
    log.warning("outbox: row %s (%s) failed attempt %d, retry in %.0f s: %s", row.id, where, row.attempts,
                delay.total_seconds(), error.splitlines()[0])
    row_id, queue_name = row.id, row.queue
    after_commit(session, lambda: dispatch.schedule_retry(row_id, queue_name, delay, database_url))
    return row.next_attempt_at


def message(row: OutboxMessage) -> Message:
    payload = row.payload or {}
    return Message(id=row.id, subscription=row.subscription, event_type=row.event_type,
                   instance_id=row.instance_id, seq=row.event_seq, event=payload.get("event", {}),
                   instance=payload.get("instance", {}), attempt=row.attempts + 1, target=row.target,
                   stream_seq=row.stream_seq)


def describe(exc: BaseException) -> str:
    """First line: type and message (what the API list shows); then the traceback, for whoever debugs it."""
    head = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc, limit=-8))
    return (head + "\n\n" + trace)[:MAX_ERROR_CHARS]
