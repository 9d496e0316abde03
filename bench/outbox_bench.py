"""finflow outbox benchmark: side effects dispatched and handled per second by 1 and 2 `finflow worker`
processes on a real Redis, and the latency from a command's commit to its side effect being handled.

    python bench/outbox_bench.py [--rows N] [--commands N] [--rate R] [--workers 1,2]

The side effect is the shipped one: adapters/inbox's in-app notifications (inbox.notify on the
`channels` queue), for reimbursements driven through the service layer on PostgreSQL. Figures are
printed, never asserted. See bench/README.md ("Outbox benchmark").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get("FINFLOW_OUTBOX_BENCH_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/finflow_outbox_bench")
REDIS_URL = os.environ.get("FINFLOW_OUTBOX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
WORKDIR = Path(tempfile.mkdtemp(prefix="finflow-outbox-bench-"))
# The engine (and the workers, which inherit this environment) must use the bench's database and Redis.
os.environ["FINFLOW_DATA_DIR"] = str(WORKDIR)

import redis  # noqa: E402
import rq  # noqa: E402
import sqlalchemy  # noqa: E402
from common import (  # noqa: E402 (bench/, the script's directory, is on sys.path)
    Driver,
    drive_paced,
    fresh_database,
    header,
    jobs_held_back,
    listening_workers,
    postgres_version,
    spread,
    start_worker,
    stop_processes,
    use_services,
    wait_until,
    worker_env,
)
from rq import Queue  # noqa: E402
from sqlalchemy import func, select, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import adapters  # noqa: E402
from adapters.inbox.models import Notification  # noqa: E402
from engine.db import transaction  # noqa: E402
from engine.events import QUEUES  # noqa: E402
from engine.outbox import dispatch  # noqa: E402
from engine.outbox.models import OutboxMessage  # noqa: E402

WAIT_SECONDS = 300
WARMUP_COMMANDS = 12  # per worker, before each latency run


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- set-up -----------------------------------------------------------------------------------------


def empty_queues(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    for name in QUEUES:
        queue = Queue(name, connection=connection)
        queue.empty()
        for job_id in queue.scheduled_job_registry.get_job_ids():
            queue.scheduled_job_registry.remove(job_id, delete_job=True)


# -- workers ----------------------------------------------------------------------------------------


class Workers:
    def __init__(self, count: int, url: str, redis_url: str):
        env = worker_env(url, redis_url)
        self.processes = [start_worker(["--sweep-interval", "3600"], env, WORKDIR / f"worker-{count}-{i}.log")
                          for i in range(count)]
        connection = redis.Redis.from_url(redis_url)
        pids = {p.pid for p in self.processes}
        wait_for(lambda: listening_workers(connection, pids) == count, f"{count} worker(s) to listen")

    def stop(self) -> None:
        stop_processes(self.processes)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT_SECONDS) -> None:
    if not wait_until(predicate, timeout):
        raise SystemExit(f"timed out waiting for {what}; worker logs in {WORKDIR}")


def counts(url: str) -> tuple[int, int]:
    with transaction(url, readonly=True) as session:
        done = session.scalar(select(func.count()).where(OutboxMessage.status == "done")) or 0
        total = session.scalar(select(func.count()).select_from(OutboxMessage)) or 0
    return done, total


# -- the two measurements ---------------------------------------------------------------------------


def build_backlog(url: str, rows: int) -> int:
    """Commands until at least `rows` outbox rows exist, with Redis kept out of it (the jobs are enqueued
    by the measurement itself, all at once)."""
    with jobs_held_back():
        driver = Driver(url)
        while counts(url)[1] < rows:
            for _ in range(20):
                driver.step()
    return counts(url)[1]


def reset_backlog(url: str) -> None:
    with transaction(url) as session:
        session.execute(update(OutboxMessage).values(status="pending", attempts=0, done_at=None, last_error=None,
                                                     dispatched_at=datetime.now(UTC),
                                                     next_attempt_at=datetime.now(UTC)))
        session.execute(Notification.__table__.delete())


def throughput(url: str, redis_url: str, count: int) -> dict[str, float]:
    reset_backlog(url)
    empty_queues(redis_url)
    workers = Workers(count, url, redis_url)
    try:
        with transaction(url, readonly=True) as session:
            rows = [tuple(r) for r in session.execute(select(OutboxMessage.id, OutboxMessage.queue))]
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        dispatch.enqueue(rows)
        enqueue_seconds = time.perf_counter() - t0
        wait_for(lambda: counts(url)[0] == len(rows), "the backlog to drain")
    finally:
        workers.stop()
    with transaction(url, readonly=True) as session:
        last = session.scalar(select(func.max(OutboxMessage.done_at)))
        notified = session.scalar(select(func.count()).select_from(Notification))
    seconds = (last - started).total_seconds()
    return {"rows": len(rows), "seconds": seconds, "per_second": len(rows) / seconds,
            "enqueue_ms": enqueue_seconds * 1000, "notifications": notified}


def latency(url: str, redis_url: str, count: int, commands: int, rate: float) -> dict[str, float]:
    empty_queues(redis_url)
    with transaction(url) as session:  # only this run's rows count
        session.execute(OutboxMessage.__table__.delete())
        session.execute(Notification.__table__.delete())
    workers = Workers(count, url, redis_url)
    driver = Driver(url)
    try:
        warmup = Driver(url)  # untimed: the workers' first jobs open connections and fill caches
        for _ in range(WARMUP_COMMANDS * count):
            warmup.step()
        wait_for(lambda: counts(url)[0] == counts(url)[1], "the warm-up side effects")
        drive_seconds = drive_paced(driver, commands, rate)
        total = counts(url)[1]
        wait_for(lambda: counts(url)[0] == total, "the side effects to be handled")
    finally:
        workers.stop()
    samples = []
    with transaction(url, readonly=True) as session:
        for instance_id, seq, done_at in session.execute(
                select(OutboxMessage.instance_id, OutboxMessage.event_seq, OutboxMessage.done_at)):
            committed = driver.commit_time(instance_id, seq)
            if committed is not None:
                samples.append((done_at.timestamp() - committed) * 1000)
    return {"commands": commands, "achieved_rate": commands / drive_seconds, "rows": len(samples), **spread(samples)}


# -- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000, help="side effects in the throughput backlog")
    parser.add_argument("--commands", type=int, default=400, help="commands driven in each latency run")
    parser.add_argument("--rate", type=float, default=20.0, help="commands per second in the latency runs")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()
    counts_to_run = [int(n) for n in args.workers.split(",") if n.strip()]

    url, redis_version = use_services(args.pg_url, args.redis_url)
    log(f"setting up {make_url(url).render_as_string(hide_password=True)} and {args.redis_url}")
    fresh_database(url, "outbox")
    adapters.load_all()
    pg_version = postgres_version(url)

    log(f"building a backlog of {args.rows} side effects")
    backlog = build_backlog(url, args.rows)
    results = []
    for count in counts_to_run:
        log(f"throughput: {backlog} side effects, {count} worker(s)")
        results.append((count, throughput(url, args.redis_url, count)))
    latencies = []
    for count in counts_to_run:
        log(f"latency: {args.commands} commands at {args.rate:g}/s, {count} worker(s)")
        latencies.append((count, latency(url, args.redis_url, count, args.commands, args.rate)))

    print(header("finflow outbox benchmark", [("rq", rq.__version__), ("redis-py", redis.__version__),
                                              ("SQLAlchemy", sqlalchemy.__version__), ("PostgreSQL", pg_version),
                                              ("Redis", redis_version)]))
    print("side effect: inbox.notify (in-app notifications) per history event; each is one rq job and one "
          "transaction (lock row, insert notifications, mark done)\n")
    print("throughput: a backlog enqueued at once, drained by N workers (SimpleWorker, one process each)")
    print(f"{'workers':>7}  {'side effects':>12}  {'seconds':>8}  {'handled/s':>9}  {'enqueue ms':>10}  "
          f"{'notifications':>13}")
    for count, r in results:
        print(f"{count:>7}  {r['rows']:>12}  {r['seconds']:>8.2f}  {r['per_second']:>9.0f}  "
              f"{r['enqueue_ms']:>10.0f}  {r['notifications']:>13}")
    print(f"\nlatency: commit of a command → its side effect handled (outbox done_at), commands paced at "
          f"{args.rate:g}/s")
    print(f"{'workers':>7}  {'commands':>8}  {'cmd/s':>6}  {'side effects':>12}  {'p50 ms':>7}  {'p90 ms':>7}  "
          f"{'p99 ms':>7}  {'max ms':>7}")
    for count, r in latencies:
        print(f"{count:>7}  {r['commands']:>8}  {r['achieved_rate']:>6.1f}  {r['rows']:>12}  {r['p50']:>7.1f}  "
              f"{r['p90']:>7.1f}  {r['p99']:>7.1f}  {r['max']:>7.1f}")
    log(f"worker logs: {WORKDIR}")


if __name__ == "__main__":
    main()
