"""BPMN timers: reminders (non-interrupting cycles), timeouts that decide or escalate, intermediate waits,
quiet hours, overdue tasks, and one firing when workers race — with time moved by the clock, not slept."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from engine import clock, timers
from engine.db import transaction
from engine.history import Actor
from engine.models import Timer
from engine.runner import timer_schedule
from engine.services.deployments import deploy
from tests.helpers import events, instance, ready, start

APPROVAL = '{"type": "object", "properties": {"opinion": {"type": "string", "title": "意见"}}}'
HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="d" targetNamespace="t">"""
USER_TASK = """<bpmn:userTask id="approve" name="审批">
      <bpmn:extensionElements><spiffworkflow:properties>
        <spiffworkflow:property name="finflow.assignee" value="role(finance)" />
        <spiffworkflow:property name="finflow.form" value="approval" />
      </spiffworkflow:properties></bpmn:extensionElements>
      <bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing></bpmn:userTask>"""

TIMED = HEAD + f"""
  <bpmn:process id="timed" name="限时审批" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    {USER_TASK}
    <bpmn:exclusiveGateway id="gw" default="f_ok"><bpmn:incoming>f2</bpmn:incoming>
      <bpmn:incoming>f_timeout</bpmn:incoming><bpmn:outgoing>f_ok</bpmn:outgoing>
      <bpmn:outgoing>f_no</bpmn:outgoing></bpmn:exclusiveGateway>
    <bpmn:endEvent id="end_approved"><bpmn:extensionElements><spiffworkflow:properties>
      <spiffworkflow:property name="finflow.outcome" value="approved" /></spiffworkflow:properties>
      </bpmn:extensionElements><bpmn:incoming>f_ok</bpmn:incoming></bpmn:endEvent>
    <bpmn:endEvent id="end_rejected"><bpmn:extensionElements><spiffworkflow:properties>
      <spiffworkflow:property name="finflow.outcome" value="rejected" /></spiffworkflow:properties>
      </bpmn:extensionElements><bpmn:incoming>f_no</bpmn:incoming></bpmn:endEvent>
    <bpmn:boundaryEvent id="remind" name="催办提醒" attachedToRef="approve" cancelActivity="false">
      <bpmn:outgoing>f_r</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeCycle>"R/PT24H"</bpmn:timeCycle></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:endEvent id="reminded"><bpmn:incoming>f_r</bpmn:incoming></bpmn:endEvent>
    <bpmn:boundaryEvent id="timeout" name="超时" attachedToRef="approve" cancelActivity="true">
      <bpmn:extensionElements><spiffworkflow:properties>
        <spiffworkflow:property name="finflow.timeout_action" value="{{action}}" />
      </spiffworkflow:properties></bpmn:extensionElements>
      <bpmn:outgoing>f_timeout</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeDuration>"PT72H"</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="approve" />
    <bpmn:sequenceFlow id="f2" sourceRef="approve" targetRef="gw" />
    <bpmn:sequenceFlow id="f_timeout" sourceRef="timeout" targetRef="gw" />
    <bpmn:sequenceFlow id="f_ok" sourceRef="gw" targetRef="end_approved" />
    <bpmn:sequenceFlow id="f_no" sourceRef="gw" targetRef="end_rejected">
      <bpmn:conditionExpression>decision == 'reject'</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f_r" sourceRef="remind" targetRef="reminded" />
  </bpmn:process>
</bpmn:definitions>"""

ESCALATED = HEAD + f"""
  <bpmn:process id="escalated" name="超时升级" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    {USER_TASK}
    <bpmn:endEvent id="end"><bpmn:incoming>f2</bpmn:incoming></bpmn:endEvent>
    <bpmn:boundaryEvent id="escalate" name="升级" attachedToRef="approve" cancelActivity="false">
      <bpmn:extensionElements><spiffworkflow:properties>
        <spiffworkflow:property name="finflow.timeout_action" value="role:cfo" />
      </spiffworkflow:properties></bpmn:extensionElements>
      <bpmn:outgoing>f_e</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeDuration>"PT48H"</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:endEvent id="escalated_end"><bpmn:incoming>f_e</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="approve" />
    <bpmn:sequenceFlow id="f2" sourceRef="approve" targetRef="end" />
    <bpmn:sequenceFlow id="f_e" sourceRef="escalate" targetRef="escalated_end" />
  </bpmn:process>
</bpmn:definitions>"""

