"""Hostile uploads and hostile code in diagrams, end to end through the API: XML entities (XXE, billion
laughs), DOCTYPEs, DTDs and oversized bodies in BPMN and DMN files; sandbox escapes and runaway
expressions in scripts, gateway conditions and decision cells. Each one answers a 4xx JSON error naming the
problem, or fails its instance with a clear error, within a time bound; never a 500, never a hang, and the
host's files never show up in an answer or in what is stored.

Not repeated here: tests/test_deploy.py (one XXE file, a 6 MiB upload), tests/test_deploy_hostile.py
(parser failures), tests/test_sandbox.py (the sandbox's own compile and size guards, unit by unit).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from xml.sax.saxutils import escape

import pytest
from sqlalchemy import select

from engine.db import transaction
from engine.models import ProcessVersion
from tests.test_deploy import DESIGNER, files, upload

BOUND = 30  # seconds: "it answered", not a speed
SECRET_FILE = "/etc/passwd"
APPLICANT = "suxiaoyun"


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """`call()`, or a test failure if it has not answered after `seconds` (a hang is a failure too)."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(call).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


def secret_lines() -> list[str]:
    """Lines of the file an XXE would read, to look for in answers and stored files (root:x:0:0:…)."""
    try:
        with open(SECRET_FILE, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.count(":") >= 5][:5]
    except OSError:
        return []


def stored_texts() -> str:
    with transaction(readonly=True) as session:
        return "\n".join(text for v in session.scalars(select(ProcessVersion)) for text in v.files.values())


# -- XML: entities, DOCTYPEs, DTDs --------------------------------------------------------------------------

def laughs(depth: int = 10) -> str:
    entities = '<!ENTITY l0 "lollollollollollollollollollol">' + "".join(
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, depth))
    return f"<!DOCTYPE bomb [{entities}]>"


XXE = f'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{SECRET_FILE}">]>'
DOCTYPES = {  # name -> (DOCTYPE, an entity reference to place in the document, or None)
    "xxe": (XXE, "&xxe;"),
    "xxe_parameter": (f'<!DOCTYPE x [<!ENTITY % p SYSTEM "file://{SECRET_FILE}"> %p;]>', None),
    "external_dtd": (f'<!DOCTYPE definitions SYSTEM "file://{SECRET_FILE}">', None),
    "network_dtd": ('<!DOCTYPE definitions SYSTEM "http://127.0.0.1:9/evil.dtd">', None),
    "billion_laughs": (laughs(), "&l9;"),
    "internal_entity": ('<!DOCTYPE x [<!ENTITY who "审批人">]>', "&who;"),
    "plain_doctype": ("<!DOCTYPE definitions>", None),
}


def with_doctype(text: str, doctype: str, reference: str | None, opening: str) -> str:
    """`text` with `doctype` after its XML declaration, and `reference` as the text of a documentation
    element right after `opening` (an element start tag that may hold one)."""
    declaration, _, rest = text.partition("?>")
    if reference is not None:
        assert opening in rest
        rest = rest.replace(opening, f"{opening}<bpmn:documentation>{reference}</bpmn:documentation>", 1)
    return f"{declaration}?>\n{doctype}{rest}"


def assert_refused(response, name: str, needle: str) -> dict:
    assert response.status_code == 422, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert needle in error["message"] and name in error["message"] + str(error["details"]), error
    assert error["details"].get("file") == name
    text = response.get_data(as_text=True)
    assert not any(line in text for line in secret_lines())
    return error


@pytest.mark.parametrize("case", sorted(DOCTYPES))
def test_a_bpmn_file_with_a_doctype_is_refused_naming_it(as_user, case):
    doctype, reference = DOCTYPES[case]
    text = files()["reimbursement.bpmn"]
    hostile = with_doctype(text, doctype, reference, '<bpmn:userTask id="manager_approval" name="直属上级审批">')
    client = as_user(DESIGNER)
    for path in ("/api/v1/definitions/validate", "/api/v1/definitions"):
        response = within(BOUND, lambda p=path: client.post(p, data={"files": [
            (io.BytesIO(t.encode()), n) for n, t in files(reimbursement__bpmn=hostile).items()]},
            content_type="multipart/form-data"))
        assert_refused(response, "reimbursement.bpmn", "DOCTYPE")
    versions = client.get("/api/v1/definitions/reimbursement").json["versions"]
    assert [v["version"] for v in versions] == [1]  # nothing stored
    assert "<!DOCTYPE" not in stored_texts() and not any(line in stored_texts() for line in secret_lines())


@pytest.mark.parametrize("case", sorted(DOCTYPES))
def test_a_dmn_file_with_a_doctype_is_refused_naming_it(as_user, case):
    doctype, reference = DOCTYPES[case]
    text = files()["reimbursement_routing.dmn"]
    if reference is not None:  # DMN's own namespace: a description element inside the decision
        opening = '<decision id="reimbursement_routing" name="费用报销审批路由">'
        text = text.replace(opening, f"{opening}<description>{reference}</description>", 1)
    hostile = with_doctype(text, doctype, None, "")
    response = within(BOUND, lambda: upload(as_user(DESIGNER), files(reimbursement_routing__dmn=hostile)))
    assert_refused(response, "reimbursement_routing.dmn", "DOCTYPE")
    assert "<!DOCTYPE" not in stored_texts()


