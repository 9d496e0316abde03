"""费用报销: routing by amount and category (DMN), rejection back to the applicant, resubmission."""

from decimal import Decimal

import pytest

from tests.helpers import act, claim, completed_user_nodes, events, instance, invoice, ready, ready_nodes, start

STARTER = "suxiaoyun"  # 市场部品牌专员: manager guoxin (team lead), department head huangmin


def run_to_end(instance_id: str) -> list[str]:
    while ready(instance_id):
        act(instance_id, ready(instance_id)[0].node_id)
    return completed_user_nodes(instance_id)


@pytest.mark.parametrize(("category", "amount", "expected"), [
    ("办公", 1200, ["manager_approval", "finance_review", "cashier_payment"]),
    ("办公", 5000, ["manager_approval", "finance_review", "cashier_payment"]),
    ("差旅", 8000, ["manager_approval", "director_approval", "finance_review", "cashier_payment"]),
    ("其他", 50000, ["manager_approval", "director_approval", "finance_review", "cashier_payment"]),
    ("其他", 60000, ["manager_approval", "director_approval", "cfo_approval", "finance_review", "cashier_payment"]),
    ("招待", 2000, ["manager_approval", "finance_review", "cashier_payment"]),
    ("招待", 3000, ["manager_approval", "director_approval", "finance_review", "cashier_payment"]),
])
def test_routing_by_amount_and_category(category, amount, expected):
    iid = start("reimbursement", STARTER, claim(category, amount))
    assert run_to_end(iid) == expected
    done = instance(iid)
    assert (done.status, done.outcome) == ("completed", "approved")


def test_approvers_are_resolved_from_the_org():
    iid = start("reimbursement", STARTER, claim("其他", 60000))
    assert ready(iid)[0].candidates == ["guoxin"]  # direct manager, not the department head
    act(iid, "manager_approval")
    assert ready(iid)[0].candidates == ["huangmin"]  # head of 市场部
    act(iid, "director_approval")
    assert ready(iid)[0].candidates == ["qianfang"]  # the CFO
    act(iid, "cfo_approval")
    assert set(ready(iid)[0].candidates) == {"gaoyan", "liuli", "yangxue", "zhuwei"}  # role finance


def test_dmn_decision_is_recorded_with_inputs_and_matched_rule():
    iid = start("reimbursement", STARTER, claim("招待", 3000))
    act(iid, "manager_approval")
    decision = next(e for e in events(iid) if e.type == "dmn.decision")
    assert decision.node_id == "reimbursement_routing"
    assert "3000.00" in decision.payload["inputs"].values() and "招待" in decision.payload["inputs"].values()
    assert decision.payload["outputs"] == {"need_director": True, "need_cfo": False}
    assert len(decision.payload["matched_rules"]) == 1


@pytest.mark.parametrize("rejecting_node", ["manager_approval", "finance_review", "cashier_payment"])
def test_reject_returns_to_applicant_who_revises_and_resubmits(rejecting_node):
    iid = start("reimbursement", STARTER, claim("交通", 800, "打车费"))
    while rejecting_node not in ready_nodes(iid):
        act(iid, ready(iid)[0].node_id)
    act(iid, rejecting_node, "reject", comment="发票抬头错误")
    [revise] = ready(iid)
    assert (revise.node_id, revise.candidates, revise.actions) == ("applicant_revise", [STARTER], ["submit"])
    act(iid, "applicant_revise", "submit", form={"amount": 760, "reason": "打车费（已更正发票）",
                                                       "invoices": [invoice(760)]})
    assert ready_nodes(iid) == ["manager_approval"]  # resubmission starts the approvals again
    run_to_end(iid)
    done = instance(iid)
    assert (done.status, done.outcome) == ("completed", "approved")
    assert done.data["amount"] == "760.00" and done.amount == Decimal("760.00")


def test_revised_amount_is_routed_again():
    iid = start("reimbursement", STARTER, claim("办公", 3000))
    act(iid, "manager_approval", "reject")
    act(iid, "applicant_revise", "submit", form={"amount": 9000, "invoices": [invoice(9000)]})
    act(iid, "manager_approval")
    assert ready_nodes(iid) == ["director_approval"]  # 9,000 > 5,000 now needs the director


def test_applicant_cannot_approve_with_an_action_the_node_does_not_offer():
    from engine.errors import InvalidInput

    iid = start("reimbursement", STARTER, claim())
    act(iid, "manager_approval", "reject")
    with pytest.raises(InvalidInput):
        act(iid, "applicant_revise", "approve")