WAITED = HEAD + f"""
  <bpmn:process id="waited" name="冷静期" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f0</bpmn:outgoing></bpmn:startEvent>
    <bpmn:intermediateCatchEvent id="cooling" name="冷静期一小时"><bpmn:incoming>f0</bpmn:incoming>
      <bpmn:outgoing>f1</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeDuration>"PT1H"</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:intermediateCatchEvent>
    {USER_TASK}
    <bpmn:endEvent id="end"><bpmn:incoming>f2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="cooling" />
    <bpmn:sequenceFlow id="f1" sourceRef="cooling" targetRef="approve" />
    <bpmn:sequenceFlow id="f2" sourceRef="approve" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>"""


@pytest.fixture(autouse=True)
def controlled_time(monkeypatch):
    monkeypatch.setenv("FINFLOW_QUIET_HOURS", "off")
    clock.reset()
    yield
    clock.reset()


def deploy_text(name: str, text: str) -> None:
    with transaction() as session:
        deploy(session, {f"{name}.bpmn": text, "approval.json": APPROVAL}, Actor(None, "cli"))


def timers_of(instance_id: str) -> list[Timer]:
    with transaction() as session:
        return list(session.scalars(select(Timer).where(Timer.instance_id == instance_id).order_by(Timer.id)))


def test_reminder_cycle_and_timeout_auto_approve():
    deploy_text("timed", TIMED.replace("{action}", "approve"))
    started = clock.now()
    iid = start("timed", "suxiaoyun", {})
    [task] = ready(iid)
    assert task.due_at is not None and abs(task.due_at - (started + timedelta(hours=72))) < timedelta(minutes=1)
    assert {t.node_id for t in timers_of(iid)} == {"remind", "timeout"}

    assert timers.fire_due() == 0  # nothing is due yet
    clock.advance(timedelta(hours=25))
    assert timers.fire_due() == 1
    reminded = [e for e in events(iid) if e.type == "task.reminded"]
    assert len(reminded) == 1 and reminded[0].task_id == task.id
    pending = [t for t in timers_of(iid) if t.status == "pending"]
    assert sorted(t.node_id for t in pending) == ["remind", "timeout"]  # the cycle scheduled its next reminder

    clock.advance(timedelta(hours=48))  # 73 h: the second reminder and the timeout are both due
    assert timers.fire_due() == 2
    done = instance(iid)
    assert (done.status, done.outcome) == ("completed", "approved")
    assert len([e for e in events(iid) if e.type == "task.reminded"]) == 2
    assert any(e.type == "timer.fired" and e.payload["timeout_action"] == "approve" for e in events(iid))
    assert all(t.status != "pending" for t in timers_of(iid))


def test_timeout_auto_reject():
    deploy_text("timed", TIMED.replace("{action}", "reject"))
    iid = start("timed", "suxiaoyun", {})
    clock.advance(timedelta(hours=73))
    timers.fire_due()
    assert instance(iid).outcome == "rejected"


def test_completing_the_task_cancels_its_timers():
    from tests.helpers import act

    deploy_text("timed", TIMED.replace("{action}", "approve"))
    iid = start("timed", "suxiaoyun", {})
    act(iid, "approve")
    assert instance(iid).status == "completed"
    assert {t.status for t in timers_of(iid)} == {"cancelled"}
    clock.advance(timedelta(days=10))
    assert timers.fire_due() == 0


def test_timeout_escalates_to_a_role():
    deploy_text("escalated", ESCALATED)
    iid = start("escalated", "suxiaoyun", {})
    clock.advance(timedelta(hours=49))
    assert timers.fire_due() == 1
    [task] = ready(iid)
    assert task.candidates == ["qianfang"]  # the CFO
    assert any(e.type == "task.escalated" for e in events(iid))


def test_intermediate_timer_waits_then_continues():
    deploy_text("waited", WAITED)
    iid = start("waited", "suxiaoyun", {})
    assert ready(iid) == [] and instance(iid).status == "running"
    clock.advance(timedelta(minutes=30))
    assert timers.fire_due() == 0
    clock.advance(timedelta(minutes=31))
    assert timers.fire_due() == 1
    assert [t.node_id for t in ready(iid)] == ["approve"]


