"""`finflow worker`: rq's worker with its scheduler (retries) plus the outbox sweeper.

Jobs run in the worker process itself (rq's SimpleWorker): a job is a short database transaction, and
running it without fork keeps the connection pool; rq's job timeout still applies (SIGALRM). Any number
of workers may run against one database and one Redis: a row is run under its row lock and marked done
in that transaction, and sweepers claim rows with SKIP LOCKED.

Every sweep interval the worker also fires due BPMN timers (engine.timers.fire_due, safe with racing
workers) and anchors the audit trail's days once they are over (engine.audit.anchors): periodic work
runs in a thread started once the worker is dequeuing, i.e. after rq forked its scheduler process, so
the fork does not copy a thread that is using the database.

A worker's death is noticed in seconds, not after the lease: a thread of its own renews the worker's
rq key every quarter of `FINFLOW_OUTBOX_WORKER_TTL` (6 s), with that TTL (rq's would be minutes), even
while a job runs; another thread looks every third of it for started jobs whose worker key is gone, and
for a Redis that lost its data, and has their rows handed over again (engine/outbox/recovery.py).

rq's work loop ends when Redis fails outside its blocking pop (heartbeat, registry maintenance); a
long-running worker then starts a fresh one instead of exiting, so a Redis restart needs no supervisor.
While Redis is down it is probed (PING) every half second, and the worker resumes as soon as it answers;
rq's own reconnect wait inside the blocking pop is capped at a second for the same reason. A loop that
breaks with Redis up (a bug, a misconfiguration) is started again after a pause growing 1, 2, 5, 10, 30 s.
SIGTERM/SIGINT stop it for good (after the current job).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Sequence

from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker, worker_registration

from engine import events, timers
from engine.audit.anchors import anchor_due
from engine.events import QUEUES
from engine.outbox.policy import Policy
from engine.outbox.sweeper import SweeperThread, sweep, watch
from engine.services import rollups

log = logging.getLogger("finflow.outbox")
RESTART_DELAYS = (1, 2, 5, 10, 30)  # seconds before the 1st, 2nd, ... restart of a work loop that broke
STABLE_SECONDS = 300  # a work loop that ran this long resets the restart delays
PROBE_SECONDS = 0.5  # while Redis is down, seconds between PINGs

# What workers (and an embedded API process) do every sweep interval; anchor_due reads one row when
# yesterday is anchored already, fold_sweep one row when no history came in.
PERIODIC = (sweep, timers.fire_due, anchor_due, rollups.fold_sweep)


def periodic() -> tuple:
    """PERIODIC plus what the loaded adapters registered (engine.events.every_sweep)."""
    return (*PERIODIC, *events.periodic_work())


class OutboxWorker(SimpleWorker):
    """rq's in-process worker with a short-lived heartbeat key and, unless `periodic_work` is False (a
    burst run does it once before), the sweeper and the watch for dead workers."""

    max_connection_wait_time = 1.0  # rq's reconnect wait in the blocking pop (its default grows to 60 s)

    def __init__(self, *args, sweep_interval: float | None = None, periodic_work: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        policy = Policy.from_env()
        self.liveness_ttl = max(1, math.ceil(policy.worker_ttl))
        self.heartbeats = Heartbeats(self, policy.heartbeat_interval)
        self.sweeper = SweeperThread(sweep_interval, work=periodic())
        self.watchdog = SweeperThread(policy.watch_interval, work=(watch,), name="outbox-watch")
        self.threads = [self.heartbeats, *((self.sweeper, self.watchdog) if periodic_work else ())]
        self.stop_requested = threading.Event()

    def request_stop(self, signum, frame):
        self.stop_requested.set()
        super().request_stop(signum, frame)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        if not self.stop_requested.is_set():
            for thread in self.threads:
                if not thread.is_alive() and thread.ident is None:
                    thread.start()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        """rq's heartbeat, with the key's TTL capped at the liveness TTL: rq would keep a killed worker's
        key for minutes (the job timeout + 60 s while a job runs), and recovery judges by that key."""
        super().heartbeat(min(timeout or self.liveness_ttl, self.liveness_ttl), pipeline)

    def keep_alive(self) -> None:
        """One beat of the heartbeat thread. A worker whose key is gone although it lives (Redis came back
        empty) registers again, so rq and recovery see it as a worker and not as a dead one's leftover."""
        if not self.connection.exists(self.key):
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, mapping={**self.serialize(), "state": self.get_state()})
                worker_registration.register(self, pipe)
                pipe.expire(self.key, self.liveness_ttl)
                pipe.execute()
        self.heartbeat()

    def teardown(self):
        for thread in self.threads:
            thread.stop()
        super().teardown()


