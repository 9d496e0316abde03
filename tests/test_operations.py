"""Approval operations: 会签/或签/依次 by configuration, 转办, 委派, 加签, 退回, 撤回, 抄送, 催办,
empty approvers and 去重 — each through the REST API, with permissions and invalid requests."""

import pytest

from engine.db import transaction
from engine.history import Actor
from engine.services.deployments import deploy
from tests.conftest import PROCESSES
from tests.helpers import claim, events, instance, open_tasks, ready

STARTER = "suxiaoyun"  # manager guoxin, department head huangmin


def deploy_reimbursement(node: str, **properties: str) -> None:
    """Redeploy the shipped reimbursement with extra finflow properties on one node (configuration only)."""
    files = {"reimbursement.bpmn": (PROCESSES / "reimbursement.bpmn").read_text(encoding="utf-8"),
             "reimbursement_routing.dmn": (PROCESSES / "reimbursement_routing.dmn").read_text(encoding="utf-8")}
    for form in ("reimbursement_apply", "reimbursement_revise", "approval", "payment_confirm"):
        files[f"{form}.json"] = (PROCESSES / "forms" / f"{form}.json").read_text(encoding="utf-8")
    anchor = f'<bpmn:userTask id="{node}"'
    text = files["reimbursement.bpmn"]
    head, tail = text.split(anchor, 1)
    extra = "".join(f'<spiffworkflow:property name="finflow.{k}" value="{v}" />' for k, v in properties.items())
    tail = tail.replace("</spiffworkflow:properties>", extra + "</spiffworkflow:properties>", 1)  # later wins
    files["reimbursement.bpmn"] = head + anchor + tail
    with transaction() as session:
        assert deploy(session, files, Actor(None, "cli"))[0].created


@pytest.fixture
def api(as_user):
    class Api:
        def start(self, data=None, user=STARTER):
            response = as_user(user).post("/api/v1/instances", json={"process_key": "reimbursement",
                                                                     "data": data or claim()})
            assert response.status_code == 201, response.json
            return response.json["id"]

        def task(self, iid, node, user=None):
            return next(t for t in ready(iid) if t.node_id == node and (user is None or user in t.candidates))

        def post(self, user, path, body):
            return as_user(user).post(path, json=body)

        def complete(self, iid, node, user, action="approve", form=None):
            task = self.task(iid, node, user)
            return self.post(user, f"/api/v1/tasks/{task.id}/complete",
                             {"action": action, "form_data": form or {}})

        def op(self, iid, node, user, op, body):
            task = self.task(iid, node, user)
            return self.post(user, f"/api/v1/tasks/{task.id}/{op}", body)

    return Api()


def nodes(iid):
    return sorted({t.node_id for t in ready(iid)})


# -- 会签 / 或签 / 依次 ---------------------------------------------------------------------------------

def test_countersign_mode_all_needs_every_candidate(api):
    deploy_reimbursement("finance_review", mode="all")
    iid = api.start()
    assert api.complete(iid, "manager_approval", "guoxin").status_code == 200
    rows = ready(iid)
    assert sorted(c for r in rows for c in r.candidates) == ["gaoyan", "liuli", "yangxue", "zhuwei"]
    for user in ("gaoyan", "liuli", "yangxue"):
        assert api.complete(iid, "finance_review", user).status_code == 200
        assert nodes(iid) == ["finance_review"]
    api.complete(iid, "finance_review", "zhuwei")
    assert nodes(iid) == ["cashier_payment"]


def test_countersign_one_rejection_rejects_and_cancels_the_rest(api):
    deploy_reimbursement("finance_review", mode="all")
    iid = api.start()
    api.complete(iid, "manager_approval", "guoxin")
    api.complete(iid, "finance_review", "gaoyan")
    api.complete(iid, "finance_review", "liuli", "reject")
    assert nodes(iid) == ["applicant_revise"]
    cancelled = [e for e in events(iid) if e.type == "task.cancelled"]
    assert len(cancelled) == 2


