"""The restricted script environment: designers' code cannot reach the host, and a failing expression
fails its instance with a recorded error while the server keeps serving."""

import time
from decimal import Decimal
from xml.sax.saxutils import escape

import pytest

from engine.db import transaction
from engine.history import Actor
from engine.runner.execution import SCRIPT_ENGINE
from engine.runner.limits import ScriptLimitExceeded
from engine.runner.script_engine import (
    NonFiniteNumber,
    RestrictedCodeError,
    RestrictedEnvironment,
    compile_expression,
    compile_script,
)
from engine.services.deployments import deploy
from tests.conftest import PROCESSES
from tests.helpers import act, claim, events, instance, start

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
        deploy(session, {"scripted.bpmn": PROCESS.format(script=escape(script)), "approval.json": APPROVAL},
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
    ("raise SystemExit(1)", "SystemExit"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ("raise BaseException('stop the worker')", "BaseException"),
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


# -- limits: time, steps and size of one evaluation --------------------------------------------------

STOPPED = 30  # seconds: a generous bound that proves "it stopped", not a speed


def run_script(script: str, **data):
    """Run a script in the sandbox the engine uses; returns the task data it leaves."""
    context = dict(data)
    SCRIPT_ENGINE.environment.execute(script, context)
    return context


def assert_fails_naming(script: str, needle: str, **data) -> None:
    with pytest.raises(ScriptLimitExceeded) as refused:
        run_script(script, **data)
    assert needle in str(refused.value)


@pytest.mark.parametrize(("script", "reason"), [
    ("while True:\n    pass", "脚本超出步数限制（1000000 步"),
    ("i = 0\nwhile i < 20000000:\n    i += 1", "脚本超出步数限制（1000000 步"),
    ("x = list(range(10**10))", "脚本超出大小限制（1000000）：range"),
    ("x = 'x' * 10**10", "脚本超出大小限制（1000000）：*"),
    ("x = 10 ** 10 ** 10", "脚本超出大小限制：**"),
])
def test_runaway_script_fails_its_instance_within_the_limit_naming_it(script, reason):
    deploy_script(script)
    began = time.monotonic()
    iid = start("scripted", "suxiaoyun", {"amount": 5})
    assert time.monotonic() - began < STOPPED
    failed = instance(iid)
    assert failed.status == "failed" and failed.error["node_id"] == "compute"
    assert failed.error["type"] == "ScriptLimitExceeded" and failed.error["message"].startswith(reason)
    assert [e.node_id for e in events(iid) if e.type == "instance.failed"] == ["compute"]


def test_an_endless_script_stops_at_the_time_limit(monkeypatch):
    monkeypatch.setenv("FINFLOW_SCRIPT_TIMEOUT", "0.5")
    monkeypatch.setenv("FINFLOW_SCRIPT_MAX_STEPS", str(10**12))
    began = time.monotonic()
    assert_fails_naming("while True:\n    pass", "脚本超出运行时间限制（0.5 秒）")
    assert 0.5 <= time.monotonic() - began < STOPPED


@pytest.mark.parametrize("script", [
    "try:\n    while True:\n        pass\nexcept BaseException:\n    caught = True",
    "try:\n    while True:\n        pass\nfinally:\n    while True:\n        pass",
    "def again():\n    try:\n        again()\n    except BaseException:\n        again()\nagain()",
    "f = lambda n: f(n - 1) + f(n - 1) if n else 1\nx = f(50)",
    "x = sum(1 for i in range(10**6) for j in range(10**6))",
])
def test_catching_the_limit_or_hiding_the_loop_does_not_escape_it(script, monkeypatch):
    monkeypatch.setenv("FINFLOW_SCRIPT_TIMEOUT", "2")
    began = time.monotonic()
    with pytest.raises(ScriptLimitExceeded):
        run_script(script)
    assert time.monotonic() - began < STOPPED


@pytest.mark.parametrize(("script", "what"), [
    ("x = [0] * 10**10", "*"),
    ("x = 10**6 * 'ab'", "*"),
    ("x = 1 << 10**10", "<<"),
    ("x = pow(10, 10**10)", "**"),
    ("x = pow(3, 2**5000, 2**5000 + 1)", "pow(a, b, m)"),
    ("x = 2\nfor i in range(40):\n    x = x * x", "*"),
    ("s = 'ab'\nfor i in range(40):\n    s = s + s", "+"),
    ("s = 'ab'\nfor i in range(40):\n    s += s", "+"),
    ("s = 'ab'\nfor i in range(40):\n    s = f'{s}{s}'", "f-string"),
    ("w = 10**10\ns = f'{1:>{w}}'", "f-string"),
    ("s = '%0*d' % (10**10, 1)", "%"),
    ("s = '%.999999999f' % 1.5", "%"),
    ("x = [1]\nfor i in range(40):\n    x.extend(x)", "extend"),
    ("x = [1]\nfor i in range(40):\n    x = [*x, *x]", "*"),
    ("x = [1]\nfor i in range(40):\n    x[:0] = x", "切片赋值"),
    ("x = sum([[0] * 10**6] * 1000, [])", "+"),
    ("s = ''.join(['x' * 10**6] * 1000)", "join"),
    ("s = 'ab'.replace('', 'x' * 10**6)", "replace"),
    ("s = 'a'.ljust(10**10)", "ljust"),
    ("s = str.center('a', 10**10)", "ljust/rjust/center/zfill"),
    ("s = '\\t'.expandtabs(10**10)", "expandtabs"),
    ("s = 'aaaa'.translate({97: 'x' * 10**6})", "translate"),
    ("b = (1).to_bytes(10**10, 'big')", "to_bytes"),
    ("x = 2 ** 13000\nfor i in range(2000):\n    x = x + x", "脚本写入的数据"),
    ("a = [0] * 10**6\nx = [a] * 1000", "脚本写入的数据"),
    ("x = []\nx.append(x)", "脚本写入的数据"),
])
def test_one_operation_cannot_build_a_huge_value(script, what):
    began = time.monotonic()
    assert_fails_naming(script, what)
    assert time.monotonic() - began < STOPPED


def test_an_expression_is_bounded_too():
    with pytest.raises(ScriptLimitExceeded, match="步数限制"):
        SCRIPT_ENGINE.environment.evaluate("len([1 for i in range(10**6) for j in range(10**6)]) > 0", {})
    with pytest.raises(ScriptLimitExceeded, match="表达式的结果"):
        SCRIPT_ENGINE.environment.evaluate("[items] * 10**6", {"items": list(range(1000))})


def test_a_runaway_decision_cell_fails_the_instance_at_the_decision():
    dmn = (PROCESSES / "reimbursement_routing.dmn").read_text(encoding="utf-8")
    bundle = {path.name: path.read_text(encoding="utf-8") for path in
              [PROCESSES / "reimbursement.bpmn", *(PROCESSES / "forms").glob("*.json")]}
    bundle["reimbursement_routing.dmn"] = dmn.replace(
        "<text>amount</text>", "<text>amount + len([1 for i in range(10**6) for j in range(10**6)])</text>", 1)
    with transaction() as session:
        deploy(session, bundle, Actor(None, "cli"))
    iid = start("reimbursement", "suxiaoyun", claim())
    act(iid, "manager_approval")
    failed = instance(iid)
    assert failed.status == "failed" and failed.error["type"] == "ScriptLimitExceeded"
    assert failed.error["message"].startswith("脚本超出步数限制") and failed.error["node_id"] == "reimbursement_routing"


def test_the_size_limit_is_configurable(monkeypatch):
    monkeypatch.setenv("FINFLOW_SCRIPT_MAX_SIZE", "100")
    assert_fails_naming("s = 'x' * 101", "脚本超出大小限制（100）")
    assert run_script("s = 'x' * 100")["s"] == "x" * 100
    monkeypatch.setenv("FINFLOW_SCRIPT_MAX_STEPS", "10")
    assert_fails_naming("for i in range(11):\n    pass", "脚本超出步数限制（10 步")


def test_slice_assignment_in_a_loop_target_is_refused_at_deploy():
    from engine.errors import DeploymentInvalid

    with pytest.raises(DeploymentInvalid) as refused:
        deploy_script("x = [1]\nfor x[:0] in [x, x]:\n    pass")
    assert refused.value.details["element_id"] == "compute" and "Slice assignment" in refused.value.message


def test_everyday_scripts_work_as_before():
    data = run_script(
        "lines = sorted(invoices, key=lambda i: i['amount'])\n"
        "total = sum(i['amount'] for i in lines)\n"
        "label = f'{len(lines)} 张发票，合计 {total:,.2f} 元'\n"
        "code = '%s-%04d' % ('BX', 7)\n"
        "first, *rest = [i['number'] for i in lines]\n"
        "numbers = [*rest, first]\n"
        "numbers[0:1] = ['X']\n"
        "numbers += ['Y'] * 2\n"
        "padded = code.ljust(10, '.') + '|'\n"
        "big = 2 ** 64 * 3\n"
        "ratio = Decimal('0.85') * 2\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    caught = True\n",
        invoices=[{"number": "A", "amount": 30}, {"number": "B", "amount": 12.5}])
    assert data["total"] == 42.5 and data["label"] == "2 张发票，合计 42.50 元"
    assert data["code"] == "BX-0007" and data["padded"] == "BX-0007...|"
    assert data["numbers"] == ["X", "B", "Y", "Y"] and data["big"] == 3 * 2**64
    assert str(data["ratio"]) == "1.70" and data["caught"] is True


@pytest.mark.parametrize("script", ["x = float('nan')", "x = [1, {'a': float('inf')}]", "x = Decimal('NaN')",
                                    "x = 1e308 * 10"])
def test_a_script_making_nan_or_infinity_fails_its_instance_instead_of_skipping_rules(script):
    """A comparison with NaN is false: such a value must never reach a gateway or a DMN table."""
    environment = RestrictedEnvironment(lambda name, params: None)
    with pytest.raises(NonFiniteNumber, match="非有限数值"):
        environment.execute(script, {})
    with pytest.raises(NonFiniteNumber):
        environment.evaluate("amount * 1", {"amount": float("nan")})
    assert environment.evaluate("amount > 5000", {"amount": Decimal("5000.01")}) is True
