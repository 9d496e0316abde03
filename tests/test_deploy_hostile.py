"""Diagrams written elsewhere: multi-process files, call activities across files, recursion, and every way a
file can fail to parse, each a 201 that runs or a 422 naming file, element and line, never a 500 or a hang.

The BPMN and DMN files are built here, small, so each test shows the one thing it is about.
"""

from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.runner.model import load_model
from tests.test_deploy import DESIGNER, upload

APPLICANT = "suxiaoyun"
FORM = '{"type": "object", "properties": {"amount": {"type": "number", "title": "金额"}}}'
FORMS = {"apply.json": FORM, "approval.json": FORM}
DMN13 = "https://www.omg.org/spec/DMN/20191111/MODEL/"
DMN12 = "http://www.omg.org/spec/DMN/20180521/MODEL/"


# -- building diagrams ------------------------------------------------------------------------------

def props(**values: str) -> str:
    inner = "".join(f'<spiffworkflow:property name="finflow.{k}" value="{v}" />' for k, v in values.items())
    return extensions(f"<spiffworkflow:properties>{inner}</spiffworkflow:properties>")


def extensions(inner: str) -> str:
    return f"<bpmn:extensionElements>{inner}</bpmn:extensionElements>"


def user_task(id_: str, assignee: str = "manager(starter)", form: str = "approval", name: str | None = None) -> str:
    return f'<bpmn:userTask id="{id_}" name="{name or id_}">{props(assignee=assignee, form=form)}</bpmn:userTask>'


def call(id_: str, called: str) -> str:
    return f'<bpmn:callActivity id="{id_}" name="{id_}" calledElement="{called}" />'


def service(id_: str, operator: str, parameters: str = "") -> str:
    return (f'<bpmn:serviceTask id="{id_}">' + extensions(
        f'<spiffworkflow:serviceTaskOperator id="{operator}" resultVariable="result">'
        f"<spiffworkflow:parameters>{parameters}</spiffworkflow:parameters></spiffworkflow:serviceTaskOperator>")
        + "</bpmn:serviceTask>")


def rule(id_: str, decision: str) -> str:
    return (f'<bpmn:businessRuleTask id="{id_}"><bpmn:extensionElements><spiffworkflow:calledDecisionId>'
            f'{decision}</spiffworkflow:calledDecisionId></bpmn:extensionElements></bpmn:businessRuleTask>')


def process(key: str, *nodes: str, start_form: str | None = "apply", executable: bool = True) -> str:
    """A process running `nodes` in sequence between a start and an end event."""
    ids = [f"{key}_start", *(re.search(r'id="([^"]+)"', n).group(1) for n in nodes), f"{key}_end"]
    start = f'<bpmn:startEvent id="{key}_start">{props(form=start_form) if start_form else ""}</bpmn:startEvent>'
    flows = "".join(f'<bpmn:sequenceFlow id="{key}_flow{i}" sourceRef="{a}" targetRef="{b}" />'
                    for i, (a, b) in enumerate(zip(ids, ids[1:], strict=False)))
    return (f'<bpmn:process id="{key}" name="{key}" isExecutable="{str(executable).lower()}">{start}{"".join(nodes)}'
            f'<bpmn:endEvent id="{key}_end" />{flows}</bpmn:process>')


def bpmn(*processes: str, namespaces: str = "", tail: str = "") -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"\n'
            '    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" ' + namespaces +
            '\n    id="definitions" targetNamespace="https://finflow.test/bpmn">\n' +
            "\n".join(processes) + tail + "\n</bpmn:definitions>\n")


def decision_table(id_: str = "big_amount", prefix: str = "") -> str:
    """One FIRST decision: amount > 100 → big = True, else False."""
    p = prefix
    return (f'<{p}decision id="{id_}" name="{id_}"><{p}decisionTable id="{id_}_table" hitPolicy="FIRST">'
            f'<{p}input id="{id_}_in" label="金额"><{p}inputExpression id="{id_}_expr" typeRef="number">'
            f'<{p}text>amount</{p}text></{p}inputExpression></{p}input>'
            f'<{p}output id="{id_}_out" name="big" typeRef="boolean" />'
            f'<{p}rule id="{id_}_r1"><{p}inputEntry id="{id_}_r1_in"><{p}text>&gt; 100</{p}text></{p}inputEntry>'
            f'<{p}outputEntry id="{id_}_r1_out"><{p}text>True</{p}text></{p}outputEntry></{p}rule>'
            f'<{p}rule id="{id_}_r2"><{p}inputEntry id="{id_}_r2_in"><{p}text>-</{p}text></{p}inputEntry>'
            f'<{p}outputEntry id="{id_}_r2_out"><{p}text>False</{p}text></{p}outputEntry></{p}rule>'
            f'</{p}decisionTable></{p}decision>')


