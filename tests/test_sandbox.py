"""The restricted script environment: designers' code cannot reach the host, and a failing expression
fails its instance with a recorded error while the server keeps serving."""

import pytest

from engine.db import transaction
from engine.history import Actor
from engine.runner.script_engine import RestrictedCodeError, compile_expression, compile_script
from engine.services.deployments import deploy
from tests.helpers import claim, events, instance, start

PROCESS = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="d" targetNamespace="t">
  <bpmn:process id="scripted" name="脚本测试" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:scriptTask id="compute" name="计算"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
      <bpmn:script>{script}</bpmn:script></bpmn:scriptTask>
    <bpmn:userTask id="review" name="复核">
      <bpmn:extensionElements><spiffworkflow:properties>
        <spiffworkflow:property name="finflow.assignee" value="role(finance)" />
        <spiffworkflow:property name="finflow.form" value="approval" />
      </spiffworkflow:properties></bpmn:extensionElements>
      <bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing></bpmn:userTask>
    <bpmn:endEvent id="end"><bpmn:incoming>f3</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="compute" />
    <bpmn:sequenceFlow id="f2" sourceRef="compute" targetRef="review" />
    <bpmn:sequenceFlow id="f3" sourceRef="review" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>"""
APPROVAL = '{"type": "object", "properties": {"opinion": {"type": "string", "title": "意见"}}}'


def deploy_script(script: str) -> None:
    with transaction() as session:
        deploy(session, {"scripted.bpmn": PROCESS.format(script=script), "approval.json": APPROVAL},
               Actor(None, "cli"))


@pytest.mark.parametrize("source", [
    "__import__('os').system('id')",
    "().__class__.__bases__[0].__subclasses__()",
    "x.__globals__",
    "getattr(x, '__dict__')",
])
def test_dunder_and_import_tricks_do_not_compile_or_run(source):
    with pytest.raises((RestrictedCodeError, NameError, Exception)) as info:
        code = compile_expression(source)
        eval(code, {"__builtins__": {}, "x": 1})  # even if it compiled, no builtins to reach
    assert info.type is not None


@pytest.mark.parametrize("script", ["import os", "from os import path", "import subprocess",
                                    "x = ().__class__", "z = eval('1')", "exec('x = 1')"])
def test_imports_and_dunders_are_refused_at_deploy(script):
    with pytest.raises(Exception) as info:
        compile_script(script)
    assert isinstance(info.value, SyntaxError)
    from engine.errors import DeploymentInvalid

    with pytest.raises(DeploymentInvalid) as refused:
        deploy_script(script)
    assert refused.value.details["element_id"] == "compute"


@pytest.mark.parametrize(("script", "reason"), [
    ("data = open('/etc/passwd').read()", "open"),
    ("total = amount / 0", "ZeroDivisionError"),
    ("y = undefined_name + 1", "undefined_name"),
    ("x = amount['key']", "TypeError"),
])
def test_runtime_failure_fails_the_instance_with_a_recorded_error(script, reason):
    deploy_script(script)
    iid = start("scripted", "suxiaoyun", {"amount": 5})
    failed = instance(iid)
    assert failed.status == "failed"
    assert reason in failed.error["message"] and failed.error["node_id"] == "compute"
    recorded = [e for e in events(iid) if e.type == "instance.failed"]
    assert len(recorded) == 1 and recorded[0].node_id == "compute"


def test_scripts_can_compute_with_data():
    deploy_script("total = sum([amount, 10])\nlabel = '合计' + str(total)")
    iid = start("scripted", "suxiaoyun", {"amount": 5})
    assert instance(iid).status == "running"
    assert instance(iid).data["total"] == 15 and instance(iid).data["label"] == "合计15"


def test_server_keeps_serving_after_a_failed_instance(as_user):
    deploy_script("y = 1 / 0")
    client = as_user("suxiaoyun")
    failed = client.post("/api/v1/instances", json={"process_key": "scripted", "data": {"amount": 1}})
    assert failed.status_code == 201 and failed.json["status"] == "failed"
    assert failed.json["error"]["node_id"] == "compute"
    ok = client.post("/api/v1/instances", json={"process_key": "reimbursement", "data": claim(amount=10)})
    assert ok.status_code == 201 and ok.json["status"] == "running"