def test_sequential_mode_goes_through_the_list_in_order(api):
    deploy_reimbursement("finance_review", mode="sequence")
    iid = api.start()
    api.complete(iid, "manager_approval", "guoxin")
    order = []
    for _ in range(4):
        [current] = ready(iid)
        waiting = [t for t in open_tasks(iid) if t.status == "waiting"]
        if waiting:  # the next signer cannot act yet
            blocked = api.post(waiting[0].candidates[0], f"/api/v1/tasks/{waiting[0].id}/complete",
                               {"action": "approve"})
            assert blocked.status_code == 409
        order.append(current.candidates[0])
        api.complete(iid, "finance_review", current.candidates[0])
    assert order == ["gaoyan", "liuli", "yangxue", "zhuwei"]
    assert nodes(iid) == ["cashier_payment"]


def test_any_mode_is_the_default_or_sign(api):
    iid = api.start()
    api.complete(iid, "manager_approval", "guoxin")
    api.complete(iid, "finance_review", "yangxue")
    assert nodes(iid) == ["cashier_payment"]


def test_unknown_mode_is_refused_at_deploy():
    from engine.errors import DeploymentInvalid

    with pytest.raises(DeploymentInvalid) as refused:
        deploy_reimbursement("finance_review", mode="everyone")
    assert refused.value.details["element_id"] == "finance_review"


# -- 转办 / 委派 ----------------------------------------------------------------------------------------

def test_transfer_hands_the_task_to_another_user(api):
    iid = api.start()
    response = api.op(iid, "manager_approval", "guoxin", "transfer", {"to": "huangmin", "reason": "出差中"})
    assert response.status_code == 200 and response.json["candidates"] == ["huangmin"]
    assert api.post("guoxin", f"/api/v1/tasks/{response.json['id']}/complete", {"action": "approve"}).status_code == 403
    assert api.complete(iid, "manager_approval", "huangmin").status_code == 200
    transferred = next(e for e in events(iid) if e.type == "task.transferred")
    assert transferred.actor_id == "guoxin" and transferred.payload["to"] == "huangmin"


@pytest.mark.parametrize(("to", "status"), [("wulei", 422), ("ghost", 422), ("guoxin", 422), ("", 422)])
def test_transfer_to_inactive_unknown_or_current_is_refused(api, to, status):
    iid = api.start()
    response = api.op(iid, "manager_approval", "guoxin", "transfer", {"to": to})
    assert response.status_code == status and "to" in response.json["error"]["details"]["fields"]
    assert ready(iid)[0].candidates == ["guoxin"]


def test_only_current_approvers_operate_on_a_task(api):
    iid = api.start()
    task = ready(iid)[0]
    for op, body in (("transfer", {"to": "huangmin"}), ("delegate", {"to": "huangmin"}),
                     ("add-signers", {"users": ["huangmin"], "position": "before"}),
                     ("return", {"to": "applicant"})):
        response = api.post(STARTER, f"/api/v1/tasks/{task.id}/{op}", body)
        assert response.status_code == 403, op


def test_delegate_returns_to_owner_to_confirm(api):
    iid = api.start()
    delegated = api.op(iid, "manager_approval", "guoxin", "delegate", {"to": "tangjie", "reason": "请法务看看"})
    assert delegated.status_code == 200 and delegated.json["delegation"] == "pending"
    assert api.complete(iid, "manager_approval", "tangjie").status_code == 200  # the delegate's opinion
    [back] = ready(iid)
    assert back.node_id == "manager_approval" and back.candidates == ["guoxin"] and back.delegation == "resolved"
    assert api.complete(iid, "manager_approval", "guoxin").status_code == 200
    assert nodes(iid) == ["finance_review"]
    types = [e.type for e in events(iid)]
    assert types.index("task.delegated") < types.index("task.delegation_resolved") < types.index("task.completed")


# -- 加签 -----------------------------------------------------------------------------------------------

def test_add_signer_before(api):
    iid = api.start()
    added = api.op(iid, "manager_approval", "guoxin", "add-signers", {"users": ["huangmin"], "position": "before"})
    assert added.status_code == 200
    mine = next(t for t in open_tasks(iid) if t.candidates == ["guoxin"])
    assert mine.status == "waiting"
    assert api.post("guoxin", f"/api/v1/tasks/{mine.id}/complete", {"action": "approve"}).status_code == 409
    assert api.complete(iid, "manager_approval", "huangmin").status_code == 200
    assert nodes(iid) == ["manager_approval"] and ready(iid)[0].candidates == ["guoxin"]
    api.complete(iid, "manager_approval", "guoxin")
    assert nodes(iid) == ["finance_review"]


