"""Production's shape, end to end: 2 API processes and 2 `finflow worker` processes against one PostgreSQL
and one (private) Redis, 200 instances of the three processes driven concurrently over real HTTP.

Nothing here is mocked or in-process: the API processes are `finflow serve` subprocesses on two ports
(requests alternate between them, so consecutive commands on one instance usually run in different
processes and the warm-workflow cache misses as it would behind a load balancer), the side effects go
through Redis to the workers, and the checks read the database afterwards. What it proves is what the
README's production section promises: processes need no coordination — every instance completes, no task
is decided twice, every instance's history is one gapless sequence and every side effect is delivered.

PostgreSQL only: SQLite's single writer is not the deployment this describes (and serializes everything).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from engine.db import transaction
from engine.models import HistoryEvent, Instance, Task, User
from engine.outbox.models import OutboxMessage
from engine.services.auth import issue_token
from tests import outbox_support
from tests.helpers import claim, contract, payment
from tests.outbox_support import FINFLOW, ROOT, free_port, wait_for

pytestmark = pytest.mark.skipif(
    os.environ.get("FINFLOW_TEST_DB", "sqlite") != "postgres",
    reason="needs PostgreSQL (FINFLOW_TEST_DB=postgres): several processes writing one SQLite file is not a "
           "deployment finflow supports")

# fixtures from tests/outbox_support.py, found by pytest under these names
private_redis = outbox_support.private_redis
redis_url = outbox_support.redis_url
workers = outbox_support.workers

INSTANCES = 200
CLIENT_THREADS = 8
API_PROCESSES = 2
API_THREADS = 4
DRIVE_SECONDS = 240.0  # a hang fails the test instead of blocking the run; the drive takes far less
OUTBOX_SECONDS = 60.0
# Who starts what: the starters the process tests use (the contract's applicant is a reviewer, so the
# countersign also exercises the applicant's exclusion). Small amounts: no second factor, no GM step.
STARTS = (("reimbursement", "suxiaoyun", lambda: claim()),
          ("payment", "suxiaoyun", lambda: payment(1000)),
          ("contract", "zhaoqiang", lambda: contract()))


# -- the processes under test -----------------------------------------------------------------------


class ApiServers:
    """`finflow serve` subprocesses (waitress) on free ports, each in its own session so teardown can kill
    the whole group; their logs are kept for the failure message."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.processes: list[subprocess.Popen] = []
        self.urls: list[str] = []

    def start(self, redis_url: str) -> str:
        port = free_port()
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": path, "FINFLOW_PLUGINS": ""}
        with open(self.directory / f"api-{len(self.processes)}.log", "ab") as log:
            process = subprocess.Popen(
                [str(FINFLOW), "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", str(API_THREADS)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: self._healthy(url, process), timeout=60, message=f"the API process on port {port}")
        self.urls.append(url)
        return url

    @staticmethod
    def _healthy(url: str, process: subprocess.Popen) -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the API process exited with {process.returncode} before answering")
        try:
            return httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.directory.glob("api-*.log")))

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def api_servers(tmp_path: Path, redis_url: str) -> Iterator[ApiServers]:
    servers = ApiServers(tmp_path)
    try:
        for _ in range(API_PROCESSES):
            servers.start(redis_url)
        yield servers
    finally:
        servers.close()


@pytest.fixture
def tokens() -> dict[str, str]:
    """A bearer token for every active user: whoever a task names as its first candidate can act."""
    with transaction() as session:
        users = list(session.scalars(select(User.id).where(User.active.is_(True))))
        return {user: issue_token(session, user, "multiprocess") for user in users}


# -- the client -------------------------------------------------------------------------------------


@dataclass
class Work:
    """One request to make: a start (`task_id` None) or the completion of one ready task."""

    user: str
    process_key: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    task_id: str | None = None


