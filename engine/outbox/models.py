"""The outbox table: one row per (history event, subscription), written in the transaction of the change.

A row is the durable promise that a side effect will happen. It is `pending` until a job runs the
subscription's handler and marks it `done` in the handler's own transaction, or `dead` once the retry
policy gives up (with the last error, for an administrator to read and retry), or `dropped` when its
destination was deleted before delivery. Nothing deletes rows.

A subscription with targets writes one row per target; rows of one (subscription, target, instance) form
a stream numbered by `stream_seq` (1, 2, 3 … with no gap), which external deliveries keep in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base
from engine.models import UtcDateTime

STATUSES = ("pending", "done", "dead", "dropped")


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        # one side effect per event, handler and target
        UniqueConstraint("instance_id", "event_seq", "subscription", "target", name="uq_outbox_event_target"),
        Index("ix_outbox_status_next_attempt", "status", "next_attempt_at"),  # the sweeper's due rows; admin lists
        Index("ix_outbox_stream", "subscription", "target", "instance_id", "event_seq"),  # ordered delivery
        Index("ix_outbox_failing", "subscription", "target", "next_attempt_at",  # a target's waiting retries
              postgresql_where=text("status = 'pending' AND attempts > 0"),
              sqlite_where=text("status = 'pending' AND attempts > 0")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64), default="", server_default="")  # "": no fan-out
    queue: Mapped[str] = mapped_column(String(16))
    instance_id: Mapped[str] = mapped_column(String(36))
    event_seq: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(48))
    stream_seq: Mapped[int | None] = mapped_column(Integer)  # position in its stream (external subscriptions)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"event": history row, "instance": summary}
    status: Mapped[str] = mapped_column(String(8))  # pending | done | dead | dropped
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # handler runs that finished (failed or not)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)  # due time of the next (re)delivery
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # last hand-over to the queue; None: not
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)  # an external send is in flight until
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
