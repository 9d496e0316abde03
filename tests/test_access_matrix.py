"""Roles × data scopes × endpoints: who sees and does what, and that a refusal leaks nothing.

Three instances in three departments; for each viewer the instances they may see are written out by
hand from the rules (own / department / department and below / all, per process), and every endpoint —
list, detail, history, tasks, complete, export, deploy — is checked against that one expectation.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from engine.db import transaction
from engine.history import Actor
from engine.models import SecurityEvent
from engine.services import passwords
from engine.services.deployments import deploy
from tests.helpers import claim, contract, payment, ready, start
from tests.test_deploy import files as shipped_files

PASSWORD = "matrix-pass-2026"


@pytest.fixture
def world():
    """A: suxiaoyun (市场部) reimbursement; B: zhoujie (华东销售组) payment; C: tangjie (法务部) contract."""
    return {"A": start("reimbursement", "suxiaoyun", claim("办公", 800)),
            "B": start("payment", "zhoujie", payment(20000, "SALES-TRAVEL-2026")),
            "C": start("contract", "tangjie", contract(90000))}


# viewer → (why, instances they may see; approvers also see what they are asked to decide)
SEES = {
    "suxiaoyun": ("employee: own", {"A"}),
    "zhoujie": ("employee: own", {"B"}),
    "xiemin": ("employee: own — a colleague's claim stays hidden", set()),
    "sunpeng": ("manager of 华东销售组: department (and B's approver)", {"B"}),
    "zhaoqiang": ("director of 销售部: department and below", {"B"}),
    "huangmin": ("director of 市场部: department and below", {"A"}),
    "yangxue": ("finance: all reimbursements and payments, not contracts", {"A", "B"}),
    "linna": ("cashier: all payments", {"B"}),
    "chenjing": ("legal director: all contracts, legal department", {"C"}),
    "luyao": ("designer: deploys, sees only own", set()),
    "fengli": ("auditor: everything, read-only", {"A", "B", "C"}),
    "zhangwei": ("admin: everything", {"A", "B", "C"}),
    "qianfang": ("cfo: everything", {"A", "B", "C"}),
}


def _approver_sees(world) -> dict[str, set[str]]:
    """Whoever a task asks to decide may read that instance."""
    asked: dict[str, set[str]] = {}
    for name, iid in world.items():
        for task in ready(iid):
            for user in task.candidates:
                asked.setdefault(user, set()).add(name)
    return asked


@pytest.mark.parametrize("viewer", sorted(SEES))
def test_list_detail_history_and_tasks_agree_with_the_scope(as_user, world, viewer):
    expected = SEES[viewer][1] | _approver_sees(world).get(viewer, set())
    api = as_user(viewer)
    listed = {item["id"] for item in api.get("/api/v1/instances?per_page=100").json["items"]}
    assert listed == {world[name] for name in expected}, SEES[viewer][0]
    for name, iid in world.items():
        for path in (f"/api/v1/instances/{iid}", f"/api/v1/instances/{iid}/history"):
            answer = api.get(path)
            if name in expected:
                assert answer.status_code == 200, (viewer, name, path)
            else:  # exactly what an id that never existed gets
                ghost = api.get(path.replace(iid, "00000000-0000-4000-8000-000000000000"))
                assert (answer.status_code, answer.json["error"]["code"]) == (404, "not_found"), (viewer, name)
                assert answer.json["error"]["message"].replace(iid, "?") == ghost.json["error"]["message"].replace(
                    "00000000-0000-4000-8000-000000000000", "?")
                assert "amount" not in answer.text and "data" not in answer.json["error"].get("details", {})
    tasks = api.get("/api/v1/tasks?per_page=100").json["items"]
    assert {t["instance_id"] for t in tasks} <= {world[name] for name in expected}


@pytest.mark.parametrize("viewer", sorted(SEES))
def test_complete_only_for_the_approver_and_unseen_tasks_are_404(as_user, world, viewer):
    task = ready(world["A"])[0]  # the marketing manager's approval of A
    answer = as_user(viewer).post(f"/api/v1/tasks/{task.id}/complete", json={"action": "approve", "comment": "ok"})
    expected = SEES[viewer][1] | _approver_sees(world).get(viewer, set())
    if viewer in task.candidates:
        assert answer.status_code == 200
    elif "A" in expected:
        assert answer.status_code == 403  # may read it, may not decide it
    else:
        assert answer.status_code == 404
    assert ready(world["A"])[0].id == task.id or viewer in task.candidates  # nobody else moved it


def test_the_approver_of_a_is_not_in_the_fixed_table(world):
    """guoxin (市场部 manager) approves A: the matrix counts that through _approver_sees, not by hand."""
    assert "guoxin" in ready(world["A"])[0].candidates and "guoxin" not in SEES


@pytest.fixture
def logins():
    with transaction() as session:
        for user in SEES:
            passwords.set_password(session, user, PASSWORD)


def _page_login(app, user):
    client = app.test_client()
    token = re.search(r'name="form_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"login": user, "password": PASSWORD, "next": "/audit",
                                       "form_token": token}).status_code == 303
    return client


@pytest.mark.parametrize("viewer", sorted(SEES))
def test_export_is_for_auditors_holds_their_scope_and_is_logged(app, logins, world, viewer):
    client = _page_login(app, viewer)
    answer = client.get("/audit/export.csv")
    if viewer not in ("fengli", "zhangwei"):
        assert answer.status_code == 403 and world["A"] not in answer.text
        return
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True).lstrip("\ufeff"))))
    assert {row[-1] for row in rows[1:]} == set(world.values())
    with transaction() as session:
        logged = session.query(SecurityEvent).filter_by(kind="instances.exported", actor_id=viewer).all()
    assert len(logged) == 1 and logged[0].client_ip and logged[0].details["format"] == "csv"


def test_an_auditor_opening_an_instance_is_logged_and_cannot_act(app, logins, as_user, world):
    auditor = as_user("fengli")
    assert auditor.get(f"/api/v1/instances/{world['B']}").status_code == 200
    assert _page_login(app, "fengli").get(f"/audit/instances/{world['C']}").status_code == 200
    with transaction() as session:
        viewed = [(e.subject_id, e.details["view"]) for e in
                  session.query(SecurityEvent).filter_by(kind="instance.viewed", actor_id="fengli")]
    assert viewed == [(world["B"], "api.detail"), (world["C"], "audit.page")]
    task = ready(world["B"])[0]
    assert auditor.post(f"/api/v1/tasks/{task.id}/complete", json={"action": "approve"}).status_code == 403
    assert auditor.post(f"/api/v1/instances/{world['B']}/withdraw", json={"reason": "x"}).status_code == 403
    as_user("sunpeng").get(f"/api/v1/instances/{world['B']}")  # an approver reading their work: not an audit
    with transaction() as session:
        assert session.query(SecurityEvent).filter_by(kind="instance.viewed", actor_id="sunpeng").count() == 0


@pytest.mark.parametrize("viewer", sorted(SEES))
def test_deploy_is_for_designers_and_admins(app, as_user, viewer):
    files = {"files": [(io.BytesIO(text.encode()), name) for name, text in shipped_files().items()]}
    answer = as_user(viewer).client.post("/api/v1/definitions", data=files, headers=as_user(viewer).headers,
                                         content_type="multipart/form-data")
    if viewer in ("luyao", "zhangwei"):
        assert answer.status_code in (200, 201), answer.json
    else:
        assert answer.status_code == 403 and answer.json["error"]["code"] == "forbidden"


def test_a_scope_change_takes_effect_at_once_and_is_logged(as_user, world):
    admin, cashier = as_user("zhangwei"), as_user("linna")
    assert world["A"] not in {i["id"] for i in cashier.get("/api/v1/instances").json["items"]}
    changed = admin.client.put("/api/v1/admin/roles/cashier/scopes", headers=admin.headers,
                               json={"scopes": {"payment": "all", "reimbursement": "all"}})
    assert changed.status_code == 200 and changed.json["scopes"] == {"payment": "all", "reimbursement": "all"}
    assert cashier.get(f"/api/v1/instances/{world['A']}").status_code == 200
    refused = cashier.client.put("/api/v1/admin/roles/cashier/scopes", headers=cashier.headers,
                                 json={"scopes": {"*": "all"}})
    assert refused.status_code == 403
    bad = admin.client.put("/api/v1/admin/roles/cashier/scopes", headers=admin.headers, json={"scopes": {"*": "x"}})
    assert bad.status_code == 422
    log = admin.get("/api/v1/admin/security-events?kind=role.scopes_changed").json["items"]
    assert [(e["subject_id"], e["actor_id"], e["details"]["before"], e["details"]["after"]) for e in log] == [
        ("cashier", "zhangwei", {"payment": "all"}, {"payment": "all", "reimbursement": "all"})]


def test_a_role_change_is_logged_and_changes_what_is_seen(as_user, world):
    admin = as_user("zhangwei")
    assert as_user("xiemin").get(f"/api/v1/instances/{world['A']}").status_code == 404
    answer = admin.client.put("/api/v1/admin/users/xiemin/roles", headers=admin.headers,
                              json={"roles": ["employee", "finance"]})
    assert answer.status_code == 200 and answer.json["roles"] == ["employee", "finance"]
    assert as_user("xiemin").get(f"/api/v1/instances/{world['A']}").status_code == 200
    assert admin.client.put("/api/v1/admin/users/xiemin/roles", headers=admin.headers,
                            json={"roles": ["wizard"]}).status_code == 422
    log = admin.get("/api/v1/admin/security-events?subject_id=xiemin&kind=role.granted").json["items"]
    assert [(e["details"]["role"], e["actor_id"]) for e in log][:1] == [("finance", "zhangwei")]
    assert as_user("xiemin").get("/api/v1/admin/security-events").status_code == 403


ACCOUNT = payment()["bank_account"]  # 6222020200112233445, x-sensitive in the payment form


@pytest.mark.parametrize("viewer, clear", [("zhoujie", True), ("linna", True), ("yangxue", True), ("qianfang", True),
                                           ("sunpeng", False), ("fengli", False), ("zhangwei", False)])
def test_sensitive_fields_masked_for_everyone_outside_the_permitted_roles(as_user, world, viewer, clear):
    """Applicant, cashier, finance and CFO read the payee's account; its approver, the auditor and the
    administrator see 6222 **** **** 3445 in the detail, the task's instance and the history alike."""
    api = as_user(viewer)
    iid = world["B"]
    task = ready(iid)[0]
    answers = [api.get(f"/api/v1/instances/{iid}"), api.get(f"/api/v1/instances/{iid}/history")]
    if viewer in task.candidates or clear or viewer in ("fengli", "zhangwei"):
        answers.append(api.get(f"/api/v1/tasks/{task.id}"))
    for answer in answers:
        assert answer.status_code == 200
        assert (ACCOUNT in answer.text) is clear, answer.request.path
        assert clear or "6222 **** **** 3445" in answer.text
    detail = answers[0].json
    assert detail["masked_fields"] == ([] if clear else ["bank_account"])


