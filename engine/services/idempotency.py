"""Idempotency-Key support: a retried mutating call returns the first result and changes nothing.

The record is written in the same transaction as the command it describes, so a command and its
remembered response commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import InvalidInput
from engine.models import IdempotencyRecord
from engine.runner.execution import utcnow


def fingerprint(method: str, path: str, body: Any) -> str:
    raw = json.dumps([method, path, body], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def replay(session: Session, user_id: str, key: str, print_: str) -> IdempotencyRecord | None:
    record = session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id,
                                                            IdempotencyRecord.key == key))
    if record is not None and record.fingerprint != print_:
        raise InvalidInput("Idempotency-Key was already used for a different request",
                           {"idempotency_key": key}, code="idempotency_key_reused")
    return record


def remember(session: Session, user_id: str, key: str, print_: str, status: int, body: Any) -> None:
    session.add(IdempotencyRecord(user_id=user_id, key=key, fingerprint=print_, status_code=status,
                                  response=body, created_at=utcnow()))
    session.flush()
