"""Shared by the outbox and inbox tests: a private Redis, `finflow worker` subprocesses, bounded waiting.

The private redis-server runs on a free port in a temporary directory, so stopping it never touches the
shared Redis on 6379. Worker subprocesses run in their own session (process group) and are killed with
it at the end of the test that started them, so rq's forked scheduler never outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import select

from engine import events
from engine.db import transaction
from engine.outbox import dispatch
from engine.outbox import worker as outbox_worker
from engine.outbox.models import OutboxMessage

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
FINFLOW = Path(sys.executable).parent / "finflow"
WAIT_SECONDS = 30.0


def wait_for(predicate: Callable[[], object], timeout: float = WAIT_SECONDS, interval: float = 0.05,
             message: str = "condition") -> object:
    """Poll until `predicate()` is truthy (returned), failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Redis:
        return Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=10)

    def start(self) -> None:
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115  (kept open by the child)
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--loglevel", "warning"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self._answers, timeout=10, message="the private redis-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(Path(tempfile.mkdtemp(prefix="finflow-redis-")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(private_redis: PrivateRedis, monkeypatch) -> str:
    """REDIS_URL set to an emptied private Redis (running again if a previous test stopped it)."""
    if private_redis.process is None:
        private_redis.start()
    private_redis.client().flushall()
    monkeypatch.setenv("REDIS_URL", private_redis.url)
    monkeypatch.setattr(dispatch, "_paused_until", {})  # no pause left over from an earlier test's outage
    return private_redis.url


@pytest.fixture
def embedded(monkeypatch) -> None:
    """No REDIS_URL: jobs run in this process, right after the commit."""
    monkeypatch.delenv("REDIS_URL", raising=False)


@pytest.fixture
def subscriptions(monkeypatch) -> dict:
    """An empty subscription registry for the test (the previous one comes back afterwards)."""
    registry: dict = {}
    monkeypatch.setattr(events, "_SUBSCRIPTIONS", registry)
    return registry


class Workers:
    """`finflow worker` subprocesses against the test database; all of them are killed at teardown."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.processes: list[subprocess.Popen] = []

    def start(self, redis_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        environment = {**os.environ, "REDIS_URL": redis_url, "FINFLOW_PLUGINS": "tests.plugins_slow",
                       "PYTHONPATH": path, "FINFLOW_TEST_MARKERS": str(self.directory), **(env or {})}
        log = open(self.directory / f"worker-{len(self.processes)}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen([str(FINFLOW), "worker", *args], cwd=ROOT, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal the worker's whole process group (the worker and rq's forked scheduler)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        if sig == signal.SIGKILL:
            process.wait(10)

    def stop(self, process: subprocess.Popen, timeout: float = 20) -> None:
        """Warm shutdown (SIGTERM: finish the current job, stop rq's scheduler), else SIGKILL in time."""
        self.kill(process, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(process)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.directory.glob("worker-*.log")))

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)
            # rq's forked scheduler, should it have outlived its worker: the kernel keeps a group id
            # from being reused while any member lives, so this reaches only our own leftovers.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def drain(redis_url: str) -> bool:
    """Run every queued job in this process (a burst worker, as `finflow worker --burst` does)."""
    return outbox_worker.run(redis_url, burst=True)


def outbox_rows(subscription: str | None = None) -> list[OutboxMessage]:
    with transaction(readonly=True) as session:
        stmt = select(OutboxMessage).order_by(OutboxMessage.id)
        if subscription is not None:
            stmt = stmt.where(OutboxMessage.subscription == subscription)
        return list(session.scalars(stmt))