def dmn(body: str | None = None, namespace: str = DMN13, diagram: str = "") -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<definitions xmlns="{namespace}" id="dmn_definitions" name="决策" namespace="https://finflow.test/dmn">\n'
            f'{decision_table() if body is None else body}{diagram}\n</definitions>\n')


def dmndi(dmndi_ns: str) -> str:
    """Diagram interchange as Camunda Modeler writes it: a shape and an edge with waypoints."""
    return (f'<dmndi:DMNDI xmlns:dmndi="{dmndi_ns}" xmlns:dc="http://www.omg.org/spec/DMN/20180521/DC/" '
            'xmlns:di="http://www.omg.org/spec/DMN/20180521/DI/"><dmndi:DMNDiagram id="diagram">'
            '<dmndi:DMNShape id="shape" dmnElementRef="big_amount">'
            '<dc:Bounds height="80" width="180" x="160" y="100" />'
            '</dmndi:DMNShape><dmndi:DMNEdge id="edge" dmnElementRef="big_amount">'
            '<di:waypoint x="1" y="2" /><di:waypoint x="3" y="4" /></dmndi:DMNEdge></dmndi:DMNDiagram></dmndi:DMNDI>')


# -- driving it through the API ---------------------------------------------------------------------

def deploy(as_user, files: dict[str, str]):
    return upload(as_user(DESIGNER), files)


def refused(as_user, files: dict[str, str]) -> dict:
    response = deploy(as_user, files)
    assert response.status_code == 422, response.json
    return response.json["error"]


def start(as_user, key: str, amount: float = 500) -> dict:
    response = as_user(APPLICANT).post("/api/v1/instances", json={"process_key": key, "data": {"amount": amount}})
    assert response.status_code == 201, response.json
    return response.json


def approve_all(as_user, instance: dict) -> dict:
    """Approve every open task until the instance ends; returns the instance and the nodes decided."""
    decided = []
    for _ in range(10):
        if instance["status"] != "running":
            break
        task = instance["current_tasks"][0]
        response = as_user(task["candidates"][0]).post(f"/api/v1/tasks/{task['id']}/complete",
                                                      json={"action": "approve", "comment": "同意", "form_data": {}})
        assert response.status_code == 200, response.json
        decided.append(task["node_id"])
        instance = as_user(APPLICANT).get(f"/api/v1/instances/{instance['id']}").json
    return {**instance, "decided": decided}


def history(as_user, instance: dict) -> list[dict]:
    return as_user(APPLICANT).get(f"/api/v1/instances/{instance['id']}/history").json["events"]


# -- 1. several processes in one file ---------------------------------------------------------------

def test_each_process_of_a_multi_process_file_starts_its_own_diagram(as_user):
    files = {"three.bpmn": bpmn(process("first", user_task("first_review")),
                                process("second", user_task("second_review")),
                                process("third", user_task("third_review"))), **FORMS}
    response = deploy(as_user, files)
    assert response.status_code == 201, response.json
    assert sorted(d["process_key"] for d in response.json["deployed"]) == ["first", "second", "third"]
    for key in ("second", "third", "first"):
        instance = start(as_user, key)
        assert instance["process_key"] == key
        assert [t["node_id"] for t in instance["current_tasks"]] == [f"{key}_review"]


