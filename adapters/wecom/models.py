"""The WeCom adapter's tables, keyed by finflow ids; the engine knows none of them.

* `wecom_cards`: one interactive card per (task row, approver) delivery: what WeCom answered (msgid,
  response_code, invaliduser as a failure) and what the card shows now. Readable per task and instance.
* `wecom_messages`: plain messages (reminders, 抄送, results to the applicant), one per (event, user).
* `wecom_callbacks`: every accepted callback, de-duplicated (WeCom retries a callback it got no quick
  answer to), with what applying it did.
* `wecom_sync_runs`: org syncs, full or incremental, with the report of what changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base
from engine.models import UtcDateTime

CARD_STATUSES = ("pending", "sent", "failed", "updated", "update_failed")


class WeComCard(Base):
    __tablename__ = "wecom_cards"
    __table_args__ = (Index("ix_wecom_cards_task_user", "task_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_key: Mapped[str] = mapped_column(String(128), unique=True)  # the card's WeCom task_id
    task_id: Mapped[str] = mapped_column(String(36))
    instance_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[str] = mapped_column(String(64))  # finflow user id = WeCom userid
    status: Mapped[str] = mapped_column(String(16), default="pending")  # see CARD_STATUSES
    result: Mapped[str | None] = mapped_column(String(64))  # what the card shows once decided: 已同意 …
    msgid: Mapped[str | None] = mapped_column(String(128))
    response_code: Mapped[str | None] = mapped_column(String(512))  # from message/send; usable once
    errcode: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    outbox_id: Mapped[int | None] = mapped_column(Integer)  # the event that caused the card
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WeComMessage(Base):
    __tablename__ = "wecom_messages"
    __table_args__ = (UniqueConstraint("outbox_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(Integer)
    instance_id: Mapped[str | None] = mapped_column(String(36), index=True)
    task_id: Mapped[str | None] = mapped_column(String(36), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # text | markdown | textcard
    title: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    msgid: Mapped[str | None] = mapped_column(String(128))
    errcode: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WeComCallback(Base):
    __tablename__ = "wecom_callbacks"
    __table_args__ = (Index("ix_wecom_callbacks_status_received", "status", "received_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of what identifies the event
    kind: Mapped[str] = mapped_column(String(32))  # template_card_event | change_contact | other
    from_user: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the decrypted event's fields
    status: Mapped[str] = mapped_column(String(16), default="received")  # received|queued|applied|refused|failed
    result: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WeComSyncRun(Base):
    __tablename__ = "wecom_sync_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # full | incremental
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    slot: Mapped[str | None] = mapped_column(String(32), unique=True)  # nightly:<date>: one claim per night
