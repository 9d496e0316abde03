"""The sweeper: re-dispatches pending rows whose job never came, so a lost hand-over is only a delay.

A row is due for the sweeper when it is pending and either
* undispatched (`dispatched_at IS NULL`: Redis refused it, or embedded mode waits for a retry) and its
  `next_attempt_at` has come, or
* dispatched but still pending a lease after `next_attempt_at`: the process crashed between commit and
  enqueue, a worker died mid-job, Redis lost the job, the scheduler never fired the retry.

The lease is the last resort. Before claiming, a sweep asks engine.outbox.recovery for the rows whose
job died with its worker (seconds after the worker's last heartbeat) or with a Redis that lost its
data, and marks them undispatched, so they are claimed at once; `finflow outbox sweep` does the same.
Workers also `watch` every few seconds: Redis reads only, and a sweep when they find something.

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

from redis.exceptions import RedisError
from sqlalchemy import and_, or_, select, update

from engine import clock
from engine.db import is_postgres, transaction
from engine.outbox import dispatch, recovery
from engine.outbox.models import OutboxMessage
from engine.outbox.policy import Policy

log = logging.getLogger("finflow.outbox")
BATCH = 500


def sweep(database_url: str | None = None, *, now: datetime | None = None, batch: int = BATCH,
          max_batches: int | None = None, recover: bool = True) -> int:
    """Re-dispatch every due row (in batches), after recovering the rows of dead workers and of a Redis
    that lost its data (unless `recover` is False: the caller just did); returns how many were handed to
    the queue."""
    if not dispatch.available():
        log.warning("outbox: Redis is unreachable; the sweep waits for it")
        return 0
    if recover:
        try:
            recovery.recover(database_url)
        except (RedisError, OSError) as exc:  # Redis went away meanwhile: the lease is still there
            log.warning("outbox: recovery of lost jobs failed: %s", exc)
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


def watch(database_url: str | None = None) -> int:
    """What workers do every few seconds between sweeps: look for dead workers' jobs and a Redis that
    lost its data (Redis reads only), and sweep at once when there is something to hand over again;
    returns how many rows were handed over. Nothing in embedded mode or while Redis is unreachable."""
    if dispatch.redis_url() is None or not dispatch.available():
        return 0
    if not recovery.recover(database_url):
        return 0
    return sweep(database_url, recover=False)


class SweeperThread(threading.Thread):
    """Runs periodic work every `interval` seconds until stopped: in workers, and in `finflow serve` in
    embedded mode. The work is the outbox sweep unless told otherwise (workers add due timers, and run a
    second one that watches for dead workers)."""

    def __init__(self, interval: float | None = None, database_url: str | None = None,
                 work: Sequence[Callable[[str | None], object]] = (sweep,), name: str = "outbox-sweeper"):
        super().__init__(name=name, daemon=True)
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
