"""Recovery in seconds, not after the lease: a worker SIGKILLed in the middle of a job, a Redis restarted
without persistence, and workers waiting for a Redis that came back (engine/outbox/recovery.py).

Real `finflow worker` processes and a private redis-server; the lease stays at its default (300 s), so
every test here would time out if the row waited for it. FINFLOW_OUTBOX_WORKER_TTL is 2 s: a killed
worker's key is gone two seconds after its last heartbeat.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import pytest
from rq import Queue

from engine.outbox.policy import Policy
from tests import outbox_support, plugins_slow
from tests.helpers import claim, start
from tests.outbox_support import FINFLOW, ROOT, outbox_rows, wait_for
from tests.test_outbox_redis import all_done, effects_by_row, idle_workers

private_redis = outbox_support.private_redis
redis_url = outbox_support.redis_url
subscriptions = outbox_support.subscriptions
workers = outbox_support.workers

TTL = {"FINFLOW_OUTBOX_WORKER_TTL": "2"}
RECOVERY_SECONDS = 20.0  # several TTLs and watch intervals; far below the 300 s lease


@pytest.fixture(autouse=True)
def short_worker_ttl(monkeypatch):
    """The test process sweeps with the same TTL as its workers (`finflow outbox sweep` reads it too)."""
    monkeypatch.setenv("FINFLOW_OUTBOX_WORKER_TTL", TTL["FINFLOW_OUTBOX_WORKER_TTL"])
    assert Policy.from_env().lease >= 300  # what recovery must beat


def runs_of(workers, outbox_id: int) -> int:
    return len(list(workers.directory.glob(f"{outbox_id}-*")))


def start_slow_job(redis_url, workers):
    """A worker running the slow handler's first run (it sleeps a minute) of a fresh instance's row."""
    plugins_slow.subscribe_slow()
    busy = workers.start(redis_url, "--queues", "sync", env=TTL)
    start("reimbursement", "suxiaoyun", claim())
    [row] = outbox_rows(plugins_slow.SLOW)
    wait_for(lambda: runs_of(workers, row.id) == 1, message="the slow handler to start")
    return busy, row


def test_a_live_worker_hands_a_killed_workers_job_over_within_seconds(private_redis, redis_url, subscriptions,
                                                                      workers):
    busy, row = start_slow_job(redis_url, workers)
    workers.start(redis_url, "--queues", "sync", env=TTL)
    wait_for(lambda: idle_workers(private_redis) == 1, message="the second worker to listen")

    time.sleep(3 * 2)  # three TTLs: the busy worker's heartbeats keep its job its own while it runs
    assert runs_of(workers, row.id) == 1, workers.logs()
    assert outbox_rows(plugins_slow.SLOW)[0].status == "pending"

    killed_at = time.monotonic()
    workers.kill(busy)
    wait_for(lambda: all_done(plugins_slow.SLOW), timeout=RECOVERY_SECONDS,
             message="the killed worker's row to be sent again by the live worker")
    recovered_in = time.monotonic() - killed_at
    assert runs_of(workers, row.id) == 2, workers.logs()
    assert effects_by_row(plugins_slow.SLOW) == Counter({row.id: 1})  # the first run's effect died with it
    failed = Queue("sync", connection=private_redis.client()).failed_job_registry
    assert len(failed) == 1  # the abandoned job is on record in rq, not silently dropped
    print(f"killed worker's row sent again after {recovered_in:.1f} s (lease {Policy.from_env().lease:.0f} s)")


def test_finflow_outbox_sweep_hands_a_dead_workers_row_over_at_once(private_redis, redis_url, subscriptions,
                                                                     workers):
    busy, row = start_slow_job(redis_url, workers)
    workers.kill(busy)
    time.sleep(3)  # past the TTL: the dead worker's key has expired

    swept = subprocess.run([str(FINFLOW), "outbox", "sweep"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert swept.returncode == 0, swept.stderr
    assert "1 row(s) dispatched" in swept.stdout
    burst = workers.start(redis_url, "--queues", "sync", "--burst", env=TTL)
    assert burst.wait(30) == 0, workers.logs()
    [row] = outbox_rows(plugins_slow.SLOW)
    assert row.status == "done" and runs_of(workers, row.id) == 2
    assert effects_by_row(plugins_slow.SLOW) == Counter({row.id: 1})


def test_rows_handed_to_a_redis_that_restarted_empty_are_sent_on_reconnect(private_redis, redis_url,
                                                                          subscriptions, workers):
    plugins_slow.subscribe_count()
    first = workers.start(redis_url, "--queues", "sync", env=TTL)  # its first sweep marks this Redis
    wait_for(lambda: private_redis.client().exists("finflow:outbox:marker"), message="the sweeper's marker")
    workers.stop(first)
    for amount in (800, 1500, 2600):
        start("reimbursement", "suxiaoyun", claim(amount=amount))
    rows = outbox_rows(plugins_slow.COUNT)
    assert rows and all(r.dispatched_at is not None and r.status == "pending" for r in rows)
    assert Queue("sync", connection=private_redis.client()).count == len(rows)

    private_redis.stop()  # no persistence: the queued jobs are gone, the rows still say "handed over"
    private_redis.start()
    assert Queue("sync", connection=private_redis.client()).count == 0

    workers.start(redis_url, "--queues", "sync", env=TTL)
    wait_for(lambda: all_done(plugins_slow.COUNT), timeout=RECOVERY_SECONDS,
             message="the rows Redis lost to be sent again")
    assert effects_by_row(plugins_slow.COUNT) == Counter({r.id: 1 for r in rows})


def test_a_worker_resumes_within_seconds_of_redis_coming_back(private_redis, redis_url, subscriptions, workers):
    plugins_slow.subscribe_count()
    worker = workers.start(redis_url, "--queues", "sync", env=TTL)
    wait_for(lambda: idle_workers(private_redis) == 1, message="the worker to listen")
    private_redis.stop()
    time.sleep(10)  # long enough for a fixed back-off to have grown to 5 and 10 s

    private_redis.start()
    back_at = time.monotonic()
    wait_for(lambda: idle_workers(private_redis) == 1, timeout=5, message="the worker to listen again")
    resumed_in = time.monotonic() - back_at
    start("reimbursement", "suxiaoyun", claim())
    wait_for(lambda: all_done(plugins_slow.COUNT), timeout=10, message="the new rows to be sent")
    assert worker.poll() is None, workers.logs()
    print(f"worker listening again {resumed_in:.1f} s after Redis came back")
