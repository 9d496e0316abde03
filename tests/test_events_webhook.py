"""Events out to webhooks, with a real receiver on 127.0.0.1: retries on 500 and timeouts, a 410 is dead
with its reason, the signature verifies with the README's snippet, a slow receiver blocks nothing, a
worker killed between sending and recording re-sends the same id, sensitive fields never leave."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import pytest

from engine import clock
from engine.db import transaction
from engine.demo.driver import drive
from engine.demo.scenarios import SCENARIOS
from engine.history import Actor
from engine.outbox.sweeper import sweep
from engine.services.instances import withdraw_instance
from engine.services.tasks import return_task, transfer_task
from tests import events_support, outbox_support
from tests.conftest import ROOT
from tests.events_support import WebhookReceiver, assert_complete_and_ordered, deliveries, settle, subscribe
from tests.helpers import act, claim, payment, ready, ready_nodes, start
from tests.outbox_support import wait_for

# fixtures from the support modules, found by pytest under these names
embedded = outbox_support.embedded
private_redis = outbox_support.private_redis
redis_url = outbox_support.redis_url
workers = outbox_support.workers
events_out = events_support.events_out
receiver = events_support.receiver

pytestmark = pytest.mark.usefixtures("events_out")
ADMIN = "zhangwei"


def readme_snippet() -> str:
    """The verification snippet exactly as the README documents it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    after = readme[readme.index("Verifying a delivery"):]
    return after[after.index("```python") + len("```python"):after.index("```", after.index("```python") + 3)]


def documented_verify():
    namespace: dict = {}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)  # noqa: S102  (our own documentation)
    return namespace["verify"]


def retry_due_rows() -> None:
    """Move time past any backoff and let the sweeper hand the due rows over (embedded mode)."""
    clock.advance(timedelta(hours=2))
    sweep()
    settle()


def test_a_receiver_answering_500_three_times_gets_the_event_on_the_fourth_attempt(embedded, receiver, app,
                                                                                    as_user):
    receiver.answer = lambda n, r: (500, {}, 0.0) if n < 3 else (200, {}, 0.0)
    target, _ = subscribe("webhook", receiver.url, event_types=["instance.started"])
    start("reimbursement", "suxiaoyun", claim())
    settle()

    admin = as_user(ADMIN)
    failing = admin.get(f"/api/v1/event-subscriptions/{target}/deliveries?status=failing").get_json()
    assert failing["meta"]["total"] == 1
    assert failing["items"][0]["attempts"] == 1 and "HTTP 500" in failing["items"][0]["last_error"]
    for _ in range(3):
        retry_due_rows()

    [row] = deliveries(target)
    assert row.status == "done" and row.attempts == 4
    ids = {r.headers["x-finflow-event-id"] for r in receiver.requests}
    assert len(receiver.requests) == 4 and ids == {receiver.requests[0].event["id"]}  # the same id each time
    counts = admin.get(f"/api/v1/event-subscriptions/{target}").get_json()["deliveries"]
    assert counts["done"] == 1 and counts["failing"] == 0


def test_a_receiver_that_times_out_is_retried_and_the_timeout_is_recorded(embedded, receiver, monkeypatch):
    monkeypatch.setenv("FINFLOW_WEBHOOK_READ_TIMEOUT", "0.3")
    receiver.answer = lambda n, r: (200, {}, 1.5 if n == 0 else 0.0)
    target, _ = subscribe("webhook", receiver.url, event_types=["instance.started"])
    start("reimbursement", "suxiaoyun", claim())
    settle()

    [row] = deliveries(target)
    assert row.status == "pending" and row.attempts == 1 and "timeout" in row.last_error
    assert row.next_attempt_at > clock.now()
    retry_due_rows()
    [row] = deliveries(target)
    assert row.status == "done" and len(receiver.requests) == 2


