"""`finflow status`: embedded mode, a private Redis with one `finflow worker`, and the failures it must
report in one line with a non-zero exit (Redis or the database unreachable), never a traceback."""

from __future__ import annotations

import json

from click.testing import CliRunner
from redis import Redis
from rq import Worker
from sqlalchemy import select, update

from engine.cli import main
from engine.db import transaction
from engine.events import QUEUES
from engine.outbox.models import OutboxMessage
from tests import outbox_support
from tests.helpers import claim, start
from tests.outbox_support import wait_for

# fixtures from tests/outbox_support.py, found by pytest under these names
embedded = outbox_support.embedded
private_redis = outbox_support.private_redis
redis_url = outbox_support.redis_url
workers = outbox_support.workers

EMPLOYEE = "suxiaoyun"


def status(*args: str):
    return CliRunner().invoke(main, ["status", *args])


def make_dead_row() -> None:
    """Needs the adapters loaded (the `app` fixture) for the inbox to subscribe."""
    start("reimbursement", EMPLOYEE, claim())  # the inbox notifies the approver: one outbox row at least
    with transaction() as session:
        first = session.scalar(select(OutboxMessage.id).order_by(OutboxMessage.id).limit(1))
        session.execute(update(OutboxMessage).where(OutboxMessage.id == first).values(
            status="dead", attempts=8, last_error="ConnectionError: 短信网关拒绝连接"))


def test_embedded_mode_screen_and_json(embedded, app):
    make_dead_row()
    screen = status()
    assert screen.exit_code == 0, screen.output
    assert "database   ok" in screen.output and "embedded" in screen.output
    assert "inbox.notify  1" in screen.output and "timers due now: 0" in screen.output
    for queue in QUEUES:
        assert f"  {queue} " in screen.output

    report = json.loads(status("--json").stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["database"]["reachable"] is True
    assert report["database"]["revision"] == report["database"]["latest_revision"] is not None
    assert report["redis"] == {"mode": "embedded", "url": None, "reachable": None, "error": None}
    assert report["workers"] == [] and report["queues"] == []
    channels = next(q for q in report["outbox"]["queues"] if q["queue"] == "channels")
    assert channels["dead"] == 1 and channels["pending"] == 0
    assert report["outbox"]["dead"] == [{"subscription": "inbox.notify", "target": "", "count": 1}]
    assert report["timers_due"] == 0


def test_lists_the_worker_and_queues_with_redis(redis_url, workers):
    process = workers.start(redis_url)
    connection = Redis.from_url(redis_url)
    [worker] = wait_for(lambda: Worker.all(connection=connection), message="the worker to register with rq")

    screen = status()
    assert screen.exit_code == 0, screen.output + workers.logs()
    assert f"redis      ok           {redis_url}" in screen.output
    assert "rq workers: 1" in screen.output and worker.name in screen.output
    report = json.loads(status("--json").stdout)
    assert report["ok"] is True and report["redis"]["reachable"] is True
    [listed] = report["workers"]
    assert listed["name"] == worker.name and listed["pid"] == process.pid
    assert sorted(listed["queues"]) == sorted(QUEUES) and listed["state"] in ("idle", "busy", "started")
    assert listed["last_heartbeat"] is not None
    assert [q["name"] for q in report["queues"]] == list(QUEUES)
    assert all(q["waiting"] >= 0 and q["failed"] == 0 for q in report["queues"])


def clear_error(what: str, masked_url: str) -> dict:
    """`finflow status` fails naming `what` and the masked URL, without the password or a traceback, and
    `--json` still reports; returns that report."""
    result = status()
    assert result.exit_code == 1, result.output
    assert what in result.output and masked_url in result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output
    report = json.loads(status("--json").stdout)
    assert report["ok"] is False and report["problems"]
    return report


def test_unreachable_redis_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    report = clear_error("Redis 不可达", "redis://:***@127.0.0.1:1/0")
    assert report["redis"]["reachable"] is False
    assert report["database"]["reachable"] is True and report["outbox"] is not None  # the rest is still there


def test_unreachable_database_is_a_clear_error(embedded, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://finflow:hunter2@127.0.0.1:1/finflow")
    report = clear_error("数据库不可达", "finflow:***@127.0.0.1:1")
    assert report["database"]["reachable"] is False and report["outbox"] is None
