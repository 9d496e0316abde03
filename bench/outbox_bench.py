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
import platform
import signal
import subprocess
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
from rq import Queue  # noqa: E402
from sqlalchemy import create_engine, func, select, text, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import adapters  # noqa: E402
from adapters.inbox.models import Notification  # noqa: E402
from engine import migrate  # noqa: E402
from engine.config import normalize_database_url  # noqa: E402
from engine.db import Base, after_commit, get_engine, transaction  # noqa: E402
from engine.events import QUEUES  # noqa: E402
from engine.history import Actor  # noqa: E402
from engine.org.directory import load_demo_org  # noqa: E402
from engine.outbox import dispatch  # noqa: E402
from engine.outbox.models import OutboxMessage  # noqa: E402
from engine.services.deployments import deploy_directory  # noqa: E402
from engine.services.instances import start_instance  # noqa: E402
from engine.services.queries import current_tasks  # noqa: E402
from engine.services.tasks import complete_task  # noqa: E402

FINFLOW = Path(sys.executable).parent / "finflow"
CLAIM = {"category": "办公", "amount": 1200, "reason": "采购办公用品",
         "invoices": [{"number": "044031900111", "amount": 1200, "date": "2026-11-02"}]}
STARTER = "suxiaoyun"
WAIT_SECONDS = 300
WARMUP_COMMANDS = 12  # per worker, before each latency run


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * pct // 100) - 1)] if ordered else float("nan")


# -- set-up -----------------------------------------------------------------------------------------


def fresh_database(url: str) -> str:
    """Create the bench database when missing, then rebuild finflow's schema in it from the migrations."""
    url = normalize_database_url(url)
    target = make_url(url)
    if target.get_backend_name() != "postgresql":
        raise SystemExit("the outbox benchmark needs PostgreSQL (--pg-url)")
    if target.database in ("test", "postgres"):
        raise SystemExit(f"refusing to drop tables in the {target.database!r} database; use a bench database")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if not connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}):
                connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()
    engine = get_engine(url)
    Base.metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    migrate.upgrade(url)
    with transaction(url) as session:
        load_demo_org(session)
        deploy_directory(session, ROOT / "processes", Actor(None, "cli"))
    return url


def empty_queues(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    for name in QUEUES:
        queue = Queue(name, connection=connection)
        queue.empty()
        for job_id in queue.scheduled_job_registry.get_job_ids():
            queue.scheduled_job_registry.remove(job_id, delete_job=True)


# -- driving commands -------------------------------------------------------------------------------


class Driver:
    """Reimbursements of 1,200 (start, then 3 approvals) through the service layer, one command per
    transaction; each command's commit time is taken by an after-commit callback registered first, so
    it runs before the outbox hands the command's rows to Redis."""

    def __init__(self, url: str):
        self.url = url
        self.commits: dict[str, list[tuple[int, float]]] = {}  # instance id -> [(last seq, commit time)]
        self.open: list[tuple[str, str, str]] = []  # (instance id, task id, candidate) ready to act on

    def command(self, act: Callable, instance_of: Callable) -> None:
        stamp: dict[str, float] = {}
        with transaction(self.url) as session:
            after_commit(session, lambda: stamp.setdefault("at", time.time()))
            instance = instance_of(act(session))
            instance_id, last_seq = instance.id, instance.last_seq
            ready = [(instance_id, t.id, t.candidates[0]) for t in current_tasks(session, instance_id)
                     if t.status == "ready"]
        self.commits.setdefault(instance_id, []).append((last_seq, stamp["at"]))
        self.open.extend(ready)

    def step(self) -> None:
        """Start an instance, or act on the oldest open task (so instances run to completion)."""
        if self.open:
            instance_id, task_id, user = self.open.pop(0)
            self.command(lambda s: complete_task(s, Actor(user, "bench"), task_id, "approve", "同意", {}),
                         lambda result: result[1])
        else:
            self.command(lambda s: start_instance(s, Actor(STARTER, "bench"), "reimbursement", CLAIM),
                         lambda instance: instance)

    def commit_time(self, instance_id: str, seq: int) -> float | None:
        for last_seq, at in self.commits.get(instance_id, []):
            if seq <= last_seq:
                return at
        return None


# -- workers ----------------------------------------------------------------------------------------


class Workers:
    def __init__(self, count: int, url: str, redis_url: str):
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url,
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self.processes = []
        for i in range(count):
            with open(WORKDIR / f"worker-{count}-{i}.log", "ab") as out:
                self.processes.append(subprocess.Popen(
                    [str(FINFLOW), "worker", "--sweep-interval", "3600"], cwd=ROOT, env=env, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True))
        connection = redis.Redis.from_url(redis_url)
        wait_for(lambda: sum(connection.hget(k, "state") == b"idle" and int(connection.hget(k, "pid") or 0)
                             in {p.pid for p in self.processes} for k in connection.smembers("rq:workers"))
                 == count, f"{count} worker(s) to listen")

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}; worker logs in {WORKDIR}")
        time.sleep(0.05)


def counts(url: str) -> tuple[int, int]:
    with transaction(url, readonly=True) as session:
        done = session.scalar(select(func.count()).where(OutboxMessage.status == "done")) or 0
        total = session.scalar(select(func.count()).select_from(OutboxMessage)) or 0
    return done, total


# -- the two measurements ---------------------------------------------------------------------------


def build_backlog(url: str, rows: int) -> int:
    """Commands until at least `rows` outbox rows exist, with Redis kept out of it (the jobs are enqueued
    by the measurement itself, all at once)."""
    real_enqueue = dispatch.enqueue
    dispatch.enqueue = lambda rows_, db_url=None: [outbox_id for outbox_id, _ in rows_]  # hold the jobs back
    try:
        driver = Driver(url)
        while counts(url)[1] < rows:
            for _ in range(20):
                driver.step()
    finally:
        dispatch.enqueue = real_enqueue
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
        t0 = time.perf_counter()
        for i in range(commands):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            driver.step()
        drive_seconds = time.perf_counter() - t0
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
    return {"commands": commands, "achieved_rate": commands / drive_seconds, "rows": len(samples),
            "p50": percentile(samples, 50), "p90": percentile(samples, 90), "p99": percentile(samples, 99),
            "max": max(samples) if samples else float("nan")}


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

    url = normalize_database_url(args.pg_url)
    os.environ["DATABASE_URL"] = url
    os.environ["REDIS_URL"] = args.redis_url
    try:
        redis_version = redis.Redis.from_url(args.redis_url).info("server")["redis_version"]
    except redis.RedisError as exc:
        raise SystemExit(f"Redis at {args.redis_url} is not usable ({exc}); "
                         "start it with scripts/services.sh") from None
    log(f"setting up {make_url(url).render_as_string(hide_password=True)} and {args.redis_url}")
    fresh_database(url)
    adapters.load_all()
    with get_engine(url).connect() as connection:
        pg_version = connection.scalar(text("SHOW server_version"))

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

    print(f"finflow outbox benchmark — {platform.platform()}, {os.cpu_count()} CPU, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"Python {platform.python_version()}, rq {rq.__version__}, redis-py {redis.__version__}, "
          f"SQLAlchemy {sqlalchemy.__version__}, PostgreSQL {pg_version}, Redis {redis_version}")
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
