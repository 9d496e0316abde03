"""Verify the audit trail: recompute every instance's hash chain and every day's anchor.

What a finding means:
* `hash_mismatch` at seq n: row n is not what was hashed when it was written (edited), or, when only the
  link is off, the row before it had its hash rewritten;
* `seq_gap` at seq n: event n is missing (deleted);
* `duplicate_seq`: one event both live and archived (an archive run tampered with or half-undone);
* `last_seq_mismatch`: the instance counts more (or fewer) events than its history holds (the last rows
  deleted, or rows added behind the engine's back);
* `chain_head_mismatch`: the instance's stored head is not its last event's hash;
* `anchor_count_mismatch` / `anchor_digest_mismatch` for a day: that day's events were deleted or added /
  edited, even if their instance chains were recomputed to hide it;
* `anchor_link_broken` / `anchor_missing`: the anchor rows themselves were edited or deleted.

Only the first broken link of an instance is reported: what follows it cannot be trusted anyway. Rows are
read in batches of instances, live and archived history alike, never all at once; each batch is read in
one snapshot (REPEATABLE READ on PostgreSQL, a read transaction on SQLite) so a command committing
meanwhile cannot look like tampering.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from engine.audit import anchors as day_anchors
from engine.audit.chain import FIELDS, GENESIS, event_hash
from engine.db import transaction
from engine.models import HistoryArchive, HistoryEvent, Instance

BATCH = 500  # instances per snapshot
STREAM = 5000  # history rows per round trip


@dataclass(frozen=True)
class Problem:
    kind: str
    message: str
    instance_id: str | None = None
    seq: int | None = None
    day: date | None = None

    def __str__(self) -> str:
        where = f"instance {self.instance_id} seq {self.seq}" if self.instance_id else f"day {self.day}"
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class Report:
    instances: int = 0
    events: int = 0
    anchors: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def for_instance(self, instance_id: str) -> list[Problem]:
        return [p for p in self.problems if p.instance_id == instance_id]

    def summary(self) -> str:
        return (f"checked {self.instances} instance(s), {self.events} event(s), {self.anchors} anchor(s): "
                + ("the audit trail is intact" if self.ok else f"{len(self.problems)} problem(s)"))


def verify(database_url: str | None = None, *, batch: int = BATCH) -> Report:
    """Check every chain, then every anchor; the report lists the first broken link per instance and
    every day whose anchor does not match."""
    report = Report()
    after: str | None = None
    while True:
        with transaction(database_url, readonly=True) as session:
            _snapshot(session)
            instances = _instances(session, after, batch)
            if not instances:
                break
            after = instances[-1][0]
            report.instances += len(instances)
            _check_chains(session, instances, report)
    with transaction(database_url, readonly=True) as session:
        _snapshot(session)
        _check_anchors(session, report)
    return report


def check_chain(instance_id: str, last_seq: int, chain_head: str | None, rows: Iterable[Any]) -> Problem | None:
    """The first broken link of one instance's history (`rows` in seq order), None when it is intact."""
    previous, expected = GENESIS, 1
    for row in rows:
        if row.seq < expected:
            return Problem("duplicate_seq", "this event is stored twice (live and archived)", instance_id, row.seq)
        if row.seq > expected:
            missing = f"events {expected}-{row.seq - 1} are" if row.seq - expected > 1 else f"event {expected} is"
            return Problem("seq_gap", f"{missing} missing: row(s) deleted", instance_id, expected)
        if event_hash(previous, row._mapping) != row.hash:
            return Problem("hash_mismatch", "the stored hash does not match the row: this row (or the hash of "
                           "the one before it) was edited", instance_id, row.seq)
        previous, expected = row.hash, expected + 1
    found = expected - 1
    if found != last_seq:
        what = "the last row(s) deleted" if found < last_seq else "row(s) added outside the engine"
        return Problem("last_seq_mismatch", f"the instance counts {last_seq} event(s), its history holds {found}: "
                       f"{what}", instance_id, found + 1 if found < last_seq else last_seq + 1)
    if (chain_head or GENESIS) != previous:
        return Problem("chain_head_mismatch", "the instance's chain head is not the hash of its last event",
                       instance_id, found)
    return None


def _snapshot(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _instances(session: Session, after: str | None, batch: int) -> list[tuple[str, int, str | None]]:
    stmt = select(Instance.id, Instance.last_seq, Instance.chain_head).order_by(Instance.id).limit(batch)
    if after is not None:
        stmt = stmt.where(Instance.id > after)
    return [tuple(row) for row in session.execute(stmt)]


def _events(session: Session, instance_ids: list[str]) -> Iterator[Any]:
    parts = [select(*(getattr(t, name) for name in FIELDS), t.hash).where(t.instance_id.in_(instance_ids))
             for t in (HistoryEvent, HistoryArchive)]
    rows = union_all(*parts).subquery()
    stmt = select(rows).order_by(rows.c.instance_id, rows.c.seq).execution_options(yield_per=STREAM)
    yield from session.execute(stmt)


def _check_chains(session: Session, instances: list[tuple[str, int, str | None]], report: Report) -> None:
    """Rows arrive grouped by instance: one instance's history is in memory at a time, never the batch's."""
    facts = {instance_id: (last_seq, head) for instance_id, last_seq, head in instances}
    seen: set[str] = set()
    for instance_id, group in itertools.groupby(_events(session, list(facts)), key=lambda r: r.instance_id):
        rows = list(group)
        seen.add(instance_id)
        report.events += len(rows)
        problem = check_chain(instance_id, *facts[instance_id], rows)
        if problem is not None:
            report.problems.append(problem)
    for instance_id in facts.keys() - seen:  # no history at all
        problem = check_chain(instance_id, *facts[instance_id], [])
        if problem is not None:
            report.problems.append(problem)


def _check_anchors(session: Session, report: Report) -> None:
    previous, expected_day = GENESIS, None
    for anchor in day_anchors.all_anchors(session):
        report.anchors += 1
        if expected_day is None:
            _check_before_first(session, anchor.day, report)
        elif anchor.day != expected_day:
            report.problems.append(Problem("anchor_missing", f"no anchor for {expected_day} to "
                                           f"{anchor.day - timedelta(days=1)}: anchor row(s) deleted",
                                           day=expected_day))
        if anchor.previous != previous:
            report.problems.append(Problem("anchor_link_broken", "the anchor does not follow the previous "
                                           "day's digest: an anchor row was edited", day=anchor.day))
        events, digest = day_anchors.compute_day(session, anchor.day, anchor.previous)
        if events != anchor.events:
            report.problems.append(Problem(
                "anchor_count_mismatch", f"{anchor.events} event(s) anchored, {events} found: "
                f"row(s) {'deleted' if events < anchor.events else 'added'} for that day", day=anchor.day))
        elif digest != anchor.digest:
            report.problems.append(Problem("anchor_digest_mismatch", "the day's events do not match its digest: "
                                           "row(s) of that day edited", day=anchor.day))
        previous, expected_day = anchor.digest, anchor.day + timedelta(days=1)


def _check_before_first(session: Session, first_day: date, report: Report) -> None:
    """Anchors start on the day of the first event: history dated before it was added afterwards."""
    start, _ = day_anchors.day_bounds(first_day)
    earlier = sum(session.scalar(select(func.count()).select_from(t).where(t.at < start)) or 0
                  for t in (HistoryEvent, HistoryArchive))
    if earlier:
        report.problems.append(Problem("anchor_missing", f"{earlier} event(s) dated before the first anchored "
                                       "day: added afterwards", day=first_day - timedelta(days=1)))
