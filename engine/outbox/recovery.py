"""Recovery: rows whose job died with a worker, or with Redis, go back to the queue within seconds.

The lease (policy.py) brings back any lost job, but only minutes later. Two losses are seen sooner:

* **A worker died in the middle of a job** (SIGKILL, out of memory, a lost host). rq keeps, per queue, a
  StartedJobRegistry of the jobs being run, each with the name of its worker (`job.worker_name`), and a
  live worker keeps its key `rq:worker:<name>` from expiring with heartbeats. `finflow worker` beats from
  a thread of its own, every quarter of `FINFLOW_OUTBOX_WORKER_TTL` (6 s), and caps the key's TTL at that
  (rq's own TTLs are minutes): a killed worker's key is gone 6 s after its last beat. A started job whose
  worker key is gone is abandoned. Its outbox row is marked undispatched, the sweep hands it over again,
  and the rq job is moved to the FailedJobRegistry as rq's own (much later) clean-up would do.
* **Redis lost its data** (restarted without persistence, or flushed): every queued job and scheduled
  retry is gone, and the rows handed over just before are only marked as handed over. Sweepers keep a
  marker key in Redis; the first to find it missing sets it again (SET NX, so exactly one process
  recovers) and marks every pending row handed over until then undispatched, except the rows whose job
  is in Redis (handed over again after the restart). A Redis restored from its own persistence brings
  the marker back with its jobs, and nothing is re-sent.

Neither runs a row twice at once. Delivery runs a row under its row lock and marks it done in that
transaction; release skips rows that are locked (PostgreSQL: SKIP LOCKED), so a row a live job is
running stays with it. A stream of an external subscription (engine/outbox/stream.py) is in flight in
the job that claimed it (`claimed_until`); its claim is released only when no live worker runs a job
of that stream and the claim is older than the dead worker's last sign of life. A worker cut off from
Redis for longer than the TTL counts as dead although it may still be sending: its in-flight sends may
then be repeated, with the same ids (delivery is at least once). What recovery cannot see is left to
the lease: a worker that died while Redis was down, a job popped but not yet started.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import DeserializationError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.utils import as_text
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from engine import clock
from engine.db import is_postgres, transaction
from engine.events import QUEUES
from engine.outbox import dispatch
from engine.outbox.models import OutboxMessage
from engine.outbox.policy import Policy

log = logging.getLogger("finflow.outbox")
MARKER = "finflow:outbox:marker"  # present while Redis holds what was handed over to it
BATCH = 500


@dataclass(frozen=True)
class Abandoned:
    """A started job whose worker is dead, as found in its queue's StartedJobRegistry."""

    registry_key: str
    entry: str  # the registry's member: "<job id>:<execution id>"
    score: float
    job: Job
    worker: str
    outbox_id: int | None  # None: not an outbox delivery (left to rq)


@dataclass(frozen=True)
class Recovered:
    """What `recover` released: rows of dead workers' jobs, and whether Redis had lost its data."""

    released: int = 0
    redis_lost: bool = False

    def __bool__(self) -> bool:
        return self.redis_lost or self.released > 0


def recover(database_url: str | None = None) -> Recovered:
    """Release for re-dispatch what a restarted Redis lost and what dead workers were running; a sweep
    then hands it over. Nothing to do in embedded mode (jobs run in the process that commits)."""
    url = dispatch.redis_url()
    if url is None:
        return Recovered()
    redis = dispatch.connection(url)
    lost = redis_lost(redis)
    released = release_lost(redis, database_url) if lost else 0
    return Recovered(released + release_abandoned(redis, database_url), lost)


def redis_lost(redis: Redis) -> bool:
    """Whether Redis lost its data since a sweeper last looked; True in exactly one process per loss,
    the one that sets the marker again (and must then call release_lost)."""
    if redis.exists(MARKER):
        return False
    return bool(redis.set(MARKER, f"{uuid.uuid4().hex} {clock.now().isoformat()}", nx=True))