def test_a_multi_process_file_needs_only_the_decisions_of_the_process_a_version_runs(as_user):
    """The second process uses a decision the first does not; the first still starts from its own version."""
    files = {"pair.bpmn": bpmn(process("plain", user_task("plain_review")),
                               process("routed", rule("routed_rule", "big_amount"), user_task("routed_review"))),
             "big_amount.dmn": dmn(), **FORMS}
    assert deploy(as_user, files).status_code == 201
    assert start(as_user, "plain")["current_tasks"][0]["node_id"] == "plain_review"
    assert start(as_user, "routed")["current_tasks"][0]["node_id"] == "routed_review"


# -- 2. call activities across files ----------------------------------------------------------------

CHILD = bpmn(process("child", user_task("child_review", name="子流程复核"), start_form=None))


def test_a_call_activity_into_another_file_runs_its_user_task_to_the_end(as_user):
    files = {"parent.bpmn": bpmn(process("parent", user_task("parent_review"), call("call_child", "child"))),
             "child.bpmn": CHILD, **FORMS}
    response = deploy(as_user, files)
    assert response.status_code == 201, response.json
    instance = start(as_user, "parent")
    assert [t["node_id"] for t in instance["current_tasks"]] == ["parent_review"]
    done = approve_all(as_user, instance)
    assert done["status"] == "completed" and done["decided"] == ["parent_review", "child_review"]
    assert "子流程复核" in [e["payload"]["name"] for e in history(as_user, instance) if e["type"] == "task.created"]
    again = deploy(as_user, files)  # the same files are the same versions
    assert again.status_code == 201 and not any(d["created"] for d in again.json["deployed"])


def test_a_call_chain_across_three_files_runs(as_user):
    files = {"top.bpmn": bpmn(process("top", call("call_middle", "middle"))),
             "middle.bpmn": bpmn(process("middle", call("call_child", "child"), start_form=None)),
             "child.bpmn": CHILD, **FORMS}
    assert deploy(as_user, files).status_code == 201
    done = approve_all(as_user, start(as_user, "top"))
    assert done["status"] == "completed" and done["decided"] == ["child_review"]


def test_a_user_task_inside_a_called_process_is_checked_at_deploy(as_user):
    child = bpmn(process("child", user_task("child_review", assignee="boss_of(starter)"), start_form=None))
    error = refused(as_user, {"parent.bpmn": bpmn(process("parent", call("call_child", "child"))),
                              "child.bpmn": child, **FORMS})
    assert error["details"]["file"] == "child.bpmn" and error["details"]["element_id"] == "child_review"
    assert "boss_of" in error["message"]


def test_an_element_id_defined_differently_in_two_processes_of_one_version_is_refused(as_user):
    child = bpmn(process("child", user_task("review", assignee="role(cfo)"), start_form=None))
    error = refused(as_user, {"parent.bpmn": bpmn(process("parent", user_task("review"), call("call_child", "child"))),
                              "child.bpmn": child, **FORMS})
    assert error["details"]["element_id"] == "review"
    assert sorted(error["details"]["processes"]) == ["child", "parent"]
    assert "'parent'" in error["message"] and "'child'" in error["message"]


def test_a_call_to_a_process_not_in_the_deployment_names_the_calling_element(as_user):
    error = refused(as_user, {"parent.bpmn": bpmn(process("parent", call("call_missing", "nowhere"))), **FORMS})
    assert error["details"]["element_id"] == "call_missing" and error["details"]["file"] == "parent.bpmn"
    assert "nowhere" in error["message"] and error["details"]["line"] == 5


def test_a_call_to_a_process_that_is_not_executable_is_refused(as_user):
    error = refused(as_user, {"parent.bpmn": bpmn(process("parent", call("call_draft", "draft")),
                                                  process("draft", user_task("draft_review"), executable=False)),
                              **FORMS})
    assert error["details"]["element_id"] == "call_draft" and "not executable" in error["message"]


# -- 3. recursion -----------------------------------------------------------------------------------

def test_a_process_calling_itself_is_refused_naming_the_cycle(as_user):
    began = time.monotonic()
    error = refused(as_user, {"loop.bpmn": bpmn(process("loop", call("call_self", "loop"))), **FORMS})
    assert error["details"]["cycle"] == ["loop", "loop"] and error["details"]["element_id"] == "call_self"
    assert time.monotonic() - began < 30


