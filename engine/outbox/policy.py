"""How long delivery waits, retries and trusts the queue: the outbox's timing rules in one place.

* Retries back off exponentially with jitter, so a failing channel is not hammered and many rows that
  failed together do not retry together. After `max_attempts` failed runs a row is dead.
* A worker counts as dead `worker_ttl` seconds after its last heartbeat (it beats every quarter of that):
  the rows of its jobs are handed over again then (engine/outbox/recovery.py), and workers look for dead
  ones every third of it. Short, because a killed worker's side effects wait that long; long enough that
  a busy but live worker never misses it (its heartbeats come from a thread of their own).
* The lease is the last resort: how long a row handed to the queue may stay unhandled before the sweeper
  assumes the job was lost in a way recovery cannot see (a crash between commit and enqueue, a job lost in
  a Redis that kept its other data) and hands it over again. It is longer than a job may run
  (`job_timeout`), so a slow but live job is not doubled by the sweeper; a doubled job would be harmless
  anyway, because delivery is keyed by outbox id.

Defaults can be changed with environment variables (read when used, so tests and operators can set them).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 8  # failed runs before a row is dead: 10 s, 20 s, ... about 21 minutes in all
    base_delay: float = 10.0  # seconds before the first retry
    max_delay: float = 3600.0  # cap of one delay
    lease: float = 300.0  # seconds a dispatched row may stay unhandled before the sweeper re-dispatches it
    job_timeout: int = 120  # rq kills a handler running longer than this (it then counts as failed)
    sweep_interval: float = 10.0  # seconds between sweeps in workers and the embedded sweeper thread
    worker_ttl: float = 6.0  # seconds without a heartbeat after which a worker is dead and its jobs abandoned

    @classmethod
    def from_env(cls) -> Policy:
        env = os.environ.get
        return cls(max_attempts=int(env("FINFLOW_OUTBOX_MAX_ATTEMPTS", cls.max_attempts)),
                   base_delay=float(env("FINFLOW_OUTBOX_BASE_DELAY", cls.base_delay)),
                   max_delay=float(env("FINFLOW_OUTBOX_MAX_DELAY", cls.max_delay)),
                   lease=float(env("FINFLOW_OUTBOX_LEASE", cls.lease)),
                   job_timeout=int(env("FINFLOW_OUTBOX_JOB_TIMEOUT", cls.job_timeout)),
                   sweep_interval=float(env("FINFLOW_SWEEP_INTERVAL", cls.sweep_interval)),
                   worker_ttl=max(1.0, float(env("FINFLOW_OUTBOX_WORKER_TTL", cls.worker_ttl))))

    def backoff(self, failures: int, rand: Callable[[], float] = random.random) -> timedelta:
        """Delay before the retry that follows the `failures`-th failed run: "equal jitter", i.e. between
        half and all of base × 2^(failures-1), capped."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(failures - 1, 0))
        return timedelta(seconds=ceiling / 2 + rand() * ceiling / 2)

    @property
    def lease_delta(self) -> timedelta:
        return timedelta(seconds=self.lease)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between a worker's heartbeats: four chances to renew its key before it expires."""
        return self.worker_ttl / 4

    @property
    def watch_interval(self) -> float:
        """Seconds between a worker's looks for dead workers and a restarted Redis (Redis reads only)."""
        return self.worker_ttl / 3