def test_an_external_entity_in_an_attribute_is_refused(as_user):
    text = files()["reimbursement.bpmn"].replace('name="直属上级审批"', 'name="&xxe;"', 1)
    hostile = with_doctype(text, XXE, None, "")
    response = within(BOUND, lambda: upload(as_user(DESIGNER), files(reimbursement__bpmn=hostile)))
    assert_refused(response, "reimbursement.bpmn", "reimbursement.bpmn")


def test_an_entity_without_a_doctype_is_refused_as_undefined(as_user):
    text = files()["reimbursement.bpmn"].replace('name="直属上级审批"', 'name="&xxe;"', 1)
    response = within(BOUND, lambda: upload(as_user(DESIGNER), files(reimbursement__bpmn=text)))
    assert_refused(response, "reimbursement.bpmn", "not well-formed XML")


def test_deeply_nested_xml_is_refused_not_parsed_forever(as_user):
    text = files()["reimbursement.bpmn"].replace(
        "<bpmn:documentation>", "<bpmn:documentation>" + "<x>" * 100_000 + "</x>" * 100_000, 1)
    response = within(BOUND, lambda: upload(as_user(DESIGNER), files(reimbursement__bpmn=text)))
    assert_refused(response, "reimbursement.bpmn", "not well-formed XML")


def test_a_stored_version_with_a_doctype_still_loads_without_expanding_it():
    """A version stored before the DOCTYPE rule (one whose entities were never used: a used one never
    passed the schema check) must still run, its instances withdrawn or cancelled: it is read with the
    same parser, which never loads the DTD it names."""
    from engine.runner.model import load_model

    bundle = files()
    bundle["reimbursement.bpmn"] = with_doctype(bundle["reimbursement.bpmn"], XXE, None, "")
    model = within(BOUND, lambda: load_model(bundle, "reimbursement"))
    assert model.key == "reimbursement" and "manager_approval" in model.nodes
    assert not any(line in repr(model.nodes) for line in secret_lines())


# -- oversized bodies ------------------------------------------------------------------------------------

def test_uploads_above_five_mib_in_total_are_413_on_deploy_and_validate(as_user):
    client = as_user(DESIGNER)
    parts = {f"part{i}.bpmn": "<a>" + "x" * (1536 * 1024) + "</a>" for i in range(4)}  # 4 × 1.5 MiB
    for path in ("/api/v1/definitions", "/api/v1/definitions/validate"):
        response = within(BOUND, lambda p=path: client.post(p, data={"files": [
            (io.BytesIO(t.encode()), n) for n, t in parts.items()]}, content_type="multipart/form-data"))
        assert response.status_code == 413 and response.json["error"]["code"] == "payload_too_large"


def test_one_file_above_two_mib_is_refused_naming_it(as_user):
    response = within(BOUND, lambda: upload(as_user(DESIGNER), {"big.bpmn": "<a>" + "x" * (3 << 20) + "</a>"}))
    assert response.status_code == 422 and response.json["error"]["details"] == {"file": "big.bpmn"}


def test_a_json_body_above_one_mib_is_413_before_it_is_parsed(as_user):
    body = b'{"process_key": "reimbursement", "data": {"x": "' + b"x" * (2 << 20) + b'"}}'
    response = within(BOUND, lambda: as_user(APPLICANT).post("/api/v1/instances", data=body,
                                                             content_type="application/json"))
    assert response.status_code == 413 and response.json["error"]["code"] == "payload_too_large"


# -- code in diagrams ------------------------------------------------------------------------------------

