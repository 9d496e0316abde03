"""Nothing a diagram or a script does can hold a worker or a lock: a runaway script or diagram ends as a
failed instance with the reason, within its bound, while the server (a real one, on a free port) keeps
answering `/health`; the next instance works; the bounds are set through the environment."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from engine import clock
from engine.db import transaction
from engine.errors import DeploymentInvalid
from engine.history import Actor
from engine.models import ProcessDefinition, ProcessVersion
from engine.runner.limits import MAX_TASK_DEPTH, CommandLimits
from engine.services.auth import issue_token
from engine.services.deployments import content_hash, deploy
from tests.helpers import claim, events, instance, ready, start
from tests.live_server import serving

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="d" targetNamespace="t">
"""
SCRIPT = HEAD + """  <bpmn:process id="runaway_script" name="失控脚本" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:scriptTask id="compute" name="计算"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
      <bpmn:script>{script}</bpmn:script></bpmn:scriptTask>
    <bpmn:endEvent id="end"><bpmn:incoming>f2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="compute" />
    <bpmn:sequenceFlow id="f2" sourceRef="compute" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>"""
# An exclusive gateway sends the flow back through a script task for as long as n > -1: forever.
SCRIPT_LOOP = HEAD + """  <bpmn:process id="script_loop" name="脚本循环" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:scriptTask id="count" name="计数"><bpmn:incoming>f1</bpmn:incoming><bpmn:incoming>again</bpmn:incoming>
      <bpmn:outgoing>f2</bpmn:outgoing><bpmn:script>{script}</bpmn:script></bpmn:scriptTask>
    <bpmn:exclusiveGateway id="more" name="还要吗" default="done"><bpmn:incoming>f2</bpmn:incoming>
      <bpmn:outgoing>again</bpmn:outgoing><bpmn:outgoing>done</bpmn:outgoing></bpmn:exclusiveGateway>
    <bpmn:endEvent id="end"><bpmn:incoming>done</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="count" />
    <bpmn:sequenceFlow id="f2" sourceRef="count" targetRef="more" />
    <bpmn:sequenceFlow id="again" sourceRef="more" targetRef="count">
      <bpmn:conditionExpression>n &gt; -1</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="done" sourceRef="more" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>"""
# No task at all: two gateways pass the token back and forth.
GATEWAY_LOOP = HEAD + """  <bpmn:process id="gateway_loop" name="网关循环" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:exclusiveGateway id="join" name="汇合"><bpmn:incoming>f1</bpmn:incoming><bpmn:incoming>back</bpmn:incoming>
      <bpmn:outgoing>f2</bpmn:outgoing></bpmn:exclusiveGateway>
    <bpmn:exclusiveGateway id="check" name="判断" default="done"><bpmn:incoming>f2</bpmn:incoming>
      <bpmn:outgoing>back</bpmn:outgoing><bpmn:outgoing>done</bpmn:outgoing></bpmn:exclusiveGateway>
    <bpmn:endEvent id="end"><bpmn:incoming>done</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="join" />
    <bpmn:sequenceFlow id="f2" sourceRef="join" targetRef="check" />
    <bpmn:sequenceFlow id="back" sourceRef="check" targetRef="join">
      <bpmn:conditionExpression>True</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="done" sourceRef="check" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>"""
# The process calls itself: every level starts a new subprocess, each a little slower than the last.
RECURSIVE = HEAD + """  <bpmn:process id="recursive" name="自我调用" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:callActivity id="again" name="再来一次" calledElement="recursive"><bpmn:incoming>f1</bpmn:incoming>
      <bpmn:outgoing>f2</bpmn:outgoing></bpmn:callActivity>
    <bpmn:endEvent id="end"><bpmn:incoming>f2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="again" />
    <bpmn:sequenceFlow id="f2" sourceRef="again" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>"""
# A user task that leads back to itself and approves itself (去重) when its last approver is a candidate:
# once a person approves it, the command runs auto-approvals and a gateway, round after round.
SELF_APPROVING = HEAD + """  <bpmn:process id="self_approving" name="自动通过循环" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:userTask id="review" name="复核">
      <bpmn:extensionElements><spiffworkflow:properties>
        <spiffworkflow:property name="finflow.assignee" value="role(finance)" />
        <spiffworkflow:property name="finflow.form" value="approval" />
        <spiffworkflow:property name="finflow.dedupe" value="true" />
      </spiffworkflow:properties></bpmn:extensionElements>
      <bpmn:incoming>f1</bpmn:incoming><bpmn:incoming>loop</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:exclusiveGateway id="again" name="再审" default="out"><bpmn:incoming>f2</bpmn:incoming>
      <bpmn:outgoing>loop</bpmn:outgoing><bpmn:outgoing>out</bpmn:outgoing></bpmn:exclusiveGateway>
    <bpmn:endEvent id="end"><bpmn:incoming>out</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="review" />
    <bpmn:sequenceFlow id="f2" sourceRef="review" targetRef="again" />
    <bpmn:sequenceFlow id="loop" sourceRef="again" targetRef="review">
      <bpmn:conditionExpression>decision == 'approve'</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="out" sourceRef="again" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>"""
