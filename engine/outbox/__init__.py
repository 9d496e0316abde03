"""The transactional outbox: side effects of engine events, written with the state change, delivered later.

`record` is called by the runner in the command's transaction with the history rows it inserts: one
outbox row per (history event, matching subscription, target), so the side effect is promised exactly
when the change commits. After the commit the rows are handed to rq (engine/outbox/dispatch.py); a job
runs the handler and marks the row done in one transaction (delivery.py), or, for an external
subscription, sends the instance's rows in order with no transaction open (stream.py); the sweeper
re-dispatches rows whose
job was lost (sweeper.py); `finflow worker` runs jobs and the sweeper (worker.py). Delivery is at least
once; a row that keeps failing ends `dead`, visible and retryable by an administrator (admin.py).
Times come from engine.clock, so tests move time instead of sleeping through backoffs and leases.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import clock, events
from engine.models import Instance
from engine.outbox.dispatch import dispatch_after_commit, stream_heads
from engine.outbox.models import OutboxMessage

__all__ = ["OutboxMessage", "instance_summary", "record"]


def record(session: Session, instance: Instance, history_rows: list[dict[str, Any]]) -> None:
    """Write one outbox row per (history event, matching subscription, target); nothing when none match.

    Rows of external subscriptions are numbered per (subscription, target, instance) stream, after the
    stream's last row, so a consumer can tell a gap from a filter.
    """
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    now = clock.now()
    for event in history_rows:
        for subscription in events.subscriptions_for(event["type"]):
            targets = [""] if subscription.targets is None else \
                subscription.targets(session, instance.process_key, event["type"])
            if not targets:
                continue
            summary = summary or instance_summary(instance)
            payload = {"event": _jsonable_event(event), "instance": summary}
            rows.extend({"subscription": subscription.name, "target": target, "queue": subscription.queue,
                         "instance_id": instance.id, "event_seq": event["seq"], "event_type": event["type"],
                         "stream_seq": None, "payload": payload, "status": "pending", "attempts": 0,
                         "next_attempt_at": now, "created_at": now, "dispatched_at": now}  # handed over after commit
                        for target in targets)
    if not rows:
        return
    _number_streams(session, instance.id, rows)
    table = OutboxMessage.__table__
    result = session.connection().execute(
        table.insert().returning(table.c.id, table.c.queue, sort_by_parameter_order=True), rows)
    dispatch_after_commit(session, stream_heads(
        (outbox_id, queue, (row["subscription"], row["target"]) if row["stream_seq"] is not None else None)
        for row, (outbox_id, queue) in zip(rows, result, strict=True)))


def _number_streams(session: Session, instance_id: str, rows: list[dict[str, Any]]) -> None:
    """Give external rows their `stream_seq`: the instance's commands are serialized by its row lock, so
    reading the streams' last numbers here cannot race with another command of the same instance."""
    external = [r for r in rows if (s := events.subscription(r["subscription"])) is not None and s.external]
    if not external:
        return
    o = OutboxMessage
    last = {(name, target): seq or 0 for name, target, seq in session.execute(
        select(o.subscription, o.target, func.max(o.stream_seq)).where(
            o.instance_id == instance_id, o.subscription.in_({r["subscription"] for r in external}))
        .group_by(o.subscription, o.target))}
    for row in external:
        key = (row["subscription"], row["target"])
        last[key] = row["stream_seq"] = last.get(key, 0) + 1


def instance_summary(instance: Instance) -> dict[str, Any]:
    """What a handler needs to know about the instance without reading it (as of the event's commit)."""
    return {"id": instance.id, "process_key": instance.process_key, "version_id": instance.version_id,
            "business_key": instance.business_key, "starter_id": instance.starter_id, "status": instance.status,
            "outcome": instance.outcome, "title": instance.title,
            "amount": None if instance.amount is None else str(instance.amount)}


def _jsonable_event(event: dict[str, Any]) -> dict[str, Any]:
    at = event.get("at")
    return {**event, "at": at.isoformat() if isinstance(at, datetime) else at}
