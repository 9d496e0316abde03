"""The OA twin, end to end over real HTTP against the E9 simulator: created on start, its node following each
approval, rejection, return and withdrawal; decisions taken in OA completing the finflow task through the
callback (HMAC-signed) or the poller, once; OA down for a while and then back with no duplicate submission;
refusals and conflicts as incidents on the instance; reconciliation finding and fixing a mismatch."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import delete, func, select

from adapters.oa import poller, reconcile
from adapters.oa.callback import signature
from adapters.oa.models import OAUserLink
from adapters.oa.simulator.cli import DEMO_SECRET
from engine.cli import main
from engine.db import transaction
from engine.history import Actor
from engine.models import HistoryEvent
from engine.outbox.models import OutboxMessage
from engine.services.instances import withdraw_instance
from engine.services.tasks import return_task
from tests import oa_support
from tests.helpers import act, claim, contract, events, instance, payment, ready, start

oa, oa_key_file = oa_support.oa, oa_support.oa_key_file  # the fixtures
STARTER = "suxiaoyun"


def twin_view(client, instance_id: str) -> dict:
    response = client.get(f"/api/v1/instances/{instance_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["integrations"]["oa"]


def decide_in_oa(bed, instance_id: str, user: str, action: str = "submit", **kwargs) -> dict:
    answer = bed.sim.act(bed.twin(instance_id).request_id, bed.oa_user(user), action, "OA 中处理", **kwargs)
    assert answer["code"] == "SUCCESS", answer
    return answer


def oa_logged(bed, instance_id: str, action_type: str) -> list[dict]:
    return [entry for entry in bed.sim.logs(bed.twin(instance_id).request_id) if entry["logtype"] == action_type]


# -- deploy: the mapping file is checked with the process -------------------------------------------------
def _files(**replace: str) -> dict[str, str]:
    """The payment process's files as the designer uploads them, with some replaced."""
    root = Path(__file__).resolve().parent.parent / "processes"
    names = ("payment.bpmn", "payment_routing.dmn", "payment.oa.json", "approval.json", "payment_apply.json",
             "payment_confirm.json")
    files = {p.name: p.read_text(encoding="utf-8") for p in root.rglob("*") if p.name in names}
    return {**files, **replace}


def _validate(client, files: dict[str, str]):
    return client.post("/api/v1/definitions/validate", content_type="multipart/form-data",
                       data={"files": [(io.BytesIO(t.encode()), n) for n, t in files.items()]})


@pytest.mark.parametrize("change, words", [
    (lambda m: m["nodes"].update(no_such_task="1099"), "has no user task 'no_such_task'"),
    (lambda m: m["nodes"].pop("gm_approval"), "gm_approval have no OA node"),
    (lambda m: m.pop("workflow_id"), "workflow_id is required"),
    (lambda m: m["main"].update(fkje="amount +"), "main.fkje"),
    (lambda m: m.update(nodez={}), "unknown key(s) nodez"),
])
def test_a_mapping_that_does_not_fit_the_process_is_refused_at_deploy(as_user, change, words):
    mapping = json.loads(_files()["payment.oa.json"])
    change(mapping)
    response = _validate(as_user("luyao"), _files(**{"payment.oa.json": json.dumps(mapping)}))
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert words in error["message"] and error["details"]["file"] == "payment.oa.json"


def test_a_listed_mapping_may_leave_user_tasks_out_and_an_unknown_channel_is_refused(as_user):
    mapping = json.loads(_files()["payment.oa.json"])
    mapping["nodes"].pop("gm_approval")
    mapping["required"] = "listed"
    upload = _files(**{"payment.oa.json": json.dumps(mapping)})
    assert _validate(as_user("luyao"), upload).status_code == 200
    refused = _validate(as_user("luyao"), {**upload, "payment.fax.json": "{}"})
    assert refused.status_code == 422 and "no adapter maps channel 'fax'" in refused.get_json()["error"]["message"]


# -- the twin follows finflow ------------------------------------------------------------------------------
def test_reimbursement_twin_follows_every_approval_to_the_archive(oa, as_user):
    instance_id = start("reimbursement", STARTER, claim(amount=8000, category="差旅", reason="客户拜访"))
    view = twin_view(as_user(STARTER), instance_id)
    assert view["request_id"] and view["sync_state"] == "synced" and view["node"] == "1011"
    request = oa.sim.request(view["request_id"])
    assert request["workflowid"] == "101" or request.get("workflow_id") == "101"
    assert "8000" in json.dumps(request, ensure_ascii=False)
    for node, expected in (("manager_approval", "1012"), ("director_approval", "1014"),
                           ("finance_review", "1015")):
        act(instance_id, node)
        assert oa.node(instance_id) == expected
        assert oa.twin(instance_id).state == "synced"
    act(instance_id, "cashier_payment", form={"payment_reference": "HX-1"})
    assert instance(instance_id).status == "completed"
    twin = oa.twin(instance_id)
    assert (twin.oa_state, twin.state) == ("archived", "closed")
    oa.settle()
    # the node Action told finflow of each of its own submissions: recognised, nothing applied twice
    assert {d.status for d in oa.decisions(instance_id)} == {"ignored"}
    assert len([e for e in events(instance_id) if e.type == "task.completed"]) == 4
    assert len(oa_logged(oa, instance_id, "0")) == 4  # one 批准 per decision, no duplicate