def release_lost(redis: Redis, database_url: str | None = None) -> int:
    """Mark undispatched every pending row handed over before now whose job is not in Redis (lost with
    its data); returns how many. If it fails, the marker is removed again so that the next sweep retries."""
    try:
        before = clock.now()
        present = outbox_ids_in_redis(redis)
        released = _release_dispatched(database_url, before, present)
    except BaseException:
        redis.delete(MARKER)
        raise
    log.warning("outbox: Redis lost its data (restarted without persistence?); %d row(s) handed over before "
                "it are sent again", released)
    return released


def outbox_ids_in_redis(redis: Redis, queues: Sequence[str] = QUEUES) -> set[int]:
    """The outbox rows that have a job in Redis: queued, being taken, started or scheduled."""
    job_ids: set[str] = set()
    for name in queues:
        queue = Queue(name, connection=redis)
        job_ids.update(queue.get_job_ids())
        job_ids.update(as_text(i) for i in redis.lrange(queue.intermediate_queue_key, 0, -1))
        job_ids.update(queue.started_job_registry.get_job_ids(cleanup=False))
        job_ids.update(queue.scheduled_job_registry.get_job_ids(cleanup=False))
    return {i for job in _fetch(redis, sorted(job_ids)) if job is not None and (i := _outbox_id(job)) is not None}


def release_abandoned(redis: Redis, database_url: str | None = None) -> int:
    """Hand the rows of dead workers' jobs back to the sweeper; returns how many rows were released.

    Each abandoned job is taken off its StartedJobRegistry first: the process whose ZREM removes it is the
    one that recovers it, so concurrent sweepers do not release one stream twice.
    """
    policy = Policy.from_env()
    abandoned, running = abandoned_jobs(redis)
    if not abandoned:
        return 0
    # A claim made by a dead worker is older than its last heartbeat plus one interval, and its heartbeat
    # is at least a TTL old now that its key is gone: a younger claim belongs to a live job.
    claimed_before = clock.now() - timedelta(seconds=policy.worker_ttl - policy.heartbeat_interval)
    mine = [a for a in abandoned if redis.zrem(a.registry_key, a.entry)]
    ids = [a.outbox_id for a in mine if a.outbox_id is not None]
    try:
        released = _release_rows(database_url, ids, running, claimed_before + policy.lease_delta) if ids else 0
    except BaseException:
        for a in mine:  # put them back: the next look tries again
            redis.zadd(a.registry_key, {a.entry: a.score})
        raise
    for a in mine:
        _retire(redis, a)
        log.warning("outbox: worker %s died running job %s (outbox row %s); handed over again", a.worker,
                    a.job.id, a.outbox_id)
    return released


def abandoned_jobs(redis: Redis, queues: Sequence[str] = QUEUES) -> tuple[list[Abandoned], set[int]]:
    """The started jobs of dead workers, and the outbox rows that live workers' jobs are running.

    Redis reads only (a few per queue and per started job), so workers can afford it every few seconds.
    A job whose worker is unknown (a job taken by a worker older than rq's `worker_name`) is not judged.
    """
    entries: list[tuple[str, str, float]] = []
    for name in queues:
        key = StartedJobRegistry(name, connection=redis).key
        entries.extend((key, as_text(member), score) for member, score in redis.zrange(key, 0, -1, withscores=True))
    if not entries:
        return [], set()
    jobs = _fetch(redis, [StartedJobRegistry.parse_job_id(entry) for _, entry, _ in entries])
    started = [(key, entry, score, job, _worker_name(redis, job, entry))
               for (key, entry, score), job in zip(entries, jobs, strict=True) if job is not None]
    names = sorted({worker for *_, worker in started if worker})
    with redis.pipeline(transaction=False) as pipe:
        for worker in names:
            pipe.exists(SimpleWorker.redis_worker_namespace_prefix + worker)
        alive = {worker for worker, exists in zip(names, pipe.execute(), strict=True) if exists}
    abandoned = [Abandoned(key, entry, score, job, worker, _outbox_id(job))
                 for key, entry, score, job, worker in started if worker and worker not in alive]
    running = {i for *_, job, worker in started if worker in alive and (i := _outbox_id(job)) is not None}
    return abandoned, running


