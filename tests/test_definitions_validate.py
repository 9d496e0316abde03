"""POST /api/v1/definitions/validate: the deploy's own validation, storing nothing — the designer's 校验."""

from __future__ import annotations

import io
from pathlib import Path

from sqlalchemy import func, select

from engine.db import transaction
from engine.models import ProcessVersion

PROCESSES = Path(__file__).resolve().parent.parent / "processes"


def upload(files: dict[str, str]) -> dict:
    return {"files": [(io.BytesIO(text.encode()), name) for name, text in files.items()]}


def versions() -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(ProcessVersion))


def reimbursement() -> dict[str, str]:
    files = {"reimbursement.bpmn": (PROCESSES / "reimbursement.bpmn").read_text("utf-8"),
             "reimbursement_routing.dmn": (PROCESSES / "reimbursement_routing.dmn").read_text("utf-8")}
    for form in (PROCESSES / "forms").glob("*.json"):
        files[form.name] = form.read_text("utf-8")
    return files


def test_valid_files_are_reported_and_nothing_is_stored(as_user):
    before = versions()
    files = reimbursement()
    files["reimbursement.bpmn"] = files["reimbursement.bpmn"].replace('name="直属上级审批"', 'name="上级审批"')
    answer = as_user("suxiaoyun").post("/api/v1/definitions/validate", data=upload(files),
                                       content_type="multipart/form-data")
    assert answer.status_code == 200, answer.json
    assert [p["process_key"] for p in answer.json["processes"]] == ["reimbursement"]
    assert versions() == before  # a check, not a deployment


def test_an_invalid_diagram_names_the_element(as_user):
    files = reimbursement()
    files["reimbursement.bpmn"] = files["reimbursement.bpmn"].replace(
        '<spiffworkflow:property name="finflow.assignee" value="manager(starter)" />', "", 1)
    answer = as_user("luyao").post("/api/v1/definitions/validate", data=upload(files),
                                   content_type="multipart/form-data")
    assert answer.status_code == 422
    error = answer.json["error"]
    assert error["details"]["element_id"] == "manager_approval" and "finflow.assignee" in error["message"]


def test_no_files_is_a_422_naming_the_field(as_user):
    answer = as_user("luyao").post("/api/v1/definitions/validate", data={}, content_type="multipart/form-data")
    assert answer.status_code == 422 and "files" in answer.json["error"]["details"]["fields"]