def test_rejection_sends_the_request_back_to_the_applicant_and_the_resubmit_moves_it_on(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    act(instance_id, "manager_approval", "reject", comment="发票不全")
    assert oa.node(instance_id) == "1010"
    assert [t.node_id for t in ready(instance_id)] == ["applicant_revise"]
    act(instance_id, "applicant_revise", "submit", user=STARTER, form={"reason": "已补发票"})
    assert oa.node(instance_id) == "1011" and oa.twin(instance_id).state == "synced"


def test_return_to_an_earlier_node_and_withdrawal_move_the_twin(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=8000, category="差旅"))
    act(instance_id, "manager_approval")
    director = next(t for t in ready(instance_id) if t.node_id == "director_approval")
    with transaction() as session:
        return_task(session, Actor(director.candidates[0]), director.id, "manager_approval", "请上级再确认")
    assert oa.node(instance_id) == "1011" and oa.twin(instance_id).state == "synced"
    withdrawn = start("reimbursement", STARTER, claim(amount=800))
    with transaction() as session:
        withdraw_instance(session, Actor(STARTER), withdrawn, "不报了")
    twin = oa.twin(withdrawn)
    assert twin.oa_state == "withdrawn" and twin.state == "closed"


def test_payment_twin_takes_the_general_managers_node_only_for_large_amounts(oa):
    small = start("payment", STARTER, payment(amount=30000))
    large = start("payment", STARTER, payment(amount=300000))
    for instance_id in (small, large):
        act(instance_id, "dept_head_approval")
        act(instance_id, "finance_manager_approval")
    assert oa.node(small) == "1024" and oa.node(large) == "1023"


def test_contract_countersign_nodes_wait_for_every_signer(oa):
    instance_id = start("contract", "tangjie", contract())
    assert oa.node(instance_id) == "1031"
    act(instance_id, "legal_review", user="chenjing")
    assert oa.node(instance_id) == "1031"  # OA said SUCCESS and waits for the second signer, as finflow does
    assert oa.twin(instance_id).state == "synced"
    act(instance_id, "finance_review")
    signers = [t for t in ready(instance_id) if t.node_id == "countersign"]
    assert oa.node(instance_id) == ("1032" if signers else "1033")
    for task in signers[:-1]:
        act(instance_id, "countersign", user=task.candidates[0])
        assert oa.node(instance_id) == "1032"
    if signers:
        act(instance_id, "countersign", user=signers[-1].candidates[0])
    assert oa.node(instance_id) == "1033" and oa.twin(instance_id).state == "synced"


# -- decisions taken in OA -------------------------------------------------------------------------------
def test_a_decision_in_oa_completes_the_finflow_task_once(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    manager = ready(instance_id)[0].candidates[0]
    answer = decide_in_oa(oa, instance_id, manager)
    assert answer["callback"]["status"] == 200, answer["callback"]
    completed = [e for e in events(instance_id) if e.type == "task.completed"]
    assert [(e.node_id, e.actor_id, e.channel) for e in completed] == [("manager_approval", manager, "oa")]
    assert completed[0].user_agent == "OA" and completed[0].client_ip == "127.0.0.1"
    assert oa.node(instance_id) == "1014" and oa.twin(instance_id).state == "synced"
    assert oa.sim.calls_to("submitRequest") == 0  # finflow did not submit back what OA decided
    # OA retrying the same call, and the poller reading the same log line, change nothing
    replayed = oa.sim.replay(answer["callback"]["response"])
    assert replayed.status_code == 200 and replayed.json()["status"] == "duplicate"
    assert poller.poll()["new"] == 0 or {d.status for d in oa.decisions(instance_id)} <= {"applied", "ignored"}
    assert len([e for e in events(instance_id) if e.type == "task.completed"]) == 1


def test_a_rejection_in_oa_rejects_in_finflow(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    decide_in_oa(oa, instance_id, ready(instance_id)[0].candidates[0], "reject")
    assert [t.node_id for t in ready(instance_id)] == ["applicant_revise"]
    assert oa.node(instance_id) == "1010" and oa.twin(instance_id).state == "synced"


@pytest.mark.parametrize("forge", ["bad_secret", "stale", "unsigned", "tampered"])
def test_forged_stale_or_tampered_callbacks_are_refused_and_apply_nothing(oa, forge):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    manager = ready(instance_id)[0].candidates[0]
    payload = {"requestid": oa.twin(instance_id).request_id, "nodeid": "1011", "operator": oa.oa_user(manager),
               "action": "submit", "remark": "伪造", "logid": "999999"}
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()) - (3600 if forge == "stale" else 0))
    headers = {"Content-Type": "application/json", "X-OA-Timestamp": stamp,
               "X-OA-Signature": signature("wrong" if forge == "bad_secret" else DEMO_SECRET, stamp, body)}
    if forge == "unsigned":
        headers.pop("X-OA-Signature")
    if forge == "tampered":
        body = body.replace(b"submit", b"reject")
    response = httpx.post(f"{oa.url}/oa/callback", content=body, headers=headers, timeout=10)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] in ("bad_signature", "stale", "unsigned")
    assert oa.decisions() == [] and [t.node_id for t in ready(instance_id)] == ["manager_approval"]


