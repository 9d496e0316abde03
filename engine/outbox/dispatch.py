"""Handing outbox rows to rq, after the commit that wrote them.

With `REDIS_URL` set, a row becomes a job on the Redis queue its subscription names, for `finflow worker`
processes to run. Without it (embedded mode, the demo) the same job runs on an rq queue over an
in-process fakeredis with `is_async=False`: rq calls the job function right away, in this process, so
the code path is the one workers take. Jobs of the `events` queue (sends to webhooks and brokers) run so
on a few background threads instead of the committing thread, so a slow receiver neither holds up the
API response nor the other receivers; `drain_background` waits for them (tests, the CLI before it exits).

A hand-over that fails (Redis down) is logged and the rows are marked undispatched
(`dispatched_at = NULL`); the sweeper hands them over again when Redis is back. For a few seconds after
a failure commands do not try Redis at all, so an unreachable Redis (connect timeout) does not slow
every command down. Nothing here raises to the caller: the state change is committed and must be
reported as done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from functools import lru_cache
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import import_attribute
from sqlalchemy import update
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.db import after_commit, database_url, transaction
from engine.outbox.models import OutboxMessage
from engine.outbox.policy import Policy

log = logging.getLogger("finflow.outbox")

JOB = "engine.outbox.delivery.deliver"  # the one job function; referenced by name so workers import it
FAILED_JOB_TTL = 7 * 24 * 3600  # rq keeps a job that crashed outside the handler (e.g. database down) a week
_PENDING = "outbox_dispatch"  # session.info key: (id, queue) rows to hand over after this commit
PAUSE_AFTER_FAILURE = 5.0  # seconds during which commands leave their rows to the sweeper without trying Redis
_paused_until: dict[str, float] = {}  # Redis URL -> monotonic time until which it is not tried

Row = tuple[int, str]  # (outbox id, queue name)
BACKGROUND_QUEUES = frozenset({"events"})  # embedded mode: run off the committing thread
BACKGROUND_THREADS = 4
_background: ThreadPoolExecutor | None = None
_background_jobs: set[Future] = set()
_background_lock = threading.Lock()


def redis_url() -> str | None:
    """The Redis the job queues live on; None means embedded mode."""
    return Settings.from_env().redis_url


@lru_cache(maxsize=8)
def connection(url: str | None) -> Redis:
    """A client for producers: short timeouts so a Redis outage costs a command milliseconds, not minutes."""
    if url is None:
        import fakeredis

        return fakeredis.FakeRedis()  # one in-process server per process
    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30)


@lru_cache(maxsize=32)
def queue(name: str, url: str | None) -> Queue:
    return Queue(name, connection=connection(url), is_async=url is not None)


def job_options(outbox_id: int) -> dict[str, Any]:
    # Results are not kept: the outbox row is the record of what happened.
    return {"result_ttl": 0, "failure_ttl": FAILED_JOB_TTL, "job_timeout": Policy.from_env().job_timeout,
            "description": f"outbox {outbox_id}"}


def available() -> bool:
    """Whether jobs can be handed over now (always, in embedded mode)."""
    url = redis_url()
    if url is None:
        return True
    try:
        up = bool(connection(url).ping())
    except (RedisError, OSError):
        return False
    _paused_until.pop(url, None)
    return up


def enqueue(rows: Sequence[Row], db_url: str | None = None) -> list[int]:
    """Hand rows to their queues; returns the ids handed over (all, or those before Redis failed).

    `db_url` only travels with in-process jobs (embedded mode): over Redis a job carries nothing but the
    outbox id, and the worker uses the database it is configured with.
    """
    url = redis_url()
    handed: list[int] = []
    if url is None:
        for outbox_id, name in rows:
            run = queue(name, None).enqueue
            if name in BACKGROUND_QUEUES:
                _in_background(run, JOB, outbox_id, db_url, **job_options(outbox_id))
            else:
                run(JOB, outbox_id, db_url, **job_options(outbox_id))
            handed.append(outbox_id)
        return handed
    if time.monotonic() < _paused_until.get(url, 0.0):
        return handed
    by_queue: dict[str, list[int]] = defaultdict(list)
    for outbox_id, name in rows:
        by_queue[name].append(outbox_id)
    try:
        for name, ids in by_queue.items():
            target = queue(name, url)
            target.enqueue_many([Queue.prepare_data(JOB, (i,), **_prepare_options(i)) for i in ids])
            handed.extend(ids)
    except (RedisError, OSError) as exc:
        _paused_until[url] = time.monotonic() + PAUSE_AFTER_FAILURE
        log.warning("outbox: Redis refused %d job(s), left for the sweeper: %s", len(rows) - len(handed), exc)
    return handed


def run_job(queue_name: str, func: str, *args: Any, db_url: str | None = None) -> None:
    """Run `func` (a dotted path, so workers import it) with `args` on a queue, off the caller's thread:
    an rq job over Redis, a background thread in embedded mode (where `db_url` is appended to the
    arguments; over Redis the worker uses the database it is configured with). For adapters that must
    answer fast and do the work later (a WeCom callback). Raises RedisError/OSError if Redis refuses."""
    url = redis_url()
    if url is None:
        _in_background(queue(queue_name, None).enqueue, func, *args, db_url, result_ttl=0)
        return
    queue(queue_name, url).enqueue(func, *args, result_ttl=0, failure_ttl=FAILED_JOB_TTL)


WAKE_TTL = 10  # seconds a wake-up flag outlives a job that never started (lost): then wake-ups queue again
COALESCED_JOB = "engine.outbox.dispatch.run_coalesced"
_ON_THEIR_WAY = frozenset({JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED})


def run_job_once(queue_name: str, func: str, flag: str, *args: Any, db_url: str | None = None) -> bool:
    """Queue `func(*args)` like run_job, unless a run of it is already queued and has not started yet
    (`flag` is set in Redis): the thousand wake-ups of a burst cost one SET each and become a few jobs,
    not a thousand. The job clears the flag before it starts working, so a wake-up that arrives while it
    works queues the next run and nothing committed meanwhile is left behind. False: one was pending.
    Raises RedisError/OSError if Redis refuses (the flag is then cleared again)."""
    redis = connection(redis_url())
    if not redis.set(flag, 1, nx=True, ex=WAKE_TTL):
        return False
    try:
        run_job(queue_name, COALESCED_JOB, flag, func, *args, db_url=db_url)
    except BaseException:
        redis.delete(flag)
        raise
    return True


def run_coalesced(flag: str, func: str, *args: Any) -> Any:
    """The job run_job_once queues: clear the flag, then run `func`."""
    connection(redis_url()).delete(flag)
    return import_attribute(func)(*args)


def run_jobs(queue_name: str, func: str, calls: Sequence[tuple[str, tuple]], db_url: str | None = None) -> None:
    """Queue `func(*args)` for each (job id, args) in one round trip. The id names the job, so
    `jobs_on_their_way` can later tell a job that is only slow from one that was lost. Raises
    RedisError/OSError if Redis refuses."""
    url = redis_url()
    if url is None:
        for job_id, args in calls:
            _in_background(queue(queue_name, None).enqueue, func, *args, db_url, job_id=job_id, result_ttl=0)
        return
    queue(queue_name, url).enqueue_many([Queue.prepare_data(func, args, job_id=job_id, result_ttl=0,
                                                            failure_ttl=FAILED_JOB_TTL) for job_id, args in calls])


def jobs_on_their_way(job_ids: Sequence[str]) -> set[str]:
    """Of `job_ids`, those whose job is queued, scheduled or running: not missing, failed or stopped."""
    if not job_ids:
        return set()
    jobs = Job.fetch_many(list(job_ids), connection=connection(redis_url()))
    return {job.id for job in jobs if job is not None and job.get_status(refresh=False) in _ON_THEIR_WAY}


def _in_background(fn, *args, **kwargs) -> None:
    global _background
    with _background_lock:
        if _background is None:
            _background = ThreadPoolExecutor(max_workers=BACKGROUND_THREADS, thread_name_prefix="finflow-events")
        future = _background.submit(fn, *args, **kwargs)
        _background_jobs.add(future)
    future.add_done_callback(_background_jobs.discard)


def drain_background(timeout: float = 30.0) -> bool:
    """Wait until the embedded background jobs (and the jobs they led to) have run; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with _background_lock:
            pending = set(_background_jobs)
        if not pending:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        wait(pending, timeout=remaining)


