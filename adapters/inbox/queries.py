"""Reading one's own notifications and marking them read; nobody sees anyone else's."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapters.inbox.models import Notification
from engine import clock
from engine.errors import NotFound


def list_for(session: Session, user_id: str, *, unread: bool = False, page: int = 1,
             per_page: int = 20) -> tuple[list[Notification], int, int]:
    """The user's notifications newest first; returns (page of items, total matching, unread total)."""
    mine = select(Notification).where(Notification.user_id == user_id)
    unread_count = session.scalar(select(func.count()).select_from(
        mine.where(Notification.read_at.is_(None)).subquery())) or 0
    stmt = mine.where(Notification.read_at.is_(None)) if unread else mine
    total = unread_count if unread else session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(stmt.order_by(Notification.created_at.desc(), Notification.id.desc())
                            .limit(per_page).offset((page - 1) * per_page))
    return list(items), total, unread_count


def mark_read(session: Session, user_id: str, notification_id: int) -> Notification:
    """Idempotent: reading twice keeps the first read time. Someone else's notification is "not found"."""
    notification = session.get(Notification, notification_id)
    if notification is None or notification.user_id != user_id:
        raise NotFound(f"通知 {notification_id} 不存在", {"notification_id": notification_id})
    if notification.read_at is None:
        notification.read_at = clock.now()
    return notification