def test_callbacks_for_unknown_requests_nodes_or_users_are_refused_visibly(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    request_id = oa.twin(instance_id).request_id
    manager = oa.oa_user(ready(instance_id)[0].candidates[0])
    cases = [({"requestid": "424242", "nodeid": "1011", "operator": manager}, "不是 finflow 实例"),
             ({"requestid": request_id, "nodeid": "1099", "operator": manager}, "没有映射"),
             ({"requestid": request_id, "nodeid": "1011", "operator": "98765"}, "没有对应的在职 finflow 用户")]
    for fields, words in cases:
        response = oa.sim.send_callback({**fields, "action": "submit", "remark": "", "logid": ""})
        assert response.status_code == 200 and response.json()["status"] == "refused", response.text
        assert words in response.json()["message"]
    malformed = oa.sim.send_callback({"requestid": request_id, "action": "approve-ish"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_callback"
    assert [t.node_id for t in ready(instance_id)] == ["manager_approval"]


def test_the_poller_applies_a_decision_whose_callback_never_came(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    decide_in_oa(oa, instance_id, ready(instance_id)[0].candidates[0], notify=False)
    assert [t.node_id for t in ready(instance_id)] == ["manager_approval"]
    counts = poller.poll()
    assert counts["new"] >= 1
    assert [t.node_id for t in ready(instance_id)] == ["finance_review"]
    assert poller.poll()["new"] == 0  # read again: nothing new, nothing applied twice
    assert len([e for e in events(instance_id) if e.type == "task.completed"]) == 1


def test_a_decision_taken_on_both_sides_is_a_conflict_not_a_second_decision(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    manager = ready(instance_id)[0].candidates[0]
    oa.sim.fault("http500", times=1, api="submitRequest")
    act(instance_id, "manager_approval", user=manager)  # finflow approves; OA did not hear of it yet
    assert oa.twin(instance_id).state == "retrying"
    response = oa.sim.act(oa.twin(instance_id).request_id, oa.oa_user(manager), "reject", "OA 中驳回")
    assert response["callback"]["status"] == 200
    conflict = [d for d in oa.decisions(instance_id) if d.status == "conflict"]
    assert len(conflict) == 1 and "未重复处理" in conflict[0].result
    incidents = [e for e in events(instance_id) if e.type == "integration.incident"]
    assert incidents and incidents[0].payload["kind"] == "conflict"
    assert [t.node_id for t in ready(instance_id)] == ["finance_review"]  # finflow's approval stands


# -- OA down, refusing, or an unlinked user ---------------------------------------------------------------
@pytest.mark.parametrize("fault, words", [("http500", "HTTP 500"), ("html", "HTTP 502"), ("down", "connection"),
                                          ("timeout", "timeout")])
def test_oa_down_for_a_while_never_blocks_approvers_and_syncs_once_it_is_back(oa, fault, words):
    instance_id = start("reimbursement", STARTER, claim(amount=8000, category="差旅"))
    oa.sim.fault_for(fault, 3600, api="submitRequest")
    act(instance_id, "manager_approval")
    act(instance_id, "director_approval")
    assert ready(instance_id)[0].node_id == "finance_review"  # approvers went on
    twin = oa.twin(instance_id)
    assert twin.state == "retrying" and words in twin.last_error, twin.last_error
    oa.sim.clear_faults()
    oa.retry_due()
    assert oa.node(instance_id) == "1014" and oa.twin(instance_id).state == "synced"
    assert len(oa_logged(oa, instance_id, "0")) == 2


def test_a_submission_whose_answer_was_lost_is_not_submitted_twice(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    oa.sim.fault("applied_timeout", times=1, api="submitRequest")  # OA does it, finflow never hears back
    act(instance_id, "manager_approval")
    assert oa.twin(instance_id).state == "retrying"
    oa.retry_due()
    assert oa.node(instance_id) == "1014" and oa.twin(instance_id).state == "synced"
    assert len(oa_logged(oa, instance_id, "0")) == 1
    submission = [s for s in oa.submissions(instance_id) if s.kind == "submit"][0]
    assert submission.status == "sent" and "未重复提交" in submission.error


def test_an_expired_token_is_renewed_without_failing_the_job(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    oa.sim.expire_tokens()
    act(instance_id, "manager_approval")
    assert oa.node(instance_id) == "1014" and oa.twin(instance_id).state == "synced"
    assert oa.sim.calls_to("applytoken") >= 2


@pytest.mark.parametrize("fault", ["no_permission", "param_error"])
def test_a_refusal_for_good_is_a_dead_row_and_an_incident(oa, as_user, fault):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    oa.sim.fault(fault, times=1, api="submitRequest")
    act(instance_id, "manager_approval")
    view = twin_view(as_user(STARTER), instance_id)
    assert view["sync_state"] == "failed" and fault.upper() in view["last_error"]
    with transaction() as session:
        dead = session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.instance_id == instance_id, OutboxMessage.status == "dead"))
    assert dead == 1
    incident = [e for e in events(instance_id) if e.type == "integration.incident"]
    assert incident and incident[0].payload["kind"] == "delivery_failed" and incident[0].channel == "oa"


def test_an_approver_with_no_oa_user_is_refused_for_good(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    manager = ready(instance_id)[0].candidates[0]
    with transaction() as session:
        session.execute(delete(OAUserLink).where(OAUserLink.user_id == manager))
    act(instance_id, "manager_approval", user=manager)
    twin = oa.twin(instance_id)
    assert twin.state == "failed" and "没有对应的 OA 用户" in twin.last_error
    assert oa.sim.calls_to("submitRequest") == 0


# -- reconciliation ---------------------------------------------------------------------------------------
def test_reconciliation_finds_and_fixes_an_injected_mismatch(oa, tmp_path):
    healthy = start("reimbursement", STARTER, claim(amount=800))
    broken = start("reimbursement", STARTER, claim(amount=800))
    oa.sim.fault("no_permission", times=1, api="submitRequest")
    act(broken, "manager_approval")  # finflow moved on, OA refused: the row is dead, OA still at 1011
    assert oa.node(broken) == "1011"
    report = reconcile.reconcile()
    kinds = {(f["instance_id"], f["kind"]) for f in report.findings}
    assert (broken, "node_mismatch") in kinds and (broken, "finflow_only") in kinds
    assert not any(f["instance_id"] == healthy for f in report.findings)
    runner = CliRunner()
    out = tmp_path / "report.json"
    result = runner.invoke(main, ["oa", "reconcile", "--fix", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "节点不一致" in result.output and broken in result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["counts"]["node_mismatch"] == 1 and data["counts"]["fixed"] >= 1
    assert oa.node(broken) == "1014" and oa.twin(broken).state == "synced"
    assert reconcile.reconcile().findings == []
    with transaction() as session:
        metrics = reconcile.metrics(session)
    assert metrics["last_reconcile"]["counts"]["node_mismatch"] == 0 and metrics["twins"]["synced"] == 2


def test_reconciliation_reports_a_decision_only_oa_has_and_fixes_it(oa):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    decide_in_oa(oa, instance_id, ready(instance_id)[0].candidates[0], notify=False)
    report = reconcile.reconcile(fix=True)
    assert [(f["kind"], f["fixed"]) for f in report.findings if f["kind"] == "oa_only"] == [("oa_only", True)]
    assert [t.node_id for t in ready(instance_id)] == ["finance_review"]
    with transaction() as session:
        completed = session.scalar(select(func.count()).select_from(HistoryEvent).where(
            HistoryEvent.instance_id == instance_id, HistoryEvent.type == "task.completed"))
    assert completed == 1


def test_metrics_need_an_administrator(oa, as_user):
    assert as_user(STARTER).get("/api/v1/admin/oa/metrics").status_code == 403
    response = as_user("zhangwei").get("/api/v1/admin/oa/metrics")
    assert response.status_code == 200 and "twins" in response.get_json()


def test_the_twin_history_lists_calls_and_decisions(oa, as_user):
    instance_id = start("reimbursement", STARTER, claim(amount=800))
    act(instance_id, "manager_approval")
    oa.settle()
    body = as_user(STARTER).get(f"/api/v1/instances/{instance_id}/oa").get_json()
    assert [s["kind"] for s in body["submissions"]] == ["create", "submit"]
    assert all(s["status"] == "sent" for s in body["submissions"])
    assert body["twin"]["node"] == "1014"