APPROVAL = '{"type": "object", "properties": {"opinion": {"type": "string", "title": "意见"}}}'
STARTER = "suxiaoyun"
BOUND = 30  # seconds: far above every bound the tests set, far below a hang


def deploy_files(**files: str) -> None:
    with transaction() as session:
        deploy(session, {**files, "approval.json": APPROVAL}, Actor(None, "cli"))


def store_unchecked(key: str, files: dict[str, str]) -> None:
    """A version stored without deploy's checks, as one deployed before them was: deploy now refuses
    recursive call graphs, but versions already stored still load, and the bounds must hold for them."""
    files = {**files, "approval.json": APPROVAL}
    bpmn = next(name for name in files if name.endswith(".bpmn"))
    with transaction() as session:
        session.add(ProcessDefinition(key=key, name=key, latest_version=1, created_at=clock.now()))
        session.flush()
        session.add(ProcessVersion(process_key=key, version=1, name=key, content_hash=content_hash(files),
                                   bpmn_file=bpmn, files=files, deployed_by=None, deployed_at=clock.now()))


def failure(instance_id: str) -> dict[str, Any]:
    """The instance's recorded error, checking it failed once, in history too, without completing."""
    failed = instance(instance_id)
    assert failed.status == "failed" and failed.outcome is None
    types = [e.type for e in events(instance_id)]
    assert types.count("instance.failed") == 1 and "instance.completed" not in types
    return failed.error


# -- a live server ------------------------------------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            with transaction() as session:
                self.tokens[user] = issue_token(session, user, "test")
        return self.tokens[user]

    def post(self, path: str, user: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers={"Authorization": f"Bearer {self.token(user)}"},
                          timeout=BOUND * 2)

    def start(self, process_key: str, data: dict[str, Any]) -> httpx.Response:
        return self.post("/api/v1/instances", STARTER, {"process_key": process_key, "data": data})


@pytest.fixture
def server() -> Iterator[LiveServer]:
    """waitress serving the app on a free port, in this process (so env settings apply), on the test database."""
    with serving(threads=4) as url:
        yield LiveServer(url)


@dataclass
class HealthLog:
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