def test_add_signer_after(api):
    iid = api.start()
    api.op(iid, "manager_approval", "guoxin", "add-signers", {"users": ["zhaoqiang"], "position": "after"})
    api.complete(iid, "manager_approval", "guoxin")
    [next_row] = ready(iid)
    assert next_row.node_id == "manager_approval" and next_row.candidates == ["zhaoqiang"]
    assert next_row.kind == "add_sign"
    api.complete(iid, "manager_approval", "zhaoqiang")
    assert nodes(iid) == ["finance_review"]


def test_add_signer_rejection_rejects_the_node(api):
    iid = api.start()
    api.op(iid, "manager_approval", "guoxin", "add-signers", {"users": ["huangmin"], "position": "before"})
    api.complete(iid, "manager_approval", "huangmin", "reject")
    assert nodes(iid) == ["applicant_revise"]


@pytest.mark.parametrize("users", [["guoxin"], ["wulei"], ["ghost"], []])
def test_add_signer_invalid(api, users):
    iid = api.start()
    response = api.op(iid, "manager_approval", "guoxin", "add-signers", {"users": users, "position": "before"})
    assert response.status_code == 422 and "users" in response.json["error"]["details"]["fields"]


def test_add_signer_twice_is_refused(api):
    iid = api.start()
    api.op(iid, "manager_approval", "guoxin", "add-signers", {"users": ["zhaoqiang"], "position": "after"})
    again = api.op(iid, "manager_approval", "guoxin", "add-signers", {"users": ["zhaoqiang"], "position": "before"})
    assert again.status_code == 422


# -- 退回 -----------------------------------------------------------------------------------------------

def test_return_to_an_earlier_node_requires_later_approvals_again(api):
    iid = api.start()
    api.complete(iid, "manager_approval", "guoxin")
    response = api.op(iid, "finance_review", "yangxue", "return", {"to": "manager_approval", "reason": "请上级确认"})
    assert response.status_code == 200, response.json
    assert [t["node_id"] for t in response.json["current_tasks"]] == ["manager_approval"]
    api.complete(iid, "manager_approval", "guoxin")
    assert nodes(iid) == ["finance_review"]  # finance must review again
    returned = next(e for e in events(iid) if e.type == "task.returned")
    assert returned.payload["to"] == "manager_approval" and returned.actor_id == "yangxue"


def test_return_to_a_node_never_visited_is_422(api):
    iid = api.start()
    api.complete(iid, "manager_approval", "guoxin")
    response = api.op(iid, "finance_review", "yangxue", "return", {"to": "cfo_approval"})
    assert response.status_code == 422 and "to" in response.json["error"]["details"]["fields"]
    assert nodes(iid) == ["finance_review"]


def test_return_to_applicant_who_resubmits(api):
    iid = api.start()
    api.complete(iid, "manager_approval", "guoxin")
    api.op(iid, "finance_review", "yangxue", "return", {"to": "applicant", "reason": "发票不清晰"})
    [resubmit] = ready(iid)
    assert resubmit.kind == "resubmit" and resubmit.candidates == [STARTER] and resubmit.actions == ["submit"]
    blocked = [t for t in open_tasks(iid) if t.status == "waiting"]
    assert [t.node_id for t in blocked] == ["manager_approval"]
    response = api.post(STARTER, f"/api/v1/tasks/{resubmit.id}/complete",
                        {"action": "submit", "form_data": {**claim(amount=1100), "reason": "已换清晰发票"}})
    assert response.status_code == 200, response.json
    assert nodes(iid) == ["manager_approval"]
    api.complete(iid, "manager_approval", "guoxin")
    api.complete(iid, "finance_review", "yangxue")
    assert instance(iid).data["amount"] == "1100.00"


# -- 撤回 -----------------------------------------------------------------------------------------------

def test_withdraw_only_before_first_approval_or_when_back_with_applicant(api, as_user):
    iid = api.start()
    api.complete(iid, "manager_approval", "guoxin")
    refused = as_user(STARTER).post(f"/api/v1/instances/{iid}/withdraw", json={})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "withdraw_not_allowed"
    api.complete(iid, "finance_review", "yangxue", "reject")  # back to the applicant
    allowed = as_user(STARTER).post(f"/api/v1/instances/{iid}/withdraw", json={"reason": "不报了"})
    assert allowed.status_code == 200 and allowed.json["status"] == "withdrawn"


# -- 抄送 -----------------------------------------------------------------------------------------------