def test_a_receiver_answering_410_is_dead_at_once_visible_and_retryable_through_the_api(embedded, receiver, app,
                                                                                         as_user):
    receiver.answer = lambda n, r: (410, {}, 0.0) if n == 0 else (200, {}, 0.0)
    target, _ = subscribe("webhook", receiver.url, event_types=["instance.started"])
    start("reimbursement", "suxiaoyun", claim())
    settle()

    admin = as_user(ADMIN)
    dead = admin.get(f"/api/v1/event-subscriptions/{target}/deliveries?status=dead").get_json()["items"]
    assert len(dead) == 1 and dead[0]["attempts"] == 1
    assert dead[0]["last_error"].startswith("PermanentFailure: HTTP 410")
    assert dead[0]["event_type"] == "com.finflow.instance.started"

    again = admin.post(f"/api/v1/event-subscriptions/{target}/deliveries/{dead[0]['id']}/retry")
    assert again.status_code == 200 and again.get_json()["status"] == "pending"
    settle()
    assert [r.status for r in deliveries(target)] == ["done"] and len(receiver.requests) == 2
    twice = admin.post(f"/api/v1/event-subscriptions/{target}/deliveries/{dead[0]['id']}/retry")
    assert twice.status_code == 409


def test_429_with_retry_after_waits_at_least_that_long(embedded, receiver):
    receiver.answer = lambda n, r: (429, {"Retry-After": "900"}, 0.0) if n == 0 else (200, {}, 0.0)
    target, _ = subscribe("webhook", receiver.url, event_types=["instance.started"])
    before = clock.now()
    start("reimbursement", "suxiaoyun", claim())
    settle()
    [row] = deliveries(target)
    assert row.status == "pending" and row.next_attempt_at >= before + timedelta(seconds=900)


def test_the_signature_verifies_with_the_documented_snippet_and_not_with_a_wrong_secret(embedded, receiver, app,
                                                                                          as_user):
    created = as_user(ADMIN).post("/api/v1/event-subscriptions", json={
        "name": "ERP", "kind": "webhook", "url": receiver.url, "event_types": ["instance.*"]})
    assert created.status_code == 201
    secret = created.get_json()["secret"]
    start("reimbursement", "suxiaoyun", claim())
    settle()

    request, verify = receiver.requests[0], documented_verify()
    assert verify(secret, request.headers, request.body)
    assert not verify(secret + "x", request.headers, request.body)
    assert not verify(secret, request.headers, request.body.replace(b"suxiaoyun", b"attacker1"))
    stale = {**dict(request.headers.items()), "X-Finflow-Timestamp": str(int(time.time()) - 3600)}
    assert not verify(secret, stale, request.body)
    shown = as_user(ADMIN).get(f"/api/v1/event-subscriptions/{created.get_json()['id']}").get_json()
    assert "secret" not in shown and secret not in str(shown)


def test_a_slow_receiver_blocks_neither_approvals_nor_other_subscriptions(embedded, receiver, monkeypatch):
    monkeypatch.setenv("FINFLOW_WEBHOOK_READ_TIMEOUT", "30")
    release = threading.Event()
    receiver.answer = lambda n, r: (200, {}, 0.0 if release.wait(30) else 0.0)
    healthy = WebhookReceiver()
    try:
        slow_target, _ = subscribe("webhook", receiver.url, name="慢")
        healthy_target, _ = subscribe("webhook", healthy.url, name="快")
        result = drive(SCENARIOS[0])  # every approval commits while the slow receiver hangs

        assert result.status == "completed"
        wait_for(lambda: {d.status for d in deliveries(healthy_target)} == {"done"}, message="the healthy one")
        assert not release.is_set() and len(receiver.requests) == 1  # the slow one still holds its first event
        assert_complete_and_ordered(healthy.events())
        release.set()
        settle()
        assert {d.status for d in deliveries(slow_target)} == {"done"}
        assert_complete_and_ordered(receiver.events())
    finally:
        release.set()
        healthy.close()


def test_a_plain_worker_serves_every_queue_and_sends_webhooks(redis_url, workers, receiver):
    """`finflow worker` started the obvious way, without --queues, must not leave the events queue unserved."""
    target, _ = subscribe("webhook", receiver.url)
    workers.start(redis_url, env={"FINFLOW_SWEEP_INTERVAL": "0.5"})
    start("reimbursement", "suxiaoyun", claim())
    wait_for(lambda: deliveries(target) and {d.status for d in deliveries(target)} == {"done"},
             message=f"delivery by a plain worker\n{workers.logs()}")
    assert [e["type"] for e in receiver.events()][:1] == ["com.finflow.instance.started"]