def while_polling_health(server: LiveServer, work: Callable[[], httpx.Response]) -> tuple[httpx.Response, HealthLog,
                                                                                           float]:
    """Run `work` (a runaway command) in a thread and poll /health until it is done."""
    done: dict[str, Any] = {}
    started = time.monotonic()

    def run() -> None:
        try:
            done["response"] = work()
        finally:
            done["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run)
    worker.start()
    log = HealthLog()
    with httpx.Client(timeout=BOUND) as client:
        time.sleep(0.1)  # let the command get going (and take its locks) first
        while worker.is_alive():
            asked = time.monotonic()
            log.statuses.append(client.get(server.url + "/api/v1/health").status_code)
            log.latencies.append(time.monotonic() - asked)
            time.sleep(0.05)
    worker.join()
    return done["response"], log, done["seconds"]


def assert_health_kept_answering(log: HealthLog) -> None:
    assert len(log.statuses) >= 2, f"/health answered only {len(log.statuses)} time(s) while the runaway ran"
    assert set(log.statuses) == {200}
    assert max(log.latencies) < 5


def assert_next_instance_works(server: LiveServer) -> None:
    response = server.start("reimbursement", claim())
    assert response.status_code == 201 and response.json()["status"] == "running"


# -- runaway scripts and diagrams on a live server ----------------------------------------------------


def test_endless_script_fails_its_instance_at_the_time_limit_while_health_answers(server, monkeypatch):
    monkeypatch.setenv("FINFLOW_SCRIPT_TIMEOUT", "2")
    monkeypatch.setenv("FINFLOW_SCRIPT_MAX_STEPS", str(10**12))
    deploy_files(**{"runaway_script.bpmn": SCRIPT.format(script="n = 0\nwhile True:\n    n = n + 1")})
    response, health, seconds = while_polling_health(server, lambda: server.start("runaway_script", {}))
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "failed"
    assert body["error"]["node_id"] == "compute" and body["error"]["type"] == "ScriptLimitExceeded"
    assert body["error"]["message"].startswith("脚本超出运行时间限制（2 秒）")
    assert 2 <= seconds < BOUND
    assert_health_kept_answering(health)
    assert failure(body["id"])["message"].startswith("脚本超出运行时间限制（2 秒）")
    assert_next_instance_works(server)


def test_self_calling_process_fails_at_the_command_time_bound_while_health_answers(server, monkeypatch):
    monkeypatch.setenv("FINFLOW_MAX_COMMAND_SECONDS", "2")
    monkeypatch.setenv("FINFLOW_MAX_ENGINE_STEPS", str(10**9))
    with pytest.raises(DeploymentInvalid, match="recursive"):
        deploy_files(**{"recursive.bpmn": RECURSIVE})  # refused at deploy; one stored earlier still runs:
    store_unchecked("recursive", {"recursive.bpmn": RECURSIVE})
    response, health, seconds = while_polling_health(server, lambda: server.start("recursive", {}))
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "failed" and body["error"]["type"] == "EngineLimitExceeded"
    assert body["error"]["message"].startswith("流程单次处理超出时间限制（2 秒）")
    assert body["error"]["node_id"] in ("start", "again")
    assert 2 <= seconds < BOUND
    assert_health_kept_answering(health)
    failure(body["id"])
    assert_next_instance_works(server)


def test_gateway_loop_through_a_script_fails_at_the_step_bound_while_health_answers(server, monkeypatch):
    # Each pass is made slow (a script busy for a while) so the loop lasts long enough to poll /health.
    monkeypatch.setenv("FINFLOW_MAX_ENGINE_STEPS", "30")
    monkeypatch.setenv("FINFLOW_SCRIPT_TIMEOUT", "10")  # a pass must not hit the script's own limit on a busy machine
    deploy_files(**{"script_loop.bpmn": SCRIPT_LOOP.format(script="n = n + 1\nfor i in range(900000):\n    pass")})
    response, health, seconds = while_polling_health(server, lambda: server.start("script_loop", {"n": 0}))
    body = response.json()
    assert response.status_code == 201 and body["status"] == "failed"
    assert body["error"]["message"].startswith("流程单次处理超出步数限制（30 步）")
    assert body["error"]["node_id"] in ("count", "more")
    assert seconds < BOUND
    assert_health_kept_answering(health)
    failure(body["id"])
    passes = [e for e in events(body["id"]) if e.type == "node.completed" and e.node_id == "count"]
    assert 10 <= len(passes) <= 30  # the loop ran, and stopped at the bound
    assert_next_instance_works(server)


# -- the bounds, without a server ---------------------------------------------------------------------


def test_a_loop_without_tasks_fails_instead_of_passing_for_completed():
    """SpiffWorkflow stops looking 1000 levels down the task tree and would call such an instance
    completed; with the default bounds it fails, naming the loop, well before the step bound."""
    deploy_files(**{"gateway_loop.bpmn": GATEWAY_LOOP})
    began = time.monotonic()
    iid = start("gateway_loop", STARTER, {})
    assert time.monotonic() - began < BOUND
    error = failure(iid)
    assert error["type"] == "EngineLimitExceeded" and error["node_id"] in ("join", "check")
    assert error["message"].startswith(f"流程循环次数过多（任务树超过 {MAX_TASK_DEPTH} 层）")


def test_the_step_bound_counts_gateways_too(monkeypatch):
    monkeypatch.setenv("FINFLOW_MAX_ENGINE_STEPS", "25")
    deploy_files(**{"gateway_loop.bpmn": GATEWAY_LOOP})
    error = failure(start("gateway_loop", STARTER, {}))
    assert error["message"].startswith("流程单次处理超出步数限制（25 步）")
    assert "请检查流程是否有不会结束的循环" in error["message"]


def test_a_loop_of_auto_approvals_is_bounded_and_the_approval_still_answers(as_user, monkeypatch):
    monkeypatch.setenv("FINFLOW_MAX_ENGINE_STEPS", "40")
    deploy_files(**{"self_approving.bpmn": SELF_APPROVING})
    iid = start("self_approving", STARTER, {})
    assert instance(iid).status == "running"
    task = ready(iid)[0]
    response = as_user(task.candidates[0]).post(f"/api/v1/tasks/{task.id}/complete",
                                       json={"action": "approve", "comment": "同意", "form_data": {}})
    assert response.status_code == 200
    error = failure(iid)
    assert error["node_id"] in ("review", "again")
    assert error["message"].startswith("流程单次处理超出步数限制（40 步）")
    assert sum(e.type == "task.auto_approved" for e in events(iid)) >= 10


def test_a_slow_script_is_cut_at_the_command_deadline(monkeypatch):
    """Each evaluation has its own limit, but all of a command's share its deadline."""
    monkeypatch.setenv("FINFLOW_SCRIPT_TIMEOUT", "60")
    monkeypatch.setenv("FINFLOW_SCRIPT_MAX_STEPS", str(10**12))
    monkeypatch.setenv("FINFLOW_MAX_COMMAND_SECONDS", "1")
    deploy_files(**{"runaway_script.bpmn": SCRIPT.format(script="while True:\n    pass")})
    began = time.monotonic()
    error = failure(start("runaway_script", STARTER, {}))
    assert time.monotonic() - began < BOUND
    assert error["node_id"] == "compute"
    assert error["message"].startswith("脚本运行时流程单次处理超出时间限制（1 秒）")


@pytest.mark.parametrize(("name", "value"), [("FINFLOW_MAX_ENGINE_STEPS", "lots"),
                                             ("FINFLOW_MAX_COMMAND_SECONDS", "0")])
def test_a_bad_setting_is_refused_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        CommandLimits.from_env()
