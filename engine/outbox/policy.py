"""How long delivery waits, retries and trusts the queue: the outbox's timing rules in one place.

* Retries back off exponentially with jitter, so a failing channel is not hammered and many rows that
  failed together do not retry together. After `max_attempts` failed runs a row is dead.
* The lease is how long a row handed to the queue may stay unhandled before the sweeper assumes the
  job was lost (worker killed, Redis flushed) and hands it over again. It is longer than a job may run
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

    @classmethod
    def from_env(cls) -> Policy:
        env = os.environ.get
        return cls(max_attempts=int(env("FINFLOW_OUTBOX_MAX_ATTEMPTS", cls.max_attempts)),
                   base_delay=float(env("FINFLOW_OUTBOX_BASE_DELAY", cls.base_delay)),
                   max_delay=float(env("FINFLOW_OUTBOX_MAX_DELAY", cls.max_delay)),
                   lease=float(env("FINFLOW_OUTBOX_LEASE", cls.lease)),
                   job_timeout=int(env("FINFLOW_OUTBOX_JOB_TIMEOUT", cls.job_timeout)),
                   sweep_interval=float(env("FINFLOW_SWEEP_INTERVAL", cls.sweep_interval)))

    def backoff(self, failures: int, rand: Callable[[], float] = random.random) -> timedelta:
        """Delay before the retry that follows the `failures`-th failed run: "equal jitter", i.e. between
        half and all of base × 2^(failures-1), capped."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(failures - 1, 0))
        return timedelta(seconds=ceiling / 2 + rand() * ceiling / 2)

    @property
    def lease_delta(self) -> timedelta:
        return timedelta(seconds=self.lease)
