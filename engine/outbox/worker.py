"""`finflow worker`: rq's worker with its scheduler (retries) plus the outbox sweeper.

Jobs run in the worker process itself (rq's SimpleWorker): a job is a short database transaction, and
running it without fork keeps the connection pool; rq's job timeout still applies (SIGALRM). Any number
of workers may run against one database and one Redis: a row is run under its row lock and marked done
in that transaction, and sweepers claim rows with SKIP LOCKED.

Every sweep interval the worker also fires due BPMN timers (engine.timers.fire_due, safe with racing
workers) and anchors the audit trail's days once they are over (engine.audit.anchors): periodic work
runs in a thread started once the worker is dequeuing, i.e. after rq forked its scheduler process, so
the fork does not copy a thread that is using the database.

rq's work loop ends when Redis fails outside its blocking pop (heartbeat, registry maintenance); a
long-running worker then starts a fresh one after a pause instead of exiting, so a Redis restart needs
no supervisor. SIGTERM/SIGINT stop it for good (after the current job).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence

from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker

from engine import events, timers
from engine.audit.anchors import anchor_due
from engine.events import QUEUES
from engine.outbox.policy import Policy
from engine.outbox.sweeper import SweeperThread, sweep

log = logging.getLogger("finflow.outbox")
RESTART_DELAYS = (1, 2, 5, 10, 30)  # seconds before the 1st, 2nd, ... restart of a work loop that broke
STABLE_SECONDS = 300  # a work loop that ran this long resets the restart delays

# What workers (and an embedded API process) do every sweep interval; anchor_due reads one row when
# yesterday is anchored already.
PERIODIC = (sweep, timers.fire_due, anchor_due)


def periodic() -> tuple:
    """PERIODIC plus what the loaded adapters registered (engine.events.every_sweep)."""
    return (*PERIODIC, *events.periodic_work())


class OutboxWorker(SimpleWorker):
    def __init__(self, *args, sweep_interval: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sweeper = SweeperThread(sweep_interval, work=periodic())
        self.stop_requested = threading.Event()

    def request_stop(self, signum, frame):
        self.stop_requested.set()
        super().request_stop(signum, frame)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        if not self.sweeper.is_alive() and not self.stop_requested.is_set():
            self.sweeper.start()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def teardown(self):
        self.sweeper.stop()
        super().teardown()


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
            return SimpleWorker(list(queues), connection=connection).work(burst=True, with_scheduler=True)
        return _work_until_stopped(connection, queues, sweep_interval)
    finally:
        for sig, handler in previous.items():  # rq installs its own; give the caller's back
            signal.signal(sig, handler)


def _work_until_stopped(connection: Redis, queues: Sequence[str], sweep_interval: float | None) -> bool:
    interval = Policy.from_env().sweep_interval if sweep_interval is None else sweep_interval
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
        log.warning("outbox worker: the work loop ended (Redis unavailable?); starting again in %d s", delay)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        stopped.wait(delay)
    return worked