def _prepare_options(outbox_id: int) -> dict[str, Any]:
    options = job_options(outbox_id)
    options["timeout"] = options.pop("job_timeout")  # prepare_data's spelling
    return options


def stream_heads(rows: Iterable[tuple[int, str, Hashable | None]]) -> list[Row]:
    """The jobs for (outbox id, queue, stream key or None) rows given in id order: every row that is not
    in a stream, and the first row of each stream, whose job sends the stream's rows in order
    (engine/outbox/stream.py); jobs for the others would find nothing to do."""
    jobs: list[Row] = []
    seen: set[Hashable] = set()
    for outbox_id, name, stream in rows:
        if stream is not None:
            if stream in seen:
                continue
            seen.add(stream)
        jobs.append((outbox_id, name))
    return jobs


def dispatch(rows: Sequence[Row], db_url: str | None = None) -> None:
    """Hand rows over; mark the ones that could not be handed over for the sweeper."""
    handed = set(enqueue(rows, db_url))
    missed = [outbox_id for outbox_id, _ in rows if outbox_id not in handed]
    if missed:
        mark_undispatched(missed, db_url)


def dispatch_after_commit(session: Session, rows: Sequence[Row]) -> None:
    """Hand `rows` over once `session`'s transaction has committed (one callback per transaction)."""
    pending: list[Row] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        db_url = database_url(session)
        after_commit(session, lambda: dispatch(list(pending), db_url))
    pending.extend(rows)


def schedule_retry(outbox_id: int, queue_name: str, delay: timedelta, db_url: str | None = None) -> None:
    """Enqueue the retry on rq's scheduler (workers run it with_scheduler); embedded mode has no scheduler,
    there the sweeper thread picks the row up when it is due (delivery left it undispatched)."""
    url = redis_url()
    if url is None:
        return
    try:
        queue(queue_name, url).enqueue_in(delay, JOB, outbox_id, **job_options(outbox_id))
    except (RedisError, OSError) as exc:
        log.warning("outbox: could not schedule the retry of row %s, left for the sweeper: %s", outbox_id, exc)
        mark_undispatched([outbox_id], db_url)


def mark_undispatched(ids: Sequence[int], db_url: str | None = None) -> None:
    """Let the sweeper take these rows as soon as they are due instead of after the lease."""
    try:
        with transaction(db_url) as session:
            session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids), OutboxMessage.status == "pending")
                            .values(dispatched_at=None))
    except Exception:  # the lease still brings them back, later
        log.exception("outbox: could not mark %d row(s) undispatched", len(ids))