def test_a_worker_killed_between_sending_and_recording_resends_the_same_id(redis_url, workers, receiver):
    environment = {"FINFLOW_OUTBOX_LEASE": "2", "FINFLOW_SWEEP_INTERVAL": "0.5"}
    first = workers.start(redis_url, "--queues", "events", env=environment)

    def kill_the_worker_once(n, request):
        if n == 0:  # the event has reached us; the worker has not recorded it: kill it now
            os.killpg(first.pid, signal.SIGKILL)
        return 200, {}, 0.0

    receiver.answer = kill_the_worker_once
    target, _ = subscribe("webhook", receiver.url)
    instance_id = start("reimbursement", "suxiaoyun", claim())
    wait_for(lambda: first.poll() is not None, message=f"the first worker to die\n{workers.logs()}")
    workers.start(redis_url, "--queues", "events", env=environment)
    act(instance_id, ready_nodes(instance_id)[0])

    wait_for(lambda: {d.status for d in deliveries(target)} == {"done"}, message=f"delivery\n{workers.logs()}")
    ids = [r.headers["x-finflow-event-id"] for r in receiver.requests]
    assert ids.count(ids[0]) >= 2  # re-sent under the same id after the lease ran out
    assert_complete_and_ordered(receiver.events())


def test_sensitive_form_fields_never_leave_in_any_event(embedded, receiver):
    subscribe("webhook", receiver.url)
    data = payment()
    for scenario in [s for s in SCENARIOS if s.process_key == "payment"]:
        drive(scenario)
    start("payment", "jiangtao", data)
    settle()

    bodies = [r.body.decode() for r in receiver.requests]
    assert len(bodies) == len(deliveries()) > 20
    assert not [b for b in bodies if "bank_account" in b or data["bank_account"] in b]
    started = [r.event for r in receiver.requests if r.event["type"] == "com.finflow.instance.started"]
    assert started and all(e["data"]["details"]["data"]["payee"] for e in started)  # the rest is there


def test_approval_operations_carry_their_action_comment_and_actor(embedded, receiver):
    subscribe("webhook", receiver.url, event_types=["task.transferred", "task.returned", "instance.withdrawn"])
    instance_id = start("reimbursement", "suxiaoyun", claim())
    [task] = [t for t in ready(instance_id) if t.node_id == "manager_approval"]
    with transaction() as session:
        transfer_task(session, Actor(task.candidates[0], "wecom"), task.id, "liuli", "出差，请刘丽代批")
    act(instance_id, "manager_approval", user="liuli")
    [reviewing] = ready(instance_id)
    with transaction() as session:
        return_task(session, Actor(reviewing.candidates[0]), reviewing.id, "applicant", "发票抬头不对")
    with transaction() as session:
        withdraw_instance(session, Actor("suxiaoyun"), instance_id, "不报了")
    settle()

    data = {e["type"]: e["data"] for e in receiver.events()}
    assert data["com.finflow.task.transferred"]["action"] == "transfer"
    assert data["com.finflow.task.transferred"]["comment"] == "出差，请刘丽代批"
    assert data["com.finflow.task.transferred"]["channel"] == "wecom"
    assert data["com.finflow.task.transferred"]["node_name"]
    returned = data["com.finflow.task.returned"]
    assert (returned["action"], returned["actor_id"], returned["comment"]) == \
        ("return", reviewing.candidates[0], "发票抬头不对")
    assert data["com.finflow.instance.withdrawn"]["action"] == "withdraw"
    assert data["com.finflow.instance.withdrawn"]["status"] == "withdrawn"


def test_a_failing_receiver_is_tried_once_per_backoff_not_once_per_new_event(embedded, receiver):
    receiver.answer = lambda n, r: (503, {}, 0.0) if n == 0 else (200, {}, 0.0)
    target, _ = subscribe("webhook", receiver.url, event_types=["instance.started"])
    start("reimbursement", "suxiaoyun", claim())
    settle()
    [failed] = deliveries(target)
    for _ in range(4):  # new instances while the receiver is failing
        start("reimbursement", "suxiaoyun", claim())
        settle()

    assert len(receiver.requests) == 1  # the breaker held the four new events instead of trying each
    held = [d for d in deliveries(target) if d.id != failed.id]
    assert {(d.status, d.attempts) for d in held} == {("pending", 0)}
    assert all(d.next_attempt_at >= failed.next_attempt_at for d in held)
    retry_due_rows()
    assert {d.status for d in deliveries(target)} == {"done"}
    assert len(receiver.requests) == 6 and len({r.event["id"] for r in receiver.requests}) == 5  # 1 failed + 5