class Clients:
    """Client threads sharing one queue of work. Each response's ready tasks are queued once (a seen-set):
    tasks of one instance that are ready together (the contract's parallel reviews, the countersign) are
    completed by different threads at the same time, so the instance lock is contended for real. Every
    call must succeed; anything else is recorded and fails the test."""

    def __init__(self, urls: list[str], tokens: dict[str, str]):
        self.urls = urls
        self.tokens = tokens
        self.work: queue.Queue[Work] = queue.Queue()
        self.lock = threading.Lock()
        self.outstanding = 0
        self.seen: set[str] = set()
        self.started: list[str] = []
        self.completions = Counter()  # task id -> 200 answers
        self.errors: list[str] = []
        self.turn = itertools.count()

    def put(self, item: Work) -> None:
        with self.lock:
            self.outstanding += 1
        self.work.put(item)

    def run(self, threads: int, deadline: float) -> None:
        pool = [threading.Thread(target=self._loop, args=(deadline,), daemon=True) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(max(0.0, deadline - time.monotonic()) + 5)

    def _loop(self, deadline: float) -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                try:
                    item = self.work.get(timeout=0.1)
                except queue.Empty:
                    with self.lock:
                        if self.outstanding == 0:
                            return
                    continue
                try:
                    self._do(http, item)
                except Exception as exc:  # recorded, so the test reports every failure, not the first
                    with self.lock:
                        self.errors.append(f"{item}: {exc!r}")
                finally:
                    with self.lock:
                        self.outstanding -= 1

    def _do(self, http: httpx.Client, item: Work) -> None:
        base = self.urls[next(self.turn) % len(self.urls)]
        headers = {"Authorization": f"Bearer {self.tokens[item.user]}"}
        if item.task_id is None:
            response = http.post(f"{base}/api/v1/instances", headers=headers,
                                 json={"process_key": item.process_key, "data": item.data})
            expected = 201
        else:
            response = http.post(f"{base}/api/v1/tasks/{item.task_id}/complete", headers=headers,
                                 json={"action": "approve", "comment": "同意", "form_data": {}})
            expected = 200
        if response.status_code != expected:
            raise AssertionError(f"{response.status_code} {response.text[:300]}")
        body = response.json()
        instance = body if item.task_id is None else body["instance"]
        with self.lock:
            if item.task_id is None:
                self.started.append(instance["id"])
            else:
                self.completions[item.task_id] += 1
        self.queue_ready(instance)

    def queue_ready(self, instance: dict[str, Any]) -> None:
        """Queue each ready task of the instance not queued before, as its first candidate."""
        for task in instance["current_tasks"]:
            if task["status"] != "ready":
                continue
            with self.lock:
                if task["id"] in self.seen:
                    continue
                self.seen.add(task["id"])
            self.put(Work(user=task["candidates"][0], task_id=task["id"]))


def drive(clients: Clients) -> None:
    """Queue the 200 starts (the three processes in turn) and let the client threads run them to the end."""
    for i in range(INSTANCES):
        process_key, starter, data = STARTS[i % len(STARTS)]
        clients.put(Work(user=starter, process_key=process_key, data=data()))
    clients.run(CLIENT_THREADS, time.monotonic() + DRIVE_SECONDS)


# -- what the database says afterwards --------------------------------------------------------------


def unfinished(ids: list[str]) -> dict[str, str]:
    with transaction(readonly=True) as session:
        rows = session.execute(select(Instance.id, Instance.status).where(Instance.id.in_(ids)))
        return {iid: status for iid, status in rows if status != "completed"}


def decisions_per_task() -> tuple[Counter, set[str]]:
    """task.completed events per task id, and the ids of the task rows that are completed."""
    with transaction(readonly=True) as session:
        decided = Counter(session.scalars(select(HistoryEvent.task_id).where(HistoryEvent.type == "task.completed")))
        completed = set(session.scalars(select(Task.id).where(Task.status == "completed")))
    return decided, completed


def history_gaps() -> dict[str, list[int]]:
    """Instances whose history seq numbers are not exactly 1..n (each with its seq numbers)."""
    with transaction(readonly=True) as session:
        seqs: dict[str, list[int]] = {}
        for iid, seq in session.execute(select(HistoryEvent.instance_id, HistoryEvent.seq)
                                        .order_by(HistoryEvent.instance_id, HistoryEvent.seq)):
            seqs.setdefault(iid, []).append(seq)
        last = dict(session.execute(select(Instance.id, Instance.last_seq)).all())
    return {iid: s for iid, s in seqs.items() if s != list(range(1, len(s) + 1)) or last.get(iid) != len(s)}


def outbox_statuses() -> Counter:
    with transaction(readonly=True) as session:
        return Counter(dict(session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
                            .all()))


# -- the test ---------------------------------------------------------------------------------------


def test_two_api_processes_and_two_workers_drive_200_instances_consistently(api_servers, workers, redis_url,
                                                                          tokens):
    for _ in range(2):
        workers.start(redis_url, env={"FINFLOW_PLUGINS": ""})
    clients = Clients(api_servers.urls, tokens)
    drive(clients)
    logs = f"\n{api_servers.logs()}\n{workers.logs()}"

    assert clients.errors == [], f"{len(clients.errors)} failed calls, first: {clients.errors[:5]}{logs}"
    assert len(clients.started) == INSTANCES
    assert unfinished(clients.started) == {}

    decided, completed = decisions_per_task()
    assert set(clients.completions) == completed  # each task the clients completed, and no other, is done
    assert set(clients.completions.values()) == {1}
    assert {task for task, n in decided.items() if n != 1} == set()  # no task decided twice
    assert set(decided) == completed  # one decision per completed task row, none for an open one

    assert history_gaps() == {}

    def outbox_settled() -> bool:
        statuses = outbox_statuses()
        return bool(statuses) and set(statuses) == {"done"}

    try:
        wait_for(outbox_settled, timeout=OUTBOX_SECONDS, interval=0.5, message="every outbox row to be done")
    except AssertionError:
        raise AssertionError(f"outbox rows by status: {dict(outbox_statuses())}{logs}") from None