def test_two_workers_racing_on_one_timer_fire_it_once():
    deploy_text("escalated", ESCALATED)
    iid = start("escalated", "suxiaoyun", {})
    clock.advance(timedelta(hours=49))
    [timer] = timers_of(iid)
    barrier = threading.Barrier(2)
    results = []

    def worker():
        barrier.wait()
        results.append(timers.fire_timer(timer.id))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1]
    assert len([e for e in events(iid) if e.type == "timer.fired"]) == 1


def test_overdue_tasks_are_visible(as_user):
    deploy_text("timed", TIMED.replace("{action}", "approve"))
    iid = start("timed", "suxiaoyun", {})
    [task] = ready(iid)
    client = as_user("yangxue")
    assert client.get(f"/api/v1/tasks/{task.id}").json["overdue"] is False
    clock.advance(timedelta(hours=73))  # due, not yet fired by any worker
    body = client.get(f"/api/v1/tasks/{task.id}").json
    assert body["overdue"] is True and body["due_at"]
    assert [t["id"] for t in client.get("/api/v1/tasks?mine=true&overdue=true").json["items"]] == [task.id]


@pytest.mark.parametrize(("local", "expected"), [
    ("2026-11-23T21:59:00", "2026-11-23T21:59:00"),
    ("2026-11-23T22:00:00", "2026-11-24T08:00:00"),
    ("2026-11-24T03:30:00", "2026-11-24T08:00:00"),
    ("2026-11-24T08:00:00", "2026-11-24T08:00:00"),
    ("2026-11-24T12:00:00", "2026-11-24T12:00:00"),
])
def test_quiet_hours_defer_reminders_to_the_morning(monkeypatch, local, expected):
    monkeypatch.setenv("FINFLOW_QUIET_HOURS", "22:00-08:00")
    zone = timer_schedule.LOCAL_ZONE
    moment = datetime.fromisoformat(local).replace(tzinfo=zone).astimezone(UTC)
    assert timer_schedule.defer_for_quiet_hours(moment) == datetime.fromisoformat(expected).replace(tzinfo=zone)


def test_reminder_in_quiet_hours_fires_in_the_morning(monkeypatch):
    monkeypatch.setenv("FINFLOW_QUIET_HOURS", "22:00-08:00")
    deploy_text("timed", TIMED.replace("{action}", "approve"))
    iid = start("timed", "suxiaoyun", {})
    remind = next(t for t in timers_of(iid) if t.node_id == "remind")
    timeout = next(t for t in timers_of(iid) if t.node_id == "timeout")
    assert remind.fire_at == timer_schedule.defer_for_quiet_hours(remind.due_at)
    assert timeout.fire_at == timeout.due_at  # timeouts are urgent: never deferred


def test_new_timers_are_scheduled_on_rq_at_their_time(monkeypatch):
    """With Redis, a timer is also a job on rq's scheduler for its fire time (the sweep is the safety net)."""
    from redis import Redis
    from rq import Queue
    from rq.registry import ScheduledJobRegistry

    redis_url = "redis://127.0.0.1:6379/5"
    Redis.from_url(redis_url).flushdb()
    monkeypatch.setenv("REDIS_URL", redis_url)
    try:
        deploy_text("escalated", ESCALATED)
        iid = start("escalated", "suxiaoyun", {})
        [timer] = timers_of(iid)
        registry = ScheduledJobRegistry(queue=Queue("timers", connection=Redis.from_url(redis_url)))
        [job_id] = registry.get_job_ids()
        job = registry.get_queue().fetch_job(job_id)
        assert job.func_name == "engine.timers.fire_timer" and job.args == (timer.id,)
        scheduled = registry.get_scheduled_time(job_id).replace(tzinfo=UTC)
        assert abs(scheduled - timer.fire_at) < timedelta(seconds=1)
    finally:
        Redis.from_url(redis_url).flushdb()


def test_timer_firings_are_timed_in_the_command_latency_metric():
    from prometheus_client import REGISTRY

    def fired_count() -> float:
        return REGISTRY.get_sample_value("finflow_command_duration_seconds_count",
                                         {"operation": "timer", "outcome": "ok"}) or 0.0

    deploy_text("timed", TIMED.replace("{action}", "approve"))
    start("timed", "suxiaoyun", {})
    before = fired_count()
    clock.advance(timedelta(hours=25))
    assert timers.fire_due() == 1
    assert fired_count() == before + 1
