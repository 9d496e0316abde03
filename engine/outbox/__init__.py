"""The transactional outbox: side effects of engine events, written with the state change, delivered later.

`record` is called by the runner in the command's transaction with the history rows it inserts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from engine import events
from engine.models import Instance


def record(session: Session, instance: Instance, history_rows: list[dict[str, Any]]) -> None:
    """Write one outbox row per (history event, matching subscription); nothing when none match."""
    for row in history_rows:
        for subscription in events.subscriptions_for(row["type"]):
            raise NotImplementedError(subscription)  # replaced by the outbox implementation
