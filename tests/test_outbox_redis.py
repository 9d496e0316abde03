"""The outbox against a real Redis and real `finflow worker` processes: a worker killed mid-job, Redis
stopped while the API keeps working, and two workers sharing one backlog.

Every test uses a private redis-server (tests/outbox_support.py) and waits with bounded polling.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from adapters.inbox.models import Notification
from engine import clock
from engine.db import transaction
from engine.models import HistoryEvent, Instance
from engine.outbox import dispatch
from engine.outbox.models import OutboxMessage
from engine.outbox.policy import Policy
from tests import outbox_support, plugins_slow
from tests.helpers import claim, payment, start
from tests.outbox_support import drain, outbox_rows, wait_for
from tests.test_timers import TIMED, deploy_text

# fixtures from tests/outbox_support.py, found by pytest under these names
private_redis = outbox_support.private_redis
redis_url = outbox_support.redis_url
subscriptions = outbox_support.subscriptions
workers = outbox_support.workers


def effects_by_row(kind: str) -> Counter:
    with transaction(readonly=True) as session:
        return Counter(session.scalars(select(Notification.outbox_id).where(Notification.kind == kind)))


def all_done(subscription: str | None = None) -> bool:
    rows = outbox_rows(subscription)
    return bool(rows) and all(r.status == "done" for r in rows)


def test_worker_killed_mid_job_the_job_runs_again_and_its_effect_happens_once(redis_url, subscriptions, workers):
    plugins_slow.subscribe_slow()
    first = workers.start(redis_url, "--queues", "sync")
    start("reimbursement", "suxiaoyun", claim())
    [row] = outbox_rows(plugins_slow.SLOW)
    wait_for(lambda: any(workers.directory.glob(f"{row.id}-*")), message="the slow handler to start")
    workers.kill(first)  # SIGKILL to the worker's process group, in the middle of the handler

    [row] = outbox_rows(plugins_slow.SLOW)
    assert row.status == "pending" and row.attempts == 0  # its transaction died with the worker
    assert effects_by_row(plugins_slow.SLOW) == Counter()
    # The job is lost with the worker (rq only knows it started). Once the lease is over the sweeper
    # dispatches the row again: move the row's clock instead of waiting five minutes.
    lease = Policy.from_env().lease_delta
    with transaction() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.id == row.id)
                        .values(next_attempt_at=datetime.now(UTC) - lease - timedelta(seconds=1)))
    second = workers.start(redis_url, "--queues", "sync", "--burst")  # sweeps once, then drains
    assert second.wait(30) == 0, workers.logs()

    [row] = outbox_rows(plugins_slow.SLOW)
    assert row.status == "done" and row.attempts == 1, workers.logs()
    assert len(list(workers.directory.glob(f"{row.id}-*"))) == 2  # the handler ran twice ...
    assert effects_by_row(plugins_slow.SLOW) == Counter({row.id: 1})  # ... its effect happened once


def idle_workers(server) -> int:
    client = server.client()
    return sum(client.hget(key, "state") == b"idle" for key in client.smembers("rq:workers"))


def expected_notifications() -> Counter:
    """What adapters/inbox promises for the recorded history (see adapters/inbox/handlers.py)."""
    expected: Counter = Counter()
    with transaction(readonly=True) as session:
        starters = dict(session.execute(select(Instance.id, Instance.starter_id)).all())
        for event in session.scalars(select(HistoryEvent).order_by(HistoryEvent.instance_id, HistoryEvent.seq)):
            starter = starters[event.instance_id]
            if event.type == "task.assigned":
                for user in event.payload["candidates"]:
                    expected[("task.assigned", event.instance_id, event.task_id, user)] += 1
            elif event.type == "task.completed" and event.actor_id != starter:
                expected[("task.completed", event.instance_id, event.task_id, starter)] += 1
            elif event.type == "instance.completed":
                expected[("instance.completed", event.instance_id, None, starter)] += 1
    return expected


def notifications() -> Counter:
    with transaction(readonly=True) as session:
        return Counter(session.execute(select(Notification.kind, Notification.instance_id, Notification.task_id,
                                              Notification.user_id)).all())


def test_redis_down_the_api_still_works_and_the_outbox_drains_when_redis_returns(
        private_redis, redis_url, app, as_user, workers):
    worker = workers.start(redis_url, "--sweep-interval", "0.2")
    applicant, manager = as_user("suxiaoyun"), as_user("guoxin")
    wait_for(lambda: idle_workers(private_redis) == 1, message="the worker to listen")
    private_redis.stop()

    started = [applicant.post("/api/v1/instances", json={"process_key": "reimbursement", "data": claim(amount=a)})
               for a in (800, 1500, 2600)]
    started.append(applicant.post("/api/v1/instances", json={"process_key": "payment", "data": payment(30000)}))
    assert [r.status_code for r in started] == [201] * 4, started[0].json
    for created in started[:3]:
        [task] = created.json["current_tasks"]
        done = manager.post(f"/api/v1/tasks/{task['id']}/complete", json={"action": "approve", "comment": "同意"})
        assert done.status_code == 200, done.json
    with transaction(readonly=True) as session:  # the state changes are committed
        assert session.scalar(select(HistoryEvent.id).where(HistoryEvent.type == "task.completed")) is not None
    rows = outbox_rows()
    assert rows and all(r.status == "pending" and r.dispatched_at is None for r in rows)
    assert notifications() == Counter()

    private_redis.start()  # the worker reconnects; its sweeper hands the rows over
    wait_for(all_done, message="the outbox to drain")
    expected = expected_notifications()
    assert sum(expected.values()) >= 10
    assert notifications() == expected  # none missing, none doubled
    assert worker.poll() is None, workers.logs()
    workers.stop(worker)


def test_two_workers_share_a_backlog_and_handle_each_row_once(private_redis, redis_url, subscriptions, workers,
                                                              monkeypatch):
    plugins_slow.subscribe_count()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # the backlog builds up while Redis is unreachable
    for _ in range(40):
        start("reimbursement", "suxiaoyun", claim())
    rows = [(r.id, r.queue) for r in outbox_rows()]
    assert len(rows) == 120 and all(r.dispatched_at is None for r in outbox_rows())
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert len(dispatch.enqueue(rows)) == 120  # a first copy of every job; the sweepers will add a second
    env = {"FINFLOW_TEST_COUNT_SECONDS": "0.03"}
    pair = [workers.start(redis_url, "--queues", "sync", "--sweep-interval", "0.2", env=env) for _ in range(2)]

    wait_for(lambda: all_done(plugins_slow.COUNT), message="both workers to drain the backlog")
    wait_for(lambda: private_redis.client().llen("rq:queue:sync") == 0, message="the duplicate jobs to drain")
    for worker in pair:
        workers.stop(worker)
    handled = outbox_rows(plugins_slow.COUNT)
    assert all(r.status == "done" and r.attempts == 1 for r in handled)
    assert effects_by_row(plugins_slow.COUNT) == Counter({r.id: 1 for r in handled})
    with transaction(readonly=True) as session:
        pids = set(session.scalars(select(Notification.body).where(Notification.kind == plugins_slow.COUNT)))
    assert pids == {str(w.pid) for w in pair}, workers.logs()  # both took part


def test_workers_fire_due_timers_and_their_side_effects_follow(redis_url, app, as_user):
    deploy_text("timed", TIMED.replace("{action}", "approve"))
    instance_id = start("timed", "suxiaoyun", {})
    drain(redis_url)  # the approvers' 待审批 notifications
    try:
        clock.advance(timedelta(hours=73))  # the reminder and the 72 h timeout (auto-approve) are due
        drain(redis_url)  # a worker's periodic work fires them, then it runs their events' side effects
    finally:
        clock.reset()
    with transaction(readonly=True) as session:
        instance = session.get(Instance, instance_id)
        kinds = set(session.scalars(select(HistoryEvent.type).where(HistoryEvent.instance_id == instance_id)))
    assert (instance.status, instance.outcome) == ("completed", "approved") and "task.reminded" in kinds
    assert all_done() and ("instance.completed", instance_id, None, "suxiaoyun") in notifications()