PROCESS = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="d" targetNamespace="t">
  <bpmn:process id="hostile" name="恶意脚本" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:scriptTask id="compute" name="计算"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
      <bpmn:script>{script}</bpmn:script></bpmn:scriptTask>
    <bpmn:exclusiveGateway id="route" name="路由" default="normal"><bpmn:incoming>f2</bpmn:incoming>
      <bpmn:outgoing>special</bpmn:outgoing><bpmn:outgoing>normal</bpmn:outgoing></bpmn:exclusiveGateway>
    <bpmn:userTask id="review" name="复核">
      <bpmn:extensionElements><spiffworkflow:properties>
        <spiffworkflow:property name="finflow.assignee" value="role(finance)" />
        <spiffworkflow:property name="finflow.form" value="approval" />
      </spiffworkflow:properties></bpmn:extensionElements>
      <bpmn:incoming>special</bpmn:incoming><bpmn:incoming>normal</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:endEvent id="end"><bpmn:incoming>f3</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="compute" />
    <bpmn:sequenceFlow id="f2" sourceRef="compute" targetRef="route" />
    <bpmn:sequenceFlow id="special" sourceRef="route" targetRef="review">
      <bpmn:conditionExpression>{condition}</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="normal" sourceRef="route" targetRef="review" />
    <bpmn:sequenceFlow id="f3" sourceRef="review" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>"""
APPROVAL = '{"type": "object", "properties": {"opinion": {"type": "string", "title": "意见"}}}'


def diagram(script: str = "total = amount", condition: str = "amount > 100") -> dict[str, str]:
    return {"hostile.bpmn": PROCESS.format(script=escape(script), condition=escape(condition)),
            "approval.json": APPROVAL}


def deploy_and_start(as_user, bundle: dict[str, str]):
    """Deploy (201 or a 422) and, when deployed, start an instance: (deploy answer, start answer or None)."""
    deployed = within(BOUND, lambda: upload(as_user(DESIGNER), bundle))
    assert deployed.status_code in (201, 422), deployed.get_data(as_text=True)[:500]
    if deployed.status_code != 201:
        return deployed, None
    started = within(BOUND, lambda: as_user(APPLICANT).post(
        "/api/v1/instances", json={"process_key": "hostile", "data": {"amount": 5}}))
    assert started.status_code == 201, started.get_data(as_text=True)[:500]
    return deployed, started


def assert_failed_safely(deployed, started, element: str, needles: tuple[str, ...]) -> None:
    """Refused at deploy naming the element, or the instance failed there with one of `needles` said."""
    answers = deployed.get_data(as_text=True) + (started.get_data(as_text=True) if started is not None else "")
    assert not any(line in answers for line in secret_lines())
    if started is None:
        error = deployed.json["error"]
        assert error["details"]["element_id"] == element, error
        assert any(n in error["message"] for n in needles), error
        return
    instance = started.json
    assert instance["status"] == "failed", instance
    assert instance["error"]["node_id"] == element, instance["error"]
    assert any(n in instance["error"]["message"] for n in needles), instance["error"]


ESCAPES = [  # (code, what the refusal or the failure says)
    ("__import__('os').system('id')", ("__import__",)),
    ("().__class__.__bases__[0].__subclasses__()", ("__class__", "__bases__", "__subclasses__")),
    ("(lambda: 0).__globals__", ("__globals__",)),
    ("getattr(amount, '__cla' + 'ss__')", ("getattr",)),
    ("'{0.__class__}'.format(amount)", ("format",)),
    ("'{0.__init__.__globals__}'.format_map({'0': amount})", ("format",)),
    ("str.format('{0.__class__.__mro__}', amount)", ("format",)),
    ("f'{amount.__class__}'", ("__class__",)),
    ("open('/etc/passwd').read()", ("open",)),
    ("type(amount).mro()", ("type",)),
    ("vars()", ("vars",)),
]
RUNAWAYS = [
    ("10**10**10", ("脚本超出大小限制",)),
    ("'a' * 10**10", ("脚本超出大小限制",)),
    ("len([1 for i in range(10**6) for j in range(10**6)])", ("脚本超出步数限制",)),
]


@pytest.mark.parametrize(("code", "needles"), ESCAPES + RUNAWAYS + [("while True:\n    pass", ("脚本超出步数限制",))])
def test_hostile_code_in_a_script_task_fails_safely(as_user, code, needles):
    script = f"x = {code}" if "\n" not in code else code
    deployed, started = deploy_and_start(as_user, diagram(script=script))
    assert_failed_safely(deployed, started, "compute", needles)


@pytest.mark.parametrize(("code", "needles"), ESCAPES + RUNAWAYS)
def test_hostile_code_in_a_gateway_condition_fails_safely(as_user, code, needles):
    deployed, started = deploy_and_start(as_user, diagram(condition=f"{code} == 1"))
    assert_failed_safely(deployed, started, "route" if started is not None else "special", needles)


@pytest.mark.parametrize(("code", "needles"), [
    ("getattr(amount, '__cla' + 'ss__')", ("getattr",)),
    ("'{0.__class__}'.format(amount)", ("format",)),
    ("10**10**10", ("脚本超出大小限制",)),
    ("__import__('os')", ("__import__",)),
])
def test_hostile_code_in_a_decision_cell_fails_safely(as_user, code, needles):
    bundle = files()
    bundle["reimbursement_routing.dmn"] = bundle["reimbursement_routing.dmn"].replace(
        "<text>amount</text>", f"<text>{escape(code)}</text>", 1)
    deployed = within(BOUND, lambda: upload(as_user(DESIGNER), bundle))
    if deployed.status_code == 422:
        error = deployed.json["error"]
        assert error["details"]["file"] == "reimbursement_routing.dmn" and any(n in error["message"] for n in needles)
        return
    assert deployed.status_code == 201, deployed.json
    from tests.helpers import act, claim, instance, start

    iid = start("reimbursement", APPLICANT, claim())
    within(BOUND, lambda: act(iid, "manager_approval"))
    failed = instance(iid)
    assert failed.status == "failed" and failed.error["node_id"] == "reimbursement_routing", failed.error
    assert any(n in failed.error["message"] for n in needles), failed.error


def test_the_server_still_answers_after_every_hostile_script(as_user):
    deploy_and_start(as_user, diagram(script="while True:\n    pass"))
    assert as_user(APPLICANT).get("/api/v1/health").status_code == 200
