"""What bench/outbox_bench.py and bench/events_bench.py share: a fresh bench database, reimbursements
driven through the service layer, `finflow worker` processes, waiting, percentiles and the report's header.

Import it only after putting the checkout on sys.path and setting FINFLOW_DATA_DIR, as the scripts do before
their other imports: it imports the engine, whose configuration reads that variable once, at import.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

if "FINFLOW_DATA_DIR" not in os.environ:
    raise ImportError("bench/common.py: set FINFLOW_DATA_DIR before importing it (engine.config reads it at import)")

import redis  # noqa: E402
from redis_guard import flush_own  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from engine import migrate  # noqa: E402
from engine.config import normalize_database_url  # noqa: E402
from engine.db import Base, after_commit, get_engine, transaction  # noqa: E402
from engine.demo.scenarios import claim  # noqa: E402
from engine.history import Actor  # noqa: E402
from engine.org.directory import load_demo_org  # noqa: E402
from engine.outbox import dispatch  # noqa: E402
from engine.services.deployments import deploy_directory  # noqa: E402
from engine.services.instances import start_instance  # noqa: E402
from engine.services.queries import current_tasks  # noqa: E402
from engine.services.tasks import complete_task  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FINFLOW = Path(sys.executable).parent / "finflow"
STARTER = "suxiaoyun"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: always a measured value, never an interpolated one."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * pct // 100) - 1)] if ordered else float("nan")


def spread(samples: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of latency samples in ms, the figures both reports print (nan when none)."""
    return {"p50": percentile(samples, 50), "p90": percentile(samples, 90), "p99": percentile(samples, 99),
            "max": max(samples, default=float("nan"))}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server the bench starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float) -> bool:
    """Poll every 50 ms until `predicate` holds (True) or `timeout` seconds pass (False); the caller decides
    whether a timeout is fatal."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- set-up -----------------------------------------------------------------------------------------


def use_services(pg_url: str, redis_url: str, flush: bool = False) -> tuple[str, str]:
    """Export the database and Redis URLs for this process's engine and the workers it starts, and check
    Redis first so a missing server fails fast with a hint; returns the normalized database URL and Redis's
    version. `flush` empties the Redis database first (a bench's own database number)."""
    url = normalize_database_url(pg_url)
    os.environ["DATABASE_URL"] = url
    os.environ["REDIS_URL"] = redis_url
    try:
        connection = redis.Redis.from_url(redis_url)
        version = connection.info("server")["redis_version"]
        if flush:
            flush_own(connection, redis_url)
    except redis.RedisError as exc:
        raise SystemExit(f"Redis at {redis_url} is not usable ({exc}); "
                         "start it with scripts/services.sh") from None
    return url, version


def fresh_database(url: str, what: str) -> str:
    """Create the bench database when missing, then rebuild finflow's schema in it from the migrations, so
    every run starts from the same state; `what` names the benchmark in the error messages."""
    url = normalize_database_url(url)
    target = make_url(url)
    if target.get_backend_name() != "postgresql":
        raise SystemExit(f"the {what} benchmark needs PostgreSQL (--pg-url)")
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


def postgres_version(url: str) -> str:
    """The PostgreSQL server's version, for the report's header."""
    with get_engine(url).connect() as connection:
        return connection.scalar(text("SHOW server_version"))


def header(title: str, versions: list[tuple[str, object]]) -> str:
    """The report's first two lines: the machine (with its load) and the software versions, since figures
    mean little without them."""
    return (f"{title} — {platform.platform()}, {os.cpu_count()} CPU, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
            f"Python {platform.python_version()}, " + ", ".join(f"{name} {version}" for name, version in versions))


# -- driving commands -------------------------------------------------------------------------------


class Driver:
    """Reimbursements of 1,200 (start, then 3 approvals) through the service layer, one command per
    transaction; each command's commit time is taken by an after-commit callback registered first, so
    it runs before the outbox hands the command's rows to Redis."""

    tasks_apart = False  # True: read the next tasks in a read-only transaction after the command's own

    def __init__(self, url: str):
        self.url = url
        self.open: list[tuple[str, str]] = []  # (task id, candidate) ready to act on
        self.commits: dict[str, list[tuple[int, float]]] = {}  # instance id -> [(last seq, commit time)]

    def command(self, act: Callable, instance_of: Callable) -> None:
        stamp: dict[str, float] = {}
        with transaction(self.url) as session:
            after_commit(session, lambda: stamp.setdefault("at", time.time()))
            instance = instance_of(act(session))
            instance_id, last_seq = instance.id, instance.last_seq
            ready = [] if self.tasks_apart else _ready_tasks(session, instance_id)
        self.commits.setdefault(instance_id, []).append((last_seq, stamp["at"]))
        if self.tasks_apart:
            with transaction(self.url, readonly=True) as session:
                ready = _ready_tasks(session, instance_id)
        self.open.extend(ready)

    def step(self) -> None:
        """Start an instance, or act on the oldest open task (so instances run to completion)."""
        if self.open:
            task_id, user = self.open.pop(0)
            self.command(lambda s: complete_task(s, Actor(user, "bench"), task_id, "approve", "同意", {}),
                         lambda result: result[1])
        else:
            data = claim("办公", 1200, "采购办公用品")
            self.command(lambda s: start_instance(s, Actor(STARTER, "bench"), "reimbursement", data),
                         lambda instance: instance)

    def commit_time(self, instance_id: str, seq: int) -> float | None:
        """When the command that recorded event `seq` of the instance committed (None: not driven here)."""
        for last_seq, at in self.commits.get(instance_id, []):
            if seq <= last_seq:
                return at
        return None


def _ready_tasks(session: Session, instance_id: str) -> list[tuple[str, str]]:
    """The instance's ready tasks as (task id, first candidate), who the driver acts as next."""
    return [(t.id, t.candidates[0]) for t in current_tasks(session, instance_id) if t.status == "ready"]


def drive_paced(driver: Driver, commands: int, rate: float) -> float:
    """`commands` steps at `rate` per second (not as fast as possible), so latency is measured under a known
    load; returns the seconds the driving took."""
    t0 = time.perf_counter()
    for i in range(commands):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        driver.step()
    return time.perf_counter() - t0


@contextmanager
def jobs_held_back() -> Iterator[None]:
    """Outbox rows recorded without their jobs being enqueued, so a measurement can hand the whole backlog
    over at once."""
    real_enqueue = dispatch.enqueue
    dispatch.enqueue = lambda rows_, db_url=None: [outbox_id for outbox_id, _ in rows_]
    try:
        yield
    finally:
        dispatch.enqueue = real_enqueue


# -- workers ----------------------------------------------------------------------------------------


def worker_env(url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """This process's environment for `finflow worker` children: the bench's database and Redis, and this
    checkout importable ahead of anything else."""
    return {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, **extra,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def start_worker(options: list[str], env: dict[str, str], log_path: Path, nice: int = 0) -> subprocess.Popen:
    """One `finflow worker` writing to its own log, in a new session so that stop_processes reaches the
    processes it forks too; `nice` lowers its CPU priority (and its work horses', which inherit it), as
    `nice -n N finflow worker` or systemd's Nice= would on a host shared with the API."""
    with open(log_path, "ab") as out:
        return subprocess.Popen([str(FINFLOW), "worker", *options], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)


def listening_workers(connection: redis.Redis, pids: set[int]) -> int:
    """How many of these worker processes rq lists as idle, i.e. registered and ready for jobs."""
    return sum(connection.hget(k, "state") == b"idle" and int(connection.hget(k, "pid") or 0) in pids
               for k in connection.smembers("rq:workers"))


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each process's whole group (they were started in sessions of their own), then SIGKILL to
    any group still there after 30 s, so no bench child outlives the run."""
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
