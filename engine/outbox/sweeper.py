"""The sweeper: re-dispatches pending rows whose job never came, so a lost hand-over is only a delay.

A row is due for the sweeper when it is pending and either
* undispatched (`dispatched_at IS NULL`: Redis refused it, or embedded mode waits for a retry) and its
  `next_attempt_at` has come, or
* dispatched but still pending a lease after `next_attempt_at`: the process crashed between commit and
  enqueue, a worker died mid-job, Redis lost the job, the scheduler never fired the retry.

Claiming is a short transaction that moves `next_attempt_at` and `dispatched_at` to now; the jobs are
enqueued after it commits. On PostgreSQL the claim uses FOR UPDATE SKIP LOCKED, so any number of
workers and API processes can sweep at once and each row is claimed by one of them; on SQLite writers
are serialized by BEGIN IMMEDIATE already. A duplicate job is harmless in any case (see delivery).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select, update

from engine import clock
from engine.db import is_postgres, transaction
from engine.outbox import dispatch
from engine.outbox.models import OutboxMessage
from engine.outbox.policy import Policy

log = logging.getLogger("finflow.outbox")
BATCH = 500


def sweep(database_url: str | None = None, *, now: datetime | None = None, batch: int = BATCH,
          max_batches: int | None = None) -> int:
    """Re-dispatch every due row (in batches); returns how many were handed to the queue."""
    if not dispatch.available():
        log.warning("outbox: Redis is unreachable; the sweep waits for it")
        return 0
    total, batches = 0, 0
    while max_batches is None or batches < max_batches:
        rows = claim(database_url, now=now, batch=batch)
        if not rows:
            break
        handed = set(dispatch.enqueue(rows, database_url))
        missed = [outbox_id for outbox_id, _ in rows if outbox_id not in handed]
        total += len(handed)
        batches += 1
        if missed:
            dispatch.mark_undispatched(missed, database_url)
            break  # Redis went away mid-sweep: the next sweep continues
    if total:
        log.info("outbox: swept %d row(s) back to the queue", total)
    return total


def claim(database_url: str | None = None, *, now: datetime | None = None,
          batch: int = BATCH) -> list[dispatch.Row]:
    """Claim up to `batch` due rows for this sweeper (committed before any job is enqueued); returns the
    jobs to enqueue for them."""
    now = now or clock.now()
    policy = Policy.from_env()
    o = OutboxMessage
    due = and_(o.status == "pending", or_(and_(o.dispatched_at.is_(None), o.next_attempt_at <= now),
                                          o.next_attempt_at <= now - policy.lease_delta))
    with transaction(database_url) as session:
        stmt = (select(o.id, o.queue, o.subscription, o.target, o.instance_id, o.stream_seq).where(due)
                .order_by(o.next_attempt_at, o.id).limit(batch))
        if is_postgres(session):
            stmt = stmt.with_for_update(skip_locked=True)
        claimed = session.execute(stmt).all()
        if claimed:
            session.execute(update(o).where(o.id.in_([r.id for r in claimed]))
                            .values(dispatched_at=now, next_attempt_at=now))
    return dispatch.stream_heads(
        (r.id, r.queue, (r.subscription, r.target, r.instance_id) if r.stream_seq is not None else None)
        for r in sorted(claimed, key=lambda r: r.id))


class SweeperThread(threading.Thread):
    """Runs periodic work every `interval` seconds until stopped: in workers, and in `finflow serve` in
    embedded mode. The work is the outbox sweep unless told otherwise (workers add due timers)."""

    def __init__(self, interval: float | None = None, database_url: str | None = None,
                 work: Sequence[Callable[[str | None], object]] = (sweep,)):
        super().__init__(name="outbox-sweeper", daemon=True)
        self.interval = Policy.from_env().sweep_interval if interval is None else interval
        self.database_url = database_url
        self.work = tuple(work)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for task in self.work:
                try:
                    task(self.database_url)
                except Exception:  # a database hiccup must not end the sweeper
                    log.exception("periodic %s failed; retrying in %.1f s", getattr(task, "__name__", task),
                                  self.interval)
            self._stop_event.wait(self.interval)

    def stop(self, timeout: float | None = 10) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
