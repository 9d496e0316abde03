"""The instance history: append-only events, numbered per instance, written with the change they describe.

Events are collected while a command runs and bulk-inserted once at the end of it, in the same
transaction as the instance update that moves `Instance.last_seq` forward. Each row gets its link in the
instance's hash chain (engine.audit.chain) from `Instance.chain_head`, moved forward by the same update, so
writing never reads the previous row back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import clock
from engine.audit import chain
from engine.models import HistoryArchive, HistoryEvent, Instance


@dataclass(frozen=True)
class Actor:
    """Who issued a command and from where; every channel (api, wecom, oa, timer) passes one."""

    user_id: str | None
    channel: str = "api"
    client_ip: str | None = None
    user_agent: str | None = None


SYSTEM = Actor(user_id=None, channel="engine")


class HistoryRecorder:
    def __init__(self, instance: Instance, actor: Actor):
        self.instance = instance
        self.actor = actor
        self.events: list[dict[str, Any]] = []

    def record(self, type_: str, payload: dict[str, Any] | None = None, *, task_id: str | None = None,
               node_id: str | None = None, by_actor: bool = True) -> None:
        actor = self.actor if by_actor else SYSTEM
        self.events.append({
            "type": type_, "payload": payload or {}, "task_id": task_id, "node_id": node_id,
            "actor_id": actor.user_id, "channel": actor.channel, "client_ip": actor.client_ip,
            "user_agent": (actor.user_agent or "")[:255] or None,
        })

    def take_rows(self) -> list[dict[str, Any]]:
        """The collected events as rows numbered and hash-chained after the instance's last one; advances
        `last_seq` and `chain_head`. Every history row is made here: nothing else inserts them."""
        now = clock.now()
        first = self.instance.last_seq + 1
        rows = [{**event, "instance_id": self.instance.id, "seq": first + i, "at": now}
                for i, event in enumerate(self.events)]
        if rows:
            self.instance.chain_head = chain.link(self.instance.chain_head, rows)
        self.instance.last_seq += len(rows)
        self.events.clear()
        return rows


def instance_history(session: Session, instance_id: str,
                     archived: bool | None = None) -> list[HistoryEvent | HistoryArchive]:
    """An instance's events in order, from `history_archive` once it is archived.

    `archived` is what the caller knows of `Instance.archived_at`; the other table is read when the
    expected one is empty (every instance has at least `instance.started`), so an archive committed
    between reading the instance and its events still shows the timeline.
    """
    if archived is None:
        archived = session.scalar(select(Instance.archived_at).where(Instance.id == instance_id)) is not None
    tables = (HistoryArchive, HistoryEvent) if archived else (HistoryEvent, HistoryArchive)
    for table in tables:
        events = list(session.scalars(select(table).where(table.instance_id == instance_id).order_by(table.seq)))
        if events:
            return events
    return []
