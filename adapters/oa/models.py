"""The OA adapter's tables, keyed by finflow ids; the engine knows none of them.

* `oa_requests`: each instance's twin request in OA: its id, where OA says it is, where finflow expects it,
  and the sync state shown on the instance (`GET /instances/{id}` → `integrations.oa`).
* `oa_submissions`: every call finflow made (or is making) on the twin — create, submit, reject, withdraw,
  force-over — one per (outbox row, kind), written before the call: a resend after a lost answer checks OA's
  log instead of submitting twice, and a decision OA echoes back (its node Action) is recognised as ours.
* `oa_decisions`: decisions taken in OA (callbacks and what the poller read), de-duplicated, with what
  applying them did.
* `oa_user_links`: finflow user ↔ OA user (E9 HrmResource id).
* `oa_reconcile_runs`: each reconciliation's counts and findings (the metrics read the last one).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base
from engine.models import UtcDateTime

SYNC_STATES = ("pending", "synced", "retrying", "mismatch", "failed", "closed")


class OARequest(Base):
    __tablename__ = "oa_requests"
    __table_args__ = (Index("ix_oa_requests_state_polled", "state", "polled_at"),)
    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    creator: Mapped[str | None] = mapped_column(String(64))  # the OA user who created it
    state: Mapped[str] = mapped_column(String(16), default="pending")  # see SYNC_STATES
    oa_node: Mapped[str | None] = mapped_column(String(64))  # as OA last said
    oa_node_name: Mapped[str | None] = mapped_column(String(128))
    oa_state: Mapped[str | None] = mapped_column(String(16))  # open | archived | withdrawn
    expected_node: Mapped[str | None] = mapped_column(String(64))  # where finflow's open tasks map to
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    polled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OASubmission(Base):
    __tablename__ = "oa_submissions"
    __table_args__ = (UniqueConstraint("outbox_id", "kind"), Index("ix_oa_submissions_request", "request_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(Integer)
    instance_id: Mapped[str] = mapped_column(String(36), index=True)
    request_id: Mapped[str | None] = mapped_column(String(64))
    task_id: Mapped[str | None] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))  # create | submit | reject | withdraw | force_over
    oa_node: Mapped[str | None] = mapped_column(String(64))  # the node the decision was taken at
    oa_user: Mapped[str] = mapped_column(String(64))
    to_node: Mapped[str | None] = mapped_column(String(64))  # a reject's target
    status: Mapped[str] = mapped_column(String(16), default="sending")  # sending | sent | failed
    echoed: Mapped[bool] = mapped_column(Boolean, default=False)  # OA's callback/log of it was seen
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OADecision(Base):
    __tablename__ = "oa_decisions"
    __table_args__ = (Index("ix_oa_decisions_status_received", "status", "received_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(String(16))  # callback | poll | reconcile
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    oa_node: Mapped[str] = mapped_column(String(64))
    oa_user: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # submit | reject
    remark: Mapped[str | None] = mapped_column(Text)
    log_id: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    instance_id: Mapped[str | None] = mapped_column(String(36), index=True)
    task_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default="received")  # received|applied|ignored|refused|conflict
    result: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OAUserLink(Base):
    __tablename__ = "oa_user_links"
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # finflow user
    oa_user_id: Mapped[str] = mapped_column(String(64), unique=True)
    oa_login: Mapped[str | None] = mapped_column(String(128))
    linked_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OAReconcileRun(Base):
    __tablename__ = "oa_reconcile_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fix: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    findings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    slot: Mapped[str | None] = mapped_column(String(32), unique=True)  # nightly:<date>: one run per night
