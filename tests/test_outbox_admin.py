"""Failures: a failing handler backs off, goes dead with its error, and an administrator sends it again
through the API or the CLI. And the admin API's permissions, 404 and 409."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from redis import Redis
from rq import Queue
from sqlalchemy import update

from engine import events
from engine.cli import main
from engine.db import transaction
from engine.outbox.models import OutboxMessage
from engine.outbox.policy import Policy
from engine.outbox.sweeper import sweep
from tests import outbox_support
from tests.helpers import claim, start
from tests.outbox_support import drain, outbox_rows

# fixtures from tests/outbox_support.py, found by pytest under these names
embedded = outbox_support.embedded
private_redis = outbox_support.private_redis
redis_url = outbox_support.redis_url
subscriptions = outbox_support.subscriptions

ADMIN, EMPLOYEE = "zhangwei", "suxiaoyun"


class Flaky:
    """Fails while `failing` is set, like a channel that is down."""

    def __init__(self):
        self.failing = True
        self.runs = 0

    def __call__(self, session, message):
        self.runs += 1
        if self.failing:
            raise ConnectionError("短信网关拒绝连接")


def row(outbox_id: int) -> OutboxMessage:
    with transaction(readonly=True) as session:
        return session.get(OutboxMessage, outbox_id)


def cli(*args):
    return CliRunner().invoke(main, list(args))


def test_failing_handler_backs_off_then_dies_and_an_admin_retries_it(redis_url, subscriptions, app, as_user,
                                                                     monkeypatch):
    monkeypatch.setenv("FINFLOW_OUTBOX_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("FINFLOW_OUTBOX_BASE_DELAY", "10")
    flaky = Flaky()
    events.subscribe("test.flaky", {"instance.started"}, "sync", flaky)
    start("reimbursement", EMPLOYEE, claim())
    [outbox_id] = [r.id for r in outbox_rows("test.flaky")]
    scheduled = Queue("sync", connection=Redis.from_url(redis_url)).scheduled_job_registry
    lease = Policy.from_env().lease_delta

    for attempt in (1, 2, 3):
        before = datetime.now(UTC)
        drain(redis_url)
        after = datetime.now(UTC)
        current = row(outbox_id)
        assert current.status == "pending" and current.attempts == attempt
        assert current.last_error.startswith("ConnectionError: 短信网关拒绝连接")
        ceiling = 10 * 2 ** (attempt - 1)  # exponential: 10 s, 20 s, 40 s, each with jitter down to half
        assert timedelta(seconds=ceiling / 2) <= current.next_attempt_at - before  # failed at or after `before`
        assert current.next_attempt_at - after <= timedelta(seconds=ceiling)  # and at or before `after`
        assert scheduled.count == attempt  # the retry waits on rq's scheduler ...
        # ... and, were it lost, the sweeper sends it once overdue: no sleeping, the sweep is told the time
        assert sweep(now=current.next_attempt_at + lease + timedelta(seconds=1)) == 1
    drain(redis_url)
    dead = row(outbox_id)
    assert dead.status == "dead" and dead.attempts == 4 and flaky.runs == 4
    assert dead.last_error.startswith("ConnectionError: 短信网关拒绝连接")
    assert sweep(now=datetime.now(UTC) + timedelta(days=30)) == 0  # dead rows stay dead

    admin = as_user(ADMIN)
    listed = admin.get("/api/v1/outbox?status=dead").json
    assert listed["meta"]["total"] == 1 and listed["items"][0]["id"] == outbox_id
    assert listed["items"][0]["last_error"].startswith("ConnectionError: 短信网关拒绝连接")
    detail = admin.get(f"/api/v1/outbox/{outbox_id}").json
    assert detail["status"] == "dead" and detail["subscription"] == "test.flaky"
    assert detail["payload"]["event"]["type"] == "instance.started"

    flaky.failing = False  # the channel is back
    retried = admin.post(f"/api/v1/outbox/{outbox_id}/retry")
    assert retried.status_code == 200, retried.json
    assert retried.json["status"] == "pending" and retried.json["attempts"] == 0
    drain(redis_url)
    done = admin.get(f"/api/v1/outbox/{outbox_id}").json
    assert done["status"] == "done" and done["attempts"] == 1 and done["done_at"] and flaky.runs == 5
    again = admin.post(f"/api/v1/outbox/{outbox_id}/retry")
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"


def test_cli_lists_and_retries_dead_rows(redis_url, subscriptions):
    flaky = Flaky()
    events.subscribe("test.flaky", {"instance.started"}, "sync", flaky)
    start("reimbursement", EMPLOYEE, claim())
    [outbox_id] = [r.id for r in outbox_rows("test.flaky")]
    with transaction() as session:  # dead as in the test above, without replaying every attempt
        session.execute(update(OutboxMessage).where(OutboxMessage.id == outbox_id).values(
            status="dead", attempts=8, last_error="ConnectionError: 短信网关拒绝连接\n\nTraceback ..."))

    listed = cli("outbox", "list", "--status", "dead")
    assert listed.exit_code == 0, listed.output
    assert str(outbox_id) in listed.output and "短信网关拒绝连接" in listed.output and "1 of 1" in listed.output
    flaky.failing = False
    retried = cli("outbox", "retry", str(outbox_id))
    assert retried.exit_code == 0 and f"outbox {outbox_id} queued again" in retried.output
    drain(redis_url)
    assert row(outbox_id).status == "done"
    not_dead = cli("outbox", "retry", str(outbox_id))
    assert not_dead.exit_code == 1 and "dead" in not_dead.output
    unknown = cli("outbox", "retry", "999999")
    assert unknown.exit_code == 1 and "999999" in unknown.output
    assert "0 of 0" in cli("outbox", "list", "--status", "dead").output


def test_cli_sweep_and_worker_without_redis(embedded, subscriptions):
    flaky = Flaky()
    events.subscribe("test.flaky", {"instance.started"}, "sync", flaky)
    start("reimbursement", EMPLOYEE, claim())  # embedded: ran and failed right after the commit
    [current] = outbox_rows("test.flaky")
    assert current.attempts == 1 and current.dispatched_at is None and flaky.runs == 1
    flaky.failing = False
    with transaction() as session:  # its retry is due
        session.execute(update(OutboxMessage).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
    swept = cli("outbox", "sweep")
    assert swept.exit_code == 0 and "1 row(s) dispatched" in swept.output
    assert outbox_rows("test.flaky")[0].status == "done"
    worker = cli("worker", "--burst")
    assert worker.exit_code == 1 and "REDIS_URL" in worker.output


def test_admin_api_permissions_not_found_and_conflict(embedded, subscriptions, as_user):
    events.subscribe("test.ok", {"instance.started"}, "sync", lambda session, message: None)
    start("reimbursement", EMPLOYEE, claim())
    [done] = outbox_rows("test.ok")
    assert done.status == "done"
    employee, admin = as_user(EMPLOYEE), as_user(ADMIN)

    for response in (employee.get("/api/v1/outbox"), employee.get(f"/api/v1/outbox/{done.id}"),
                     employee.post(f"/api/v1/outbox/{done.id}/retry"), employee.get("/api/v1/outbox/999999")):
        assert response.status_code == 403, response.json
        assert response.json["error"]["code"] == "forbidden" and set(response.json["error"]) == {
            "code", "message", "details"}
    anonymous = admin.client.get("/api/v1/outbox")
    assert anonymous.status_code == 401 and anonymous.json["error"]["code"] == "unauthorized"

    missing = admin.get("/api/v1/outbox/999999")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    assert missing.json["error"]["details"] == {"outbox_id": 999999}
    assert admin.post("/api/v1/outbox/999999/retry").status_code == 404
    conflict = admin.post(f"/api/v1/outbox/{done.id}/retry")
    assert conflict.status_code == 409 and conflict.json["error"]["details"]["status"] == "done"
    bad = admin.get("/api/v1/outbox?status=lost")
    assert bad.status_code == 422 and "status" in bad.json["error"]["details"]["fields"]

    rows = outbox_rows()  # test.ok's row and, since create_app loaded the adapters, the inbox's
    page = admin.get("/api/v1/outbox?status=done&per_page=1&page=2").json
    assert page["meta"] == {"total": len(rows), "page": 2, "per_page": 1} and len(rows) > 1
    assert [i["id"] for i in page["items"]] == [sorted(r.id for r in rows)[-2]]  # newest first
    assert admin.get("/api/v1/outbox?status=pending").json["meta"]["total"] == 0


def test_worker_refuses_unknown_queues(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    bad = cli("worker", "--queues", "channels,mail")
    assert bad.exit_code == 2 and "unknown queue(s) mail" in bad.output
    assert cli("worker", "--queues", ",").exit_code == 2