def test_sensitive_values_are_never_logged(as_user, world, caplog):
    caplog.set_level("DEBUG")
    iid = start("payment", "zhoujie", payment(20000, "SALES-TRAVEL-2026"))
    as_user("fengli").get(f"/api/v1/instances/{iid}")
    task = ready(iid)[0]
    as_user(task.candidates[0]).post(f"/api/v1/tasks/{task.id}/complete", json={"action": "approve"})
    assert caplog.records and ACCOUNT not in caplog.text


def test_a_sensitive_amount_is_hidden_in_lists_and_exports(app, logins, as_user):
    """A form marking `amount` sensitive (salary-like) hides the instance's amount column too, except from
    the roles the field names."""
    form = json.loads(shipped_files()["reimbursement_apply.json"])
    form["properties"]["amount"].update({"x-sensitive": True, "x-sensitive-roles": ["cfo"]})
    with transaction() as session:
        deploy(session, shipped_files(reimbursement_apply__json=json.dumps(form, ensure_ascii=False)),
               Actor(None, "cli"))
    iid = start("reimbursement", "suxiaoyun", claim("办公", 4321))
    listed = {i["id"]: i for i in as_user("fengli").get("/api/v1/instances").json["items"]}
    assert listed[iid]["amount"] is None and listed[iid]["masked_fields"] == ["amount"]
    assert {i["id"]: i for i in as_user("qianfang").get("/api/v1/instances").json["items"]}[iid]["amount"] == "4321.00"
    assert as_user("suxiaoyun").get(f"/api/v1/instances/{iid}").json["amount"] == "4321.00"  # the applicant
    exported = _page_login(app, "fengli").get("/audit/export.csv").get_data(as_text=True)
    assert iid in exported and "4321" not in exported
