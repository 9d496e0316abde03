"""The outbox core: rows written with the change, the after-commit hook, delivery keyed by outbox id,
the retry policy, and the sweeper's claim (concurrent sweepers claim each row once)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from adapters.inbox.models import Notification
from engine import events
from engine.db import after_commit, transaction
from engine.models import HistoryEvent
from engine.outbox import dispatch, sweeper
from engine.outbox.delivery import deliver
from engine.outbox.models import OutboxMessage
from engine.outbox.policy import Policy
from tests import outbox_support
from tests.helpers import act, claim, start
from tests.outbox_support import outbox_rows

# fixtures from tests/outbox_support.py, found by pytest under these names
embedded = outbox_support.embedded
subscriptions = outbox_support.subscriptions


class Recorder:
    """A handler that remembers the messages it saw and writes a notification per run."""

    def __init__(self, fail: bool = False):
        self.messages = []
        self.fail = fail

    def __call__(self, session, message):
        self.messages.append(message)
        session.add(Notification(user_id=f"run{len(self.messages)}", outbox_id=message.id, kind="test",
                                 title="t", body="b", created_at=datetime.now(UTC)))
        session.flush()
        if self.fail:
            raise RuntimeError("下游系统不可用")


@pytest.fixture
def held(monkeypatch):
    """Jobs are not run: dispatch records what it was given instead (for tests of what is handed over)."""
    handed: list[tuple[int, str]] = []

    def enqueue(rows, db_url=None):
        handed.extend(rows)
        return [outbox_id for outbox_id, _ in rows]

    monkeypatch.setattr(dispatch, "enqueue", enqueue)
    return handed


def effects() -> int:
    with transaction(readonly=True) as session:
        return session.scalar(select(func.count()).select_from(Notification)) or 0


def test_one_row_per_event_and_matching_subscription(subscriptions, held):
    events.subscribe("test.a", {"task.assigned", "instance.started"}, "channels", Recorder())
    events.subscribe("test.b", {"task.assigned"}, "sync", Recorder())
    instance_id = start("reimbursement", "suxiaoyun", claim())
    rows = outbox_rows()
    assert sorted((r.subscription, r.event_type) for r in rows) == [
        ("test.a", "instance.started"), ("test.a", "task.assigned"), ("test.b", "task.assigned")]
    with transaction(readonly=True) as session:
        seqs = dict(session.execute(select(HistoryEvent.type, HistoryEvent.seq)
                                    .where(HistoryEvent.instance_id == instance_id)).all())
    assigned = next(r for r in rows if r.subscription == "test.b")
    assert assigned.event_seq == seqs["task.assigned"] and assigned.queue == "sync"
    assert assigned.status == "pending" and assigned.attempts == 0 and assigned.dispatched_at is not None
    event, summary = assigned.payload["event"], assigned.payload["instance"]
    assert event["type"] == "task.assigned" and event["payload"]["candidates"] == ["guoxin"]
    assert event["task_id"] and event["seq"] == assigned.event_seq and isinstance(event["at"], str)
    assert summary["process_key"] == "reimbursement" and summary["starter_id"] == "suxiaoyun"
    assert summary["status"] == "running" and summary["business_key"].startswith("BX-")
    assert sorted(held) == sorted((r.id, r.queue) for r in rows)  # handed over once, after the commit


def test_no_subscription_no_rows(subscriptions, held):
    start("reimbursement", "suxiaoyun", claim())
    assert outbox_rows() == [] and held == []


def test_after_commit_runs_only_after_a_successful_commit():
    calls = []
    with transaction() as session:
        after_commit(session, lambda: calls.append("first"))
        after_commit(session, lambda: calls.append("second"))
        assert calls == []
    assert calls == ["first", "second"]
    with pytest.raises(RuntimeError), transaction() as session:
        after_commit(session, lambda: calls.append("rolled back"))
        raise RuntimeError("boom")
    assert calls == ["first", "second"]


def test_a_failing_after_commit_callback_does_not_fail_the_committed_transaction(caplog):
    calls = []

    def broken():
        raise ConnectionError("redis down")

    with transaction() as session:
        after_commit(session, broken)
        after_commit(session, lambda: calls.append("still runs"))
    assert calls == ["still runs"] and "after-commit callback" in caplog.text


def test_a_rolled_back_command_dispatches_nothing(subscriptions, held):
    events.subscribe("test.a", {"instance.started"}, "sync", Recorder())
    from engine.history import Actor
    from engine.services.instances import start_instance

    with pytest.raises(RuntimeError), transaction() as session:
        start_instance(session, Actor("suxiaoyun"), "reimbursement", claim())
        raise RuntimeError("the command failed after recording")
    assert outbox_rows() == [] and held == []


def test_delivery_runs_the_handler_once_and_marks_the_row_done(subscriptions, held):
    handler = Recorder()
    events.subscribe("test.a", {"instance.started"}, "sync", handler)
    start("reimbursement", "suxiaoyun", claim())
    [row] = outbox_rows()
    assert deliver(row.id) == "done"
    assert deliver(row.id) == "done"  # a duplicate job: nothing runs again
    [row] = outbox_rows()
    assert row.status == "done" and row.attempts == 1 and row.done_at is not None and row.last_error is None
    assert len(handler.messages) == 1 and effects() == 1
    message = handler.messages[0]
    assert message.id == row.id and message.attempt == 1 and message.event["type"] == "instance.started"
    assert message.instance["starter_id"] == "suxiaoyun"
    assert deliver(999_999) == "missing"


def test_a_failed_run_rolls_back_the_handler_and_schedules_a_retry(subscriptions, held, monkeypatch):
    monkeypatch.setenv("FINFLOW_OUTBOX_BASE_DELAY", "10")
    handler = Recorder(fail=True)
    events.subscribe("test.a", {"instance.started"}, "sync", handler)
    start("reimbursement", "suxiaoyun", claim())
    [row] = outbox_rows()
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    assert deliver(row.id, now=moment) == "pending"
    [row] = outbox_rows()
    assert effects() == 0  # the handler's insert was rolled back with its savepoint
    assert row.attempts == 1 and row.last_error.startswith("RuntimeError: 下游系统不可用")
    assert "Traceback" in row.last_error
    assert timedelta(seconds=5) <= row.next_attempt_at - moment <= timedelta(seconds=10)


def test_a_subscription_missing_in_the_worker_is_a_failure_not_a_silent_skip(subscriptions, held, monkeypatch):
    monkeypatch.setenv("FINFLOW_OUTBOX_MAX_ATTEMPTS", "1")
    events.subscribe("test.gone", {"instance.started"}, "sync", Recorder())
    start("reimbursement", "suxiaoyun", claim())
    events.unsubscribe("test.gone")
    [row] = outbox_rows()
    assert deliver(row.id) == "dead"
    assert "not loaded" in outbox_rows()[0].last_error


def test_backoff_is_exponential_with_jitter_and_capped():
    policy = Policy(base_delay=10, max_delay=100)
    assert policy.backoff(1, rand=lambda: 0.0) == timedelta(seconds=5)
    assert policy.backoff(1, rand=lambda: 1.0) == timedelta(seconds=10)
    assert policy.backoff(3, rand=lambda: 1.0) == timedelta(seconds=40)
    assert policy.backoff(3, rand=lambda: 0.5) == timedelta(seconds=30)
    assert policy.backoff(10, rand=lambda: 1.0) == timedelta(seconds=100)
    delays = {policy.backoff(2) for _ in range(20)}
    assert len(delays) > 1 and all(timedelta(seconds=10) <= d <= timedelta(seconds=20) for d in delays)


def test_sweeper_takes_undispatched_due_rows_and_lost_ones_after_the_lease(subscriptions, held, monkeypatch):
    monkeypatch.setenv("FINFLOW_OUTBOX_LEASE", "300")
    events.subscribe("test.a", {"instance.started", "task.created", "task.assigned"}, "sync", Recorder())
    start("reimbursement", "suxiaoyun", claim())
    held.clear()
    fresh, undispatched, scheduled = (r.id for r in outbox_rows())
    now = datetime.now(UTC)
    with transaction() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.id == undispatched)
                        .values(dispatched_at=None, next_attempt_at=now - timedelta(seconds=1)))
        session.execute(update(OutboxMessage).where(OutboxMessage.id == scheduled)
                        .values(dispatched_at=None, next_attempt_at=now + timedelta(seconds=60)))
    assert sweeper.sweep(now=now) == 1 and [i for i, _ in held] == [undispatched]  # a fresh row is not doubled
    held.clear()
    assert sweeper.sweep(now=now) == 0  # claimed: not due again before the lease runs out
    later = now + timedelta(seconds=301)
    assert sweeper.sweep(now=later) == 3 and sorted(i for i, _ in held) == sorted([fresh, undispatched, scheduled])
    assert all(r.dispatched_at == later for r in outbox_rows())


def test_sweeper_leaves_done_and_dead_rows_alone(subscriptions, held):
    events.subscribe("test.a", {"instance.started", "task.created"}, "sync", Recorder())
    start("reimbursement", "suxiaoyun", claim())
    done, dead = (r.id for r in outbox_rows())
    with transaction() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.id == done).values(status="done"))
        session.execute(update(OutboxMessage).where(OutboxMessage.id == dead).values(status="dead"))
    held.clear()
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(days=1)) == 0 and held == []


def test_concurrent_sweepers_claim_each_row_once(subscriptions, held):
    events.subscribe("test.a", {"instance.started", "task.created", "task.assigned"}, "sync", Recorder())
    for _ in range(8):
        start("reimbursement", "suxiaoyun", claim())
    with transaction() as session:
        session.execute(update(OutboxMessage).values(dispatched_at=None))
    held.clear()
    barrier = threading.Barrier(3)
    claimed: list[list[tuple[int, str]]] = [[], [], []]

    def run(index):
        barrier.wait()
        for _ in range(4):
            claimed[index].extend(sweeper.claim(batch=5))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [outbox_id for part in claimed for outbox_id, _ in part]
    assert len(ids) == len(set(ids)) == 24  # every row claimed, none twice


def test_redis_down_at_commit_leaves_rows_for_the_sweeper(subscriptions, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    monkeypatch.setattr(dispatch, "_paused_until", {})
    events.subscribe("test.a", {"instance.started"}, "sync", Recorder())
    instance_id = start("reimbursement", "suxiaoyun", claim())
    [row] = outbox_rows()
    assert row.instance_id == instance_id and row.status == "pending" and row.dispatched_at is None

    def tried(*args):
        raise AssertionError("Redis was tried again right after it failed")

    monkeypatch.setattr(dispatch, "queue", tried)  # for a few seconds commands do not try Redis at all
    start("reimbursement", "suxiaoyun", claim())
    assert [r.dispatched_at for r in outbox_rows()] == [None, None]
    assert sweeper.sweep() == 0  # still down: the sweep waits


def test_embedded_delivery_after_commit(subscriptions, embedded):
    handler = Recorder()
    events.subscribe("test.a", {"task.assigned", "task.completed"}, "channels", handler)
    instance_id = start("reimbursement", "suxiaoyun", claim())
    assert [m.event_type for m in handler.messages] == ["task.assigned"]  # ran in the commit's wake
    act(instance_id, "manager_approval")
    assert [m.event_type for m in handler.messages] == ["task.assigned", "task.completed", "task.assigned"]
    assert {r.status for r in outbox_rows()} == {"done"} and effects() == 3