def test_a_loop_with_no_way_to_an_end_is_refused_naming_it(as_user):
    """SpiffWorkflow recursed without end creating an instance of such a process (a 500 at start)."""
    trapped = process("trap", user_task("a"), user_task("b")).replace(
        'sourceRef="b" targetRef="trap_end"', 'sourceRef="b" targetRef="a"')
    error = refused(as_user, {"trap.bpmn": bpmn(trapped), **FORMS})
    assert error["details"]["loop"] == ["a", "b"] and error["details"]["element_id"] == "a"
    assert "end event" in error["message"]
    with_exit = process("exit", user_task("a"), '<bpmn:exclusiveGateway id="again" default="exit_flow2" />').replace(
        "</bpmn:process>", '<bpmn:sequenceFlow id="back" sourceRef="again" targetRef="a"><bpmn:conditionExpression>'
        "decision == 'reject'</bpmn:conditionExpression></bpmn:sequenceFlow></bpmn:process>")
    response = deploy(as_user, {"exit.bpmn": bpmn(with_exit), **FORMS})
    assert response.status_code == 201, response.json  # a loop with a way out


def test_recursion_through_another_file_is_refused_naming_the_cycle(as_user):
    error = refused(as_user, {"a.bpmn": bpmn(process("a", call("a_calls_b", "b"))),
                              "b.bpmn": bpmn(process("b", user_task("b_review"), call("b_calls_a", "a"))),
                              **FORMS})
    assert error["details"]["cycle"] in (["a", "b", "a"], ["b", "a", "b"])
    assert "a → b → a" in error["message"] or "b → a → b" in error["message"]
    assert as_user(DESIGNER).get("/api/v1/definitions/a").status_code == 404  # nothing stored


def test_a_cycle_below_the_started_process_is_refused(as_user):
    error = refused(as_user, {"top.bpmn": bpmn(process("top", call("top_calls_b", "b"))),
                              "b.bpmn": bpmn(process("b", call("b_calls_c", "c")),
                                             process("c", call("c_calls_b", "b"))),
                              **FORMS})
    assert error["details"]["cycle"] in (["b", "c", "b"], ["c", "b", "c"])


# -- 4. parse errors: always a 422 naming the file, element and line --------------------------------

def routed_process(decision: str = "big_amount") -> dict[str, str]:
    return {"routed.bpmn": bpmn(process("routed", rule("routing", decision), user_task("routed_review"))), **FORMS}


def test_a_dmn_file_without_a_decision_is_a_422_naming_the_file(as_user):
    error = refused(as_user, {**routed_process(), "empty.dmn": dmn(body="")})
    assert error["details"]["file"] == "empty.dmn" and "no <decision>" in error["message"]


def test_a_dmn_file_with_two_decisions_is_refused_naming_the_second(as_user):
    error = refused(as_user, {**routed_process(), "two.dmn": dmn(body=decision_table() + decision_table("other"))})
    assert error["details"]["file"] == "two.dmn" and error["details"]["element_id"] == "other"


def test_a_data_store_is_refused_naming_the_element(as_user):
    store = '\n<bpmn:dataStore id="ledger_store" name="ledger" />'
    error = refused(as_user, {"stored.bpmn": bpmn(process("stored", user_task("stored_review")), tail=store),
                              **FORMS})
    assert error["details"]["element_id"] == "ledger_store" and error["details"]["file"] == "stored.bpmn"
    assert "ledger" in error["message"] and error["details"]["line"] == 6


def decided(as_user, amount: float) -> dict:
    instance = start(as_user, "routed", amount)
    return next(e["payload"]["outputs"] for e in history(as_user, instance) if e["type"] == "dmn.decision")


@pytest.mark.parametrize("dmn_file", [
    dmn(namespace=DMN12, diagram=dmndi("http://www.omg.org/spec/DMN/20180521/DMNDI/")),
    dmn(namespace=DMN13, diagram=dmndi("https://www.omg.org/spec/DMN/20191111/DMNDI/")),
    dmn(namespace="http://www.omg.org/spec/DMN/20151101/dmn.xsd"),
    # the DMN namespace bound to a prefix, as the DMN TCK and some modelers write it
    dmn(body=decision_table(prefix="semantic:")).replace('<definitions xmlns=', '<semantic:definitions xmlns:semantic=')
    .replace("</definitions>", "</semantic:definitions>"),
], ids=["dmn12-dmndi", "dmn13-dmndi", "dmn11", "dmn13-prefixed"])
def test_dmn_files_modelers_write_deploy_and_decide(as_user, dmn_file):
    response = deploy(as_user, {**routed_process(), "big_amount.dmn": dmn_file})
    assert response.status_code == 201, response.json
    assert decided(as_user, 500) == {"big": True} and decided(as_user, 50) == {"big": False}