def _release_rows(database_url: str | None, ids: Sequence[int], running: set[int], claimed_until: datetime) -> int:
    """Mark these rows undispatched; for a row of a stream, the stream's claim (and rows) too, unless a
    live job works on that stream or the claim was made after the dead worker's last sign of life."""
    o = OutboxMessage
    with transaction(database_url) as session:
        rows = session.execute(select(o.id, o.subscription, o.target, o.instance_id, o.stream_seq)
                               .where(o.id.in_(ids), o.status == "pending")).all()
        plain = [r.id for r in rows if r.stream_seq is None]
        streams = {(r.subscription, r.target, r.instance_id) for r in rows if r.stream_seq is not None}
        if streams and running:
            streams -= _stream_keys(session, running)
        released = _mark_undispatched(session, o.id.in_(plain)) if plain else 0
        for subscription, target, instance_id in sorted(streams):
            in_stream = and_(o.subscription == subscription, o.target == target, o.instance_id == instance_id,
                             o.dispatched_at.is_not(None),
                             or_(o.claimed_until.is_(None), o.claimed_until <= claimed_until))
            released += _mark_undispatched(session, in_stream, release_claims=True)
    return released


def _release_dispatched(database_url: str | None, before: datetime, present: set[int]) -> int:
    """Mark undispatched the pending rows handed over before `before`, except `present`: in batches of
    one short transaction each, walking up the ids."""
    o = OutboxMessage
    released, last = 0, 0
    while True:
        with transaction(database_url) as session:
            stmt = (select(o.id).where(o.id > last, o.status == "pending", o.dispatched_at.is_not(None),
                                       o.dispatched_at <= before).order_by(o.id).limit(BATCH))
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True)
            ids = list(session.scalars(stmt))
            lost = [i for i in ids if i not in present]
            if lost:
                session.execute(update(o).where(o.id.in_(lost)).values(dispatched_at=None))
        if not ids:
            return released
        released, last = released + len(lost), ids[-1]


def _mark_undispatched(session: Session, condition, *, release_claims: bool = False) -> int:
    """Set `dispatched_at` (and `claimed_until`) to NULL on the pending rows matching `condition` that no
    transaction holds: a locked row is being run or handed over by a live process."""
    o = OutboxMessage
    stmt = select(o.id).where(condition, o.status == "pending")
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    ids = list(session.scalars(stmt))
    if ids:
        values = {"dispatched_at": None, "claimed_until": None} if release_claims else {"dispatched_at": None}
        session.execute(update(o).where(o.id.in_(ids)).values(**values))
    return len(ids)


def _stream_keys(session: Session, ids: Iterable[int]) -> set[tuple[str, str, str]]:
    o = OutboxMessage
    return {tuple(r) for r in session.execute(select(o.subscription, o.target, o.instance_id)
                                              .where(o.id.in_(list(ids)), o.stream_seq.is_not(None)))}


def _retire(redis: Redis, abandoned: Abandoned) -> None:
    """Record the dead job as failed, as rq's registry clean-up would: visible, and kept a week, not forever."""
    job = abandoned.job
    reason = f"AbandonedJobError: worker {abandoned.worker} died while running the job"
    if abandoned.outbox_id is not None:
        reason += f"; outbox row {abandoned.outbox_id} was handed over again"
    try:
        with redis.pipeline() as pipe:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            job.failed_job_registry.add(job, ttl=job.failure_ttl or dispatch.FAILED_JOB_TTL, exc_string=reason,
                                        pipeline=pipe)
            pipe.execute()
    except RedisError:
        log.warning("outbox: could not record abandoned job %s as failed", job.id, exc_info=True)


def _fetch(redis: Redis, job_ids: Sequence[str]) -> list[Job | None]:
    return Job.fetch_many(list(job_ids), connection=redis) if job_ids else []


def _worker_name(redis: Redis, job: Job, entry: str) -> str:
    """The worker running `job`: set on the job when it starts, on its execution just before."""
    if job.worker_name:
        return job.worker_name
    name = redis.hget(Execution.from_composite_key(entry, redis).key, "worker_name")
    return as_text(name) if name else ""


def _outbox_id(job: Job) -> int | None:
    """The outbox row an rq job delivers, if it is a delivery job."""
    try:
        if job.func_name != dispatch.JOB or not job.args:
            return None
        outbox_id = job.args[0]
    except DeserializationError:
        return None
    return outbox_id if isinstance(outbox_id, int) else None
