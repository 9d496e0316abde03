"""Per-day anchors: one digest over every history event hash of a day, chained day to day.

An instance's chain shows a row edited or deleted, unless whoever edited it also recomputed the rest of
that instance's chain and its head. The day's anchor catches that too: digest(day) = sha256(digest of the
previous anchor + the hash of every event of the day, in (instance_id, seq) order), so any change to a
day's events changes its digest, and rewriting the anchors as well shows against a copy kept elsewhere
(`finflow audit anchor` prints them for that).

Days are Asia/Shanghai days, as the business counts them. A day is anchored once it is complete, i.e.
once it ended SETTLE ago, so commands that took their timestamp just before midnight have committed.
Every day from the first event's on gets a row, an empty day one with events=0 (its digest is then
sha256 of the previous digest): the anchor chain has no holes to explain, and events later added to a
day that had none are caught like any other change. Before the first event there are no anchors.

Anchors are computed from the data alone, so two workers computing the same day at once compute the
same row; the second insert is ignored.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from engine import clock
from engine.audit.chain import GENESIS
from engine.db import insert_ignoring_duplicates, transaction
from engine.models import AuditAnchor, HistoryArchive, HistoryEvent

log = logging.getLogger("finflow.audit")
LOCAL_ZONE = ZoneInfo("Asia/Shanghai")
SETTLE = timedelta(minutes=10)  # how long after midnight a day counts as complete
STREAM = 5000  # event hashes fetched per round trip


def local_day(moment: datetime) -> date:
    return moment.astimezone(LOCAL_ZONE).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The day's [start, end) in UTC."""
    start = datetime.combine(day, time(0), tzinfo=LOCAL_ZONE)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=LOCAL_ZONE)
    return start.astimezone(UTC), end.astimezone(UTC)


def last_complete_day(now: datetime | None = None) -> date:
    return local_day((now or clock.now()) - SETTLE) - timedelta(days=1)


def day_hashes(session: Session, day: date) -> Iterator[str]:
    """Every event hash of `day`, live and archived, in (instance_id, seq) order (byte order of the id on
    both engines, whatever PostgreSQL's collation)."""
    start, end = day_bounds(day)
    parts = [select(t.instance_id, t.seq, t.hash).where(t.at >= start, t.at < end)
             for t in (HistoryEvent, HistoryArchive)]
    events = union_all(*parts).subquery()
    instance_id = events.c.instance_id
    if session.get_bind().dialect.name == "postgresql":
        instance_id = instance_id.collate("C")
    stmt = select(events.c.hash).order_by(instance_id, events.c.seq).execution_options(yield_per=STREAM)
    yield from session.scalars(stmt)


def digest_of(previous: str, hashes: Iterator[str]) -> tuple[int, str]:
    """(how many hashes, sha256(previous + every hash)) — the anchor of a day given its events."""
    digest = hashlib.sha256(previous.encode("ascii"))
    count = 0
    for event_hash in hashes:
        digest.update(event_hash.encode("ascii"))
        count += 1
    return count, digest.hexdigest()


def compute_day(session: Session, day: date, previous: str) -> tuple[int, str]:
    return digest_of(previous, day_hashes(session, day))


def first_event_day(session: Session) -> date | None:
    firsts = [session.scalar(select(func.min(t.at))) for t in (HistoryEvent, HistoryArchive)]
    firsts = [f for f in firsts if f is not None]
    return local_day(min(firsts)) if firsts else None


def latest_anchor(session: Session) -> AuditAnchor | None:
    return session.scalars(select(AuditAnchor).order_by(AuditAnchor.day.desc()).limit(1)).first()


def compute_missing(database_url: str | None = None, *, now: datetime | None = None) -> list[AuditAnchor]:
    """Anchor every complete day not anchored yet (up to yesterday), oldest first; returns the new anchors.

    The digests are computed in a read-only transaction (on SQLite it does not hold the write lock while
    reading a day's events) and written in one short transaction afterwards.
    """
    through = last_complete_day(now)
    with transaction(database_url, readonly=True) as session:
        latest = latest_anchor(session)
        if latest is not None and latest.day >= through:
            return []
        day = latest.day + timedelta(days=1) if latest is not None else first_event_day(session)
        previous = latest.digest if latest is not None else GENESIS
        anchors: list[AuditAnchor] = []
        computed_at = clock.now()
        while day is not None and day <= through:
            events, digest = compute_day(session, day, previous)
            anchors.append(AuditAnchor(day=day, events=events, digest=digest, previous=previous,
                                       computed_at=computed_at))
            previous, day = digest, day + timedelta(days=1)
    if anchors:
        with transaction(database_url) as session:
            connection = session.connection()
            table = AuditAnchor.__table__
            connection.execute(insert_ignoring_duplicates(connection, table, ["day"]), [
                {"day": a.day, "events": a.events, "digest": a.digest, "previous": a.previous,
                 "computed_at": a.computed_at} for a in anchors])
        log.info("audit: anchored %d day(s) through %s", len(anchors), anchors[-1].day)
    return anchors


def anchor_due(database_url: str | None = None) -> int:
    """The periodic check (every worker's sweep): one primary-key read when yesterday is anchored."""
    return len(compute_missing(database_url))


def all_anchors(session: Session) -> list[AuditAnchor]:
    return list(session.scalars(select(AuditAnchor).order_by(AuditAnchor.day)))