def test_a_dmn_file_in_another_namespace_names_the_file_line_prefix_and_the_versions_read(as_user):
    foreign = dmn().replace('<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/"',
                            '<rules:definitions xmlns:rules="https://example.com/rules"').replace(
        "</definitions>", "</rules:definitions>")
    error = refused(as_user, {**routed_process(), "big_amount.dmn": foreign})
    assert error["details"]["file"] == "big_amount.dmn" and error["details"]["line"] == 2
    assert error["details"]["prefix"] == "rules"
    assert "DMN 1.1, 1.2 and 1.3" in error["message"]


def test_camunda_decision_ref_is_explained(as_user):
    task = '<bpmn:businessRuleTask id="routing" camunda:decisionRef="big_amount" />'
    files = {"routed.bpmn": bpmn(process("routed", task), namespaces='xmlns:camunda="http://camunda.org/schema/1.0/bpmn"'),
             "big_amount.dmn": dmn(), **FORMS}
    error = refused(as_user, files)
    assert error["details"]["element_id"] == "routing" and error["details"]["decision"] == "big_amount"
    assert "spiffworkflow:calledDecisionId" in error["message"] and "camunda:decisionRef" in error["message"]


def test_a_decision_that_is_not_deployed_is_named_with_the_calling_task(as_user):
    error = refused(as_user, {**routed_process("no_such_decision"), "big_amount.dmn": dmn()})
    assert error["details"]["element_id"] == "routing" and "no_such_decision" in error["message"]


def test_an_undeclared_namespace_prefix_names_file_line_and_prefix(as_user):
    text = bpmn(process("prefixed", user_task("prefixed_review"))).replace(
        '<bpmn:endEvent id="prefixed_end" />', '\n<bpmn:endEvent id="prefixed_end" camunda:asyncBefore="true" />')
    error = refused(as_user, {"prefixed.bpmn": text, **FORMS})
    assert error["details"] == {"file": "prefixed.bpmn", "line": 6} and "camunda" in error["message"]


@pytest.mark.parametrize(("name", "text"), [
    # SpiffWorkflow's DMN parser reads attrib['id'] of every input (a KeyError inside it, before this check)
    ("big_amount.dmn", dmn().replace('<input id="big_amount_in" ', "<input ")),
    ("big_amount.dmn", dmn().replace('<decision id="big_amount" ', "<decision ")),
    ("big_amount.dmn", dmn(body='<decision id="big_amount"><literalExpression id="e"><text>1</text>'
                                "</literalExpression></decision>")),
    ("big_amount.dmn", "<definitions/>"),
    ("big_amount.dmn", dmn().replace("</decisionTable>", "<annotation id='x'/></decisionTable>")),
    ("approval.json", "true"),
    ("approval.json", "[" * 100_000 + "]" * 100_000),
    ("approval.json", '{"type": "object", "properties": {"a": {"$ref": "https://example.com/schema.json"}}}'),
    ("approval.json", '{"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}'),
    ("routed.bpmn", bpmn(process("routed", '<bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition>'
                                           "<bpmn:timeDuration>not a duration</bpmn:timeDuration>"
                                           "</bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>"))),
    ("routed.bpmn", bpmn(process("routed", '<bpmn:serviceTask id="routing" />'))),
    ("routed.bpmn", bpmn(process("routed", service("routing", "budget_check",
                                                   '<spiffworkflow:parameter id="amount" value="amount" />')))),
    ("routed.bpmn", bpmn(process("routed", service("routing", "budget_check",
                                                   '<spiffworkflow:parameter id="amount" type="number" '
                                                   'value="__import__(\'os\')" />')))),
    ("routed.bpmn", bpmn(process("routed", call("routing", "")))),
    ("routed.bpmn", bpmn("<bpmn:process id='routed'><bpmn:endEvent id='only_end'/></bpmn:process>")),
    ("routed.bpmn", bpmn('<bpmn:process id="routed"><bpmn:startEvent id="s" /><bpmn:exclusiveGateway id="gw" />'
                         '<bpmn:endEvent id="e1" /><bpmn:endEvent id="e2" /><bpmn:sequenceFlow id="f0" sourceRef="s" '
                         'targetRef="gw" /><bpmn:sequenceFlow id="f1" sourceRef="gw" targetRef="e1" />'
                         '<bpmn:sequenceFlow id="f2" sourceRef="gw" targetRef="e2" /></bpmn:process>')),
    ("routed.bpmn", dmn()),  # a decision uploaded under a .bpmn name
])
def test_no_parser_failure_is_a_500(as_user, name, text):
    files = {**routed_process(), "big_amount.dmn": dmn(), name: text}
    error = refused(as_user, files)
    assert error["details"]["file"] == name, error
    assert name in error["message"], error


