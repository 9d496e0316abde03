"""Embedded mode (no REDIS_URL, the demo): side effects run in-process, through rq on fakeredis, right
after the commit; retries are run by the sweeper thread `finflow serve` starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from engine import events
from engine.db import transaction
from engine.outbox import dispatch
from engine.outbox.models import OutboxMessage
from engine.outbox.sweeper import SweeperThread
from tests import outbox_support
from tests.helpers import claim, start
from tests.outbox_support import outbox_rows, wait_for

# fixtures from tests/outbox_support.py, found by pytest under these names
embedded = outbox_support.embedded
subscriptions = outbox_support.subscriptions


def test_notifications_arrive_in_process_with_the_api_response(embedded, as_user):
    applicant, manager = as_user("suxiaoyun"), as_user("guoxin")
    created = applicant.post("/api/v1/instances", json={"process_key": "reimbursement", "business_key": "BX-EMB-1",
                                                        "data": claim(amount=1200)})
    assert created.status_code == 201
    inbox = manager.get("/api/v1/notifications").json
    assert [n["title"] for n in inbox["items"]] == ["待审批：费用报销 BX-EMB-1"]
    [task] = created.json["current_tasks"]
    assert inbox["items"][0]["task_id"] == task["id"] and inbox["items"][0]["instance_id"] == created.json["id"]

    manager.post(f"/api/v1/tasks/{task['id']}/complete", json={"action": "approve", "comment": "同意"})
    news = applicant.get("/api/v1/notifications").json["items"]
    assert [n["title"] for n in news] == ["直属上级审批已同意：费用报销 BX-EMB-1"]
    assert {r.status for r in outbox_rows()} == {"done"}
    assert dispatch.redis_url() is None and not dispatch.queue("channels", None).is_async  # the rq code path


def test_the_sweeper_thread_runs_retries_in_embedded_mode(embedded, subscriptions):
    runs = []

    def flaky(session, message):
        runs.append(message.attempt)
        if len(runs) == 1:
            raise TimeoutError("OA 接口超时")

    events.subscribe("test.flaky", {"instance.started"}, "sync", flaky)
    start("reimbursement", "suxiaoyun", claim())
    [row] = outbox_rows()
    assert runs == [1] and row.attempts == 1 and row.status == "pending"
    assert row.dispatched_at is None and row.next_attempt_at > datetime.now(UTC)  # waits for its retry time

    sweeper = SweeperThread(interval=0.05)
    sweeper.start()
    try:
        with transaction() as session:  # the retry falls due (instead of waiting out the backoff)
            session.execute(update(OutboxMessage).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
        wait_for(lambda: outbox_rows()[0].status == "done", timeout=10, message="the sweeper thread's retry")
    finally:
        sweeper.stop()
    assert runs == [1, 2] and not sweeper.is_alive()
