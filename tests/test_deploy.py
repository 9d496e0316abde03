"""Deployment: versions, idempotence, pinning, and rejection of bad or hostile uploads with the reason."""

import io

import pytest

from tests.conftest import PROCESSES
from tests.helpers import act, claim, instance, ready, start

DESIGNER = "luyao"


def files(**overrides: str | None) -> dict[str, str]:
    """The shipped reimbursement files, with some replaced (or removed with None)."""
    shipped = {"reimbursement.bpmn": (PROCESSES / "reimbursement.bpmn").read_text(encoding="utf-8"),
               "reimbursement_routing.dmn": (PROCESSES / "reimbursement_routing.dmn").read_text(encoding="utf-8")}
    for form in ("reimbursement_apply", "reimbursement_revise", "approval", "payment_confirm"):
        shipped[f"{form}.json"] = (PROCESSES / "forms" / f"{form}.json").read_text(encoding="utf-8")
    shipped["reimbursement.oa.json"] = (PROCESSES / "oa" / "reimbursement.oa.json").read_text(encoding="utf-8")
    for name, text in overrides.items():
        name = name.replace("__", ".")
        if text is None:
            shipped.pop(name, None)
        else:
            shipped[name] = text
    return shipped


def upload(client, bundle: dict[str, str | bytes]):
    data = {"files": [(io.BytesIO(t.encode() if isinstance(t, str) else t), n) for n, t in bundle.items()]}
    return client.post("/api/v1/definitions", data=data, content_type="multipart/form-data")


def bpmn_with(old: str, new: str) -> str:
    text = files()["reimbursement.bpmn"]
    assert old in text
    return text.replace(old, new, 1)


def test_same_content_is_the_same_version(as_user):
    response = upload(as_user(DESIGNER), files())
    assert response.status_code == 201
    assert response.json["deployed"] == [{"process_key": "reimbursement", "version": 1, "version_id": 3,
                                          "created": False}]


def test_changed_content_is_a_new_version_and_running_instances_stay_pinned(as_user):
    old = start("reimbursement", "suxiaoyun", claim())
    changed = bpmn_with('name="直属上级审批"', 'name="直属领导审批"')
    response = upload(as_user(DESIGNER), files(reimbursement__bpmn=changed))
    assert response.status_code == 201 and response.json["deployed"][0]["version"] == 2
    new = start("reimbursement", "suxiaoyun", claim())
    assert ready(old)[0].name == "直属上级审批" and ready(new)[0].name == "直属领导审批"
    assert instance(old).version_id != instance(new).version_id
    act(old, "manager_approval")
    assert ready(old)[0].node_id == "finance_review"  # the old instance keeps running on version 1


def test_only_designers_deploy(as_user):
    response = upload(as_user("suxiaoyun"), files())
    assert response.status_code == 403


@pytest.mark.parametrize(("bundle", "needle"), [
    (files(reimbursement__bpmn="this is not xml"), "not well-formed XML"),
    (files(reimbursement__bpmn='<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                               '<definitions>&e;</definitions>'), "reimbursement.bpmn"),
    (files(reimbursement__bpmn=bpmn_with('<spiffworkflow:property name="finflow.assignee" value="manager(starter)" />',
                                         "")), "manager_approval: user task has no finflow.assignee"),
    (files(reimbursement__bpmn=bpmn_with('value="manager(starter)"', 'value="boss_of(starter)"')),
     "manager_approval"),
    (files(reimbursement__bpmn=bpmn_with('value="approval"', 'value="no_such_form"')), "no_such_form"),
    (files(approval__json=None), "approval"),
    (files(reimbursement_routing__dmn=None), "reimbursement_routing"),
    (files(reimbursement__bpmn=bpmn_with("<bpmn:outgoing>", "<bpmn:bogus/><bpmn:outgoing>")), "reimbursement.bpmn"),
    (files(approval__json="{not json"), "approval.json is not valid JSON"),
    (files(approval__json='{"type": "object", "properties": {"x": {"type": "nonsense"}}}'), "approval.json"),
    (files(notes__txt="hello"), "Only .bpmn"),
])
def test_invalid_deployments_are_422_naming_the_problem(as_user, bundle, needle):
    response = upload(as_user(DESIGNER), bundle)
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert needle in error["message"] + str(error["details"]), error
    definitions = as_user(DESIGNER).get("/api/v1/definitions/reimbursement").json
    assert [v["version"] for v in definitions["versions"]] == [1]  # nothing half-written


def test_expression_escaping_the_sandbox_is_refused_at_deploy(as_user):
    condition = "decision == 'reject'"
    text = files()["reimbursement.bpmn"]
    assert condition in text
    hostile = text.replace(condition, "().__class__.__bases__[0].__subclasses__()", 1)
    response = upload(as_user(DESIGNER), files(reimbursement__bpmn=hostile))
    assert response.status_code == 422 and "__class__" in response.json["error"]["message"]
    assert "element_id" in response.json["error"]["details"]


def test_no_files_binary_and_oversized_uploads(as_user):
    client = as_user(DESIGNER)
    empty = client.post("/api/v1/definitions", data={}, content_type="multipart/form-data")
    assert empty.status_code == 422 and "files" in empty.json["error"]["details"]["fields"]
    binary = upload(client, {"reimbursement.bpmn": b"\xff\xfe\x00\x01"})
    assert binary.status_code == 422 and "UTF-8" in binary.json["error"]["message"]
    big = upload(client, {"huge.bpmn": "<a>" + "x" * (6 * 1024 * 1024) + "</a>"})
    assert big.status_code == 413 and big.json["error"]["code"] == "payload_too_large"
