"""The transactional outbox: side effects of engine events, written with the state change, delivered later.

`record` is called by the runner in the command's transaction with the history rows it inserts: one
outbox row per (history event, matching subscription), so the side effect is promised exactly when the
change commits. After the commit the rows are handed to rq (engine/outbox/dispatch.py); a job runs the
handler and marks the row done in one transaction (delivery.py); the sweeper re-dispatches rows whose
job was lost (sweeper.py); `finflow worker` runs jobs and the sweeper (worker.py). Delivery is at least
once; a row that keeps failing ends `dead`, visible and retryable by an administrator (admin.py).
Times come from engine.clock, so tests move time instead of sleeping through backoffs and leases.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from engine import clock, events
from engine.models import Instance
from engine.outbox.dispatch import dispatch_after_commit
from engine.outbox.models import OutboxMessage

__all__ = ["OutboxMessage", "instance_summary", "record"]


def record(session: Session, instance: Instance, history_rows: list[dict[str, Any]]) -> None:
    """Write one outbox row per (history event, matching subscription); nothing when none match."""
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    now = clock.now()
    for event in history_rows:
        subscriptions = events.subscriptions_for(event["type"])
        if not subscriptions:
            continue
        summary = summary or instance_summary(instance)
        payload = {"event": _jsonable_event(event), "instance": summary}
        rows.extend({"subscription": s.name, "queue": s.queue, "instance_id": instance.id, "event_seq": event["seq"],
                     "event_type": event["type"], "payload": payload, "status": "pending", "attempts": 0,
                     "next_attempt_at": now, "created_at": now, "dispatched_at": now}  # handed over after commit
                    for s in subscriptions)
    if not rows:
        return
    table = OutboxMessage.__table__
    result = session.connection().execute(
        table.insert().returning(table.c.id, table.c.queue, sort_by_parameter_order=True), rows)
    dispatch_after_commit(session, [(outbox_id, queue) for outbox_id, queue in result])


def instance_summary(instance: Instance) -> dict[str, Any]:
    """What a handler needs to know about the instance without reading it (as of the event's commit)."""
    return {"id": instance.id, "process_key": instance.process_key, "version_id": instance.version_id,
            "business_key": instance.business_key, "starter_id": instance.starter_id, "status": instance.status,
            "outcome": instance.outcome, "title": instance.title}


def _jsonable_event(event: dict[str, Any]) -> dict[str, Any]:
    at = event.get("at")
    return {**event, "at": at.isoformat() if isinstance(at, datetime) else at}
