"""Retention: move the history of long-finished instances out of the live table.

An instance is archived once it finished (completed, withdrawn or cancelled; a failed one may still be
repaired) more than the retention period ago: FINFLOW_HISTORY_RETENTION_DAYS, 180 by default and never
less, since approvals must stay on hand for at least that long. Its history rows move to
`history_archive` unchanged (same columns, same hashes), so its chain and the day anchors still verify. The
instance row stays, as invoice claims, vouchers and budget entries point at it: it gets `archived_at`
and its serialized workflow state, by far its largest column, is replaced by ARCHIVED_STATE. An archived
instance takes no more commands (engine.runner.execution refuses them).

Instances are moved in batches, one transaction each; a rerun skips what is archived already, so an
interrupted run is finished by running it again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from engine import clock
from engine.db import is_postgres, transaction
from engine.errors import InvalidInput
from engine.models import HistoryArchive, HistoryEvent, Instance

RETENTION_ENV = "FINFLOW_HISTORY_RETENTION_DAYS"
MIN_RETENTION_DAYS = 180
DEFAULT_RETENTION_DAYS = 180
FINISHED = ("completed", "withdrawn", "cancelled")
ARCHIVED_STATE = ""  # the workflow state of an archived instance: nothing to restore
BATCH = 200  # instances per transaction


@dataclass(frozen=True)
class ArchiveResult:
    instances: int
    events: int
    cutoff: datetime
    dry_run: bool


def retention_days(older_than_days: int | None = None) -> int:
    """The retention period in days: the argument, else the setting, else 180; below 180 is refused."""
    if older_than_days is None:
        raw = os.environ.get(RETENTION_ENV, "").strip()
        try:
            older_than_days = int(raw) if raw else DEFAULT_RETENTION_DAYS
        except ValueError:
            raise InvalidInput(f"{RETENTION_ENV} must be a whole number of days, not {raw!r}",
                               {"setting": RETENTION_ENV}) from None
    if older_than_days < MIN_RETENTION_DAYS:
        raise InvalidInput(f"history must be kept at least {MIN_RETENTION_DAYS} days; {older_than_days} is too "
                           "short", {"older_than_days": older_than_days, "minimum": MIN_RETENTION_DAYS},
                           code="retention_too_short")
    return older_than_days


def archive(database_url: str | None = None, *, older_than_days: int | None = None, dry_run: bool = False,
            batch: int = BATCH, now: datetime | None = None) -> ArchiveResult:
    """Archive every instance finished before now - retention; with `dry_run`, only count them."""
    cutoff = (now or clock.now()) - timedelta(days=retention_days(older_than_days))
    if dry_run:
        with transaction(database_url, readonly=True) as session:
            due = _due(cutoff).subquery()
            instances = session.scalar(select(func.count()).select_from(due)) or 0
            events = session.scalar(select(func.count()).select_from(HistoryEvent)
                                    .where(HistoryEvent.instance_id.in_(select(due.c.id)))) or 0
        return ArchiveResult(instances, events, cutoff, True)
    instances = events = 0
    while True:
        with transaction(database_url) as session:
            moved = _archive_batch(session, cutoff, batch)
        if moved is None:
            break
        instances, events = instances + moved[0], events + moved[1]
    return ArchiveResult(instances, events, cutoff, False)


def _due(cutoff: datetime):
    return select(Instance.id).where(Instance.status.in_(FINISHED), Instance.ended_at < cutoff,
                                     Instance.archived_at.is_(None))


def _archive_batch(session: Session, cutoff: datetime, batch: int) -> tuple[int, int] | None:
    """Move one batch (instances locked, so no command appends to them meanwhile); None when none is due."""
    stmt = _due(cutoff).order_by(Instance.ended_at, Instance.id).limit(batch)
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    ids = list(session.scalars(stmt))
    if not ids:
        return None
    live, kept = HistoryEvent.__table__, HistoryArchive.__table__
    names = [c.name for c in kept.c]
    connection = session.connection()
    connection.execute(insert(kept).from_select(
        names, select(*(live.c[name] for name in names)).where(live.c.instance_id.in_(ids))))
    moved = connection.execute(live.delete().where(live.c.instance_id.in_(ids))).rowcount
    # Core update: bump the optimistic lock by hand, so a session holding an older copy of the row fails.
    connection.execute(update(Instance.__table__).where(Instance.__table__.c.id.in_(ids)).values(
        archived_at=clock.now(), state=ARCHIVED_STATE, lock_version=Instance.__table__.c.lock_version + 1))
    return len(ids), moved
