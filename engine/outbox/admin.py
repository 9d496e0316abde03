"""What an administrator does with the outbox: list rows by status, read one, send a dead row again.

Used by the admin API and by `finflow outbox`; the caller checks who may do it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import clock
from engine.errors import Conflict, NotFound
from engine.outbox.dispatch import dispatch_after_commit
from engine.outbox.models import OutboxMessage


def list_rows(session: Session, status: str | None = None, page: int = 1,
              per_page: int = 20) -> tuple[list[OutboxMessage], int]:
    """Rows newest first, optionally of one status, with the total count."""
    stmt = select(OutboxMessage)
    if status is not None:
        stmt = stmt.where(OutboxMessage.status == status)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(OutboxMessage.id.desc()).limit(per_page).offset((page - 1) * per_page))
    return list(rows), total


def get_row(session: Session, outbox_id: int, *, lock: bool = False) -> OutboxMessage:
    stmt = select(OutboxMessage).where(OutboxMessage.id == outbox_id)
    row = session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None:
        raise NotFound(f"出站消息 {outbox_id} 不存在", {"outbox_id": outbox_id})
    return row


def retry(session: Session, outbox_id: int, now: datetime | None = None) -> OutboxMessage:
    """Send a dead row again with a fresh set of attempts; its job is enqueued when the caller commits."""
    row = get_row(session, outbox_id, lock=True)
    if row.status != "dead":
        raise Conflict(f"出站消息 {outbox_id} 的状态是 {row.status}，只有 dead 状态的消息可以重试",
                       {"outbox_id": outbox_id, "status": row.status})
    now = now or clock.now()
    row.status, row.attempts, row.next_attempt_at, row.dispatched_at = "pending", 0, now, now
    session.flush()
    dispatch_after_commit(session, [(row.id, row.queue)])
    return row
