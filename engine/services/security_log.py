"""The security log: one call records who did what to access itself (grants, revocations, views,
exports, failed second factors), with the same Actor the history takes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import clock
from engine.db import transaction
from engine.history import Actor
from engine.models import SecurityEvent


def record(session: Session, kind: str, actor: Actor, subject_type: str | None = None,
           subject_id: str | None = None, **details: Any) -> None:
    """Append one event; it commits with the caller's transaction (a refused action records in its own)."""
    session.add(SecurityEvent(kind=kind, at=clock.now(), actor_id=actor.user_id, channel=actor.channel,
                              client_ip=actor.client_ip, user_agent=(actor.user_agent or "")[:255] or None,
                              subject_type=subject_type, subject_id=None if subject_id is None else str(subject_id),
                              details=details))


def record_access(kind: str, actor: Actor, subject_type: str, subject_id: str | None = None, **details: Any) -> None:
    """A read worth remembering (an auditor opening an instance, an export), in a transaction of its own:
    reads run in read-only transactions, and the record must stay even if the read fails later."""
    with transaction() as session:
        record(session, kind, actor, subject_type, subject_id, **details)


def events(session: Session, *, kind: str | None = None, subject_type: str | None = None,
           subject_id: str | None = None, actor_id: str | None = None, limit: int = 100) -> list[SecurityEvent]:
    """Newest first, filtered."""
    stmt = select(SecurityEvent)
    for column, value in ((SecurityEvent.kind, kind), (SecurityEvent.subject_type, subject_type),
                          (SecurityEvent.subject_id, subject_id), (SecurityEvent.actor_id, actor_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    return list(session.scalars(stmt.order_by(SecurityEvent.id.desc()).limit(limit)))
