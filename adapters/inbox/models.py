"""The notifications table. (outbox_id, user_id) is unique, so a redelivered event inserts nothing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base
from engine.models import UtcDateTime


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("outbox_id", "user_id"),
        Index("ix_notifications_user_created", "user_id", "created_at"),  # a user's inbox, newest first
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(64))
    outbox_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(48))  # the event type it tells about
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    instance_id: Mapped[str | None] = mapped_column(String(36))
    task_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