# -- 5. files that deploy nothing -------------------------------------------------------------------

def test_a_bpmn_file_without_an_executable_process_is_refused(as_user):
    error = refused(as_user, {"draft.bpmn": bpmn(process("draft", user_task("draft_review"), executable=False)),
                              **FORMS})
    assert error["details"]["file"] == "draft.bpmn" and "no executable process" in error["message"]


def test_unused_decisions_forms_and_processes_are_warned_about(as_user):
    files = {"mixed.bpmn": bpmn(process("used", user_task("used_review")),
                                process("sketch", user_task("sketch_review"), executable=False)),
             "spare.dmn": dmn(), "spare_form.json": FORM, **FORMS}
    response = deploy(as_user, files)
    assert response.status_code == 201, response.json
    assert [d["process_key"] for d in response.json["deployed"]] == ["used"]
    assert response.json["warnings"] == [
        {"file": "mixed.bpmn", "message": "process 'sketch' is not executable (isExecutable=\"false\"); not deployed"},
        {"file": "spare.dmn", "message": "decision 'big_amount' is not used by any process; not deployed"},
        {"file": "spare_form.json", "message": "form 'spare_form' is not used by any process; not deployed"},
    ]
    clean = deploy(as_user, {"mixed.bpmn": bpmn(process("used", user_task("used_review"))), **FORMS})
    assert clean.status_code == 201 and clean.json["warnings"] == []


def test_the_cli_prints_warnings(tmp_path):
    (tmp_path / "used.bpmn").write_text(bpmn(process("used", user_task("used_review"))), encoding="utf-8")
    (tmp_path / "spare.dmn").write_text(dmn(), encoding="utf-8")
    for name, text in FORMS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["deploy", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "used v1 deployed" in result.output
    assert "warning: spare.dmn: decision 'big_amount' is not used by any process; not deployed" in result.output


# -- 6. service operators ---------------------------------------------------------------------------

def test_an_unknown_service_operator_is_refused_naming_element_and_operator(as_user):
    error = refused(as_user, {"serviced.bpmn": bpmn(process("serviced", service("pay_out", "transfer_money"))),
                              **FORMS})
    assert error["details"]["element_id"] == "pay_out" and error["details"]["operator"] == "transfer_money"
    assert "transfer_money" in error["message"] and "budget_check" in error["message"]


def test_an_unknown_operator_inside_a_called_process_is_refused(as_user):
    child = bpmn(process("child", service("pay_out", "transfer_money"), start_form=None))
    error = refused(as_user, {"parent.bpmn": bpmn(process("parent", call("call_child", "child"))),
                              "child.bpmn": child, **FORMS})
    assert error["details"]["file"] == "child.bpmn" and error["details"]["operator"] == "transfer_money"


def test_a_version_stored_before_a_check_existed_still_loads():
    """Instances of an old version must stay operable (withdraw, cancel) after deploy rules get stricter."""
    files = {"serviced.bpmn": bpmn(process("serviced", service("pay_out", "transfer_money"))), **FORMS}
    model = load_model(files, "serviced")
    assert model.key == "serviced" and "pay_out" in model.nodes