def test_cc_lets_people_read_but_not_act(api, as_user):
    iid = api.start()
    # outside their scope: as if it did not exist
    assert as_user("tangjie").get(f"/api/v1/instances/{iid}").status_code == 404
    response = api.post("guoxin", f"/api/v1/instances/{iid}/cc", {"users": ["tangjie", "fengli"]})
    assert response.status_code == 200 and response.json["added"] == ["tangjie", "fengli"]
    assert as_user("tangjie").get(f"/api/v1/instances/{iid}").status_code == 200
    task = ready(iid)[0]
    assert as_user("tangjie").post(f"/api/v1/tasks/{task.id}/complete", json={"action": "approve"}).status_code == 403
    assert api.post("tangjie", f"/api/v1/instances/{iid}/cc", {"users": ["lihua"]}).status_code == 403
    assert api.post(STARTER, f"/api/v1/instances/{iid}/cc", {"users": ["wulei"]}).status_code == 422


def test_cc_configured_on_a_node(api):
    deploy_reimbursement("finance_review", cc="role(auditor)")
    iid = api.start()
    api.complete(iid, "manager_approval", "guoxin")
    copied = next(e for e in events(iid) if e.type == "instance.cc")
    assert copied.payload["users"] == ["fengli"] and copied.node_id == "finance_review"


# -- 催办 -----------------------------------------------------------------------------------------------

def test_urge_is_rate_limited_per_task(api, as_user):
    iid = api.start()
    first = as_user(STARTER).post(f"/api/v1/instances/{iid}/urge", json={"message": "请尽快审批"})
    assert first.status_code == 200 and [t["node_id"] for t in first.json["urged"]] == ["manager_approval"]
    again = as_user(STARTER).post(f"/api/v1/instances/{iid}/urge", json={})
    assert again.status_code == 429 and 0 < int(again.headers["Retry-After"]) <= 3600
    assert as_user("guoxin").post(f"/api/v1/instances/{iid}/urge", json={}).status_code == 403
    api.complete(iid, "manager_approval", "guoxin")
    assert as_user(STARTER).post(f"/api/v1/instances/{iid}/urge", json={}).status_code == 200  # a new task


# -- 审批人为空 / 去重 --------------------------------------------------------------------------------------

def deactivate(user_id):
    from sqlalchemy import update

    from engine.models import User

    with transaction() as session:
        session.execute(update(User).where(User.id == user_id).values(active=False))


def test_empty_approver_skip(api):
    deploy_reimbursement("director_approval", on_empty="skip")
    deactivate("huangmin")
    iid = api.start(claim("差旅", 8000))
    api.complete(iid, "manager_approval", "guoxin")
    assert nodes(iid) == ["finance_review"]
    skipped = next(e for e in events(iid) if e.type == "task.auto_approved")
    assert skipped.node_id == "director_approval"


def test_empty_approver_hands_to_a_role(api):
    deploy_reimbursement("director_approval", on_empty="role:cfo")
    deactivate("huangmin")
    iid = api.start(claim("差旅", 8000))
    api.complete(iid, "manager_approval", "guoxin")
    [task] = ready(iid)
    assert task.node_id == "director_approval" and task.candidates == ["qianfang"]


def test_empty_approver_fails_by_default(api):
    deploy_reimbursement("director_approval", on_empty="fail")  # the shipped node hands it to the manager
    deactivate("huangmin")
    iid = api.start(claim("差旅", 8000))
    api.complete(iid, "manager_approval", "guoxin")
    failed = instance(iid)
    assert failed.status == "failed" and failed.error["node_id"] == "director_approval"


def test_same_approver_consecutively_is_auto_approved(api):
    deploy_reimbursement("director_approval", dedupe="true")
    iid = api.start(claim("差旅", 8000), user="zhoujie")  # manager and department head are both sunpeng
    api.complete(iid, "manager_approval", "sunpeng")
    assert nodes(iid) == ["finance_review"]
    auto = next(e for e in events(iid) if e.type == "task.auto_approved")
    assert auto.node_id == "director_approval" and auto.payload["as"] == "sunpeng"


def test_without_dedupe_the_same_approver_acts_twice(api):
    iid = api.start(claim("差旅", 8000), user="zhoujie")
    api.complete(iid, "manager_approval", "sunpeng")
    assert nodes(iid) == ["director_approval"]