class Heartbeats(threading.Thread):
    """Renews the worker's key every `interval` seconds, also while a job runs in the main thread."""

    def __init__(self, worker: OutboxWorker, interval: float):
        super().__init__(name="outbox-heartbeat", daemon=True)
        self.worker = worker
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.worker.keep_alive()
            except Exception as exc:  # Redis down: the work loop notices and reconnects; keep beating
                log.debug("outbox worker: heartbeat failed: %s", exc)
            if self._stop_event.wait(self.interval):
                return

    def stop(self, timeout: float | None = 10) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)


def run(redis_url: str, queues: Sequence[str] = QUEUES, *, burst: bool = False,
        sweep_interval: float | None = None) -> bool:
    """Work until stopped (SIGTERM/SIGINT: finish the current job, then exit), or, with `burst`, until
    the queues are empty; returns whether any job ran. A burst run does the periodic work once first,
    so overdue rows are in the queues it drains."""
    unknown = set(queues) - set(QUEUES)
    if unknown:
        raise ValueError(f"unknown queue(s) {sorted(unknown)}; use {QUEUES}")
    connection = Redis.from_url(redis_url)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if burst:
            for task in periodic():
                task(None)
            worker = OutboxWorker(list(queues), connection=connection, periodic_work=False)
            return worker.work(burst=True, with_scheduler=True)
        return _work_until_stopped(connection, redis_url, queues, sweep_interval)
    finally:
        for sig, handler in previous.items():  # rq installs its own; give the caller's back
            signal.signal(sig, handler)


def _work_until_stopped(connection: Redis, redis_url: str, queues: Sequence[str],
                        sweep_interval: float | None) -> bool:
    interval = Policy.from_env().sweep_interval if sweep_interval is None else sweep_interval
    probe = Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    stopped = threading.Event()
    worked, failures = False, 0
    while not stopped.is_set():
        worker, began = None, time.monotonic()
        try:
            worker = OutboxWorker(list(queues), connection=connection, sweep_interval=interval)
            worked = worker.work(with_scheduler=True, logging_level="INFO") or worked
        except (RedisError, OSError) as exc:
            log.warning("outbox worker: Redis failed: %s", exc)
        if worker is not None and worker.stop_requested.is_set():
            break
        if time.monotonic() - began > STABLE_SECONDS:
            failures = 0  # it had been working: this is a new outage, start again quickly
        delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
        failures += 1
        log.warning("outbox worker: the work loop ended; starting again once Redis answers (or in %d s)", delay)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        if _pause(probe, delay, stopped):
            failures = 0  # Redis was down and is back: nothing to back off from
            log.warning("outbox worker: Redis answers again; resuming")
    return worked


def _pause(probe: Redis, delay: float, stopped: threading.Event) -> bool:
    """Wait before the next work loop: while Redis is down, PING it every PROBE_SECONDS and return as soon
    as it answers; if it answers all along, wait `delay` (the loop broke for another reason). Returns
    whether Redis had been down."""
    deadline = time.monotonic() + delay
    was_down = False
    while not stopped.is_set():
        up = _answers(probe)
        if up and (was_down or time.monotonic() >= deadline):
            return was_down
        was_down = was_down or not up
        stopped.wait(PROBE_SECONDS)
    return was_down


def _answers(redis: Redis) -> bool:
    try:
        return bool(redis.ping())
    except (RedisError, OSError):
        return False
