"""Finance controls: exact money and routing at the boundaries, budget encumbrance under concurrency,
segregation of duties, invoices claimed once, summaries that follow the data."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest
from sqlalchemy import select

from engine.db import transaction
from engine.errors import InvalidInput
from engine.finance import budgets as ledger
from engine.history import Actor
from engine.models import BudgetEntry, InvoiceClaim, Task, TaskCandidate
from engine.services.instances import start_instance, withdraw_instance
from tests.helpers import (
    act,
    budget,
    claim,
    completed_user_nodes,
    contract,
    events,
    instance,
    invoice,
    payment,
    ready,
    ready_nodes,
    start,
)

START = "/api/v1/instances"


def run_to_end(instance_id: str, reject: str | None = None) -> None:
    while ready(instance_id):
        node = ready(instance_id)[0].node_id
        act(instance_id, node, "reject" if node == reject else "approve")


def consistent(line: str) -> bool:
    with transaction() as session:
        return ledger.verify(session, line)["consistent"]


# -- money is exact, routes hold at the boundaries ----------------------------------------------------

@pytest.mark.parametrize(("amount", "approvers"), [
    ("5000.00", ["manager_approval", "finance_review", "cashier_payment"]),
    ("5000.01", ["manager_approval", "director_approval", "finance_review", "cashier_payment"]),
    ("50000.00", ["manager_approval", "director_approval", "finance_review", "cashier_payment"]),
    ("50000.01", ["manager_approval", "director_approval", "cfo_approval", "finance_review", "cashier_payment"]),
])
def test_reimbursement_routes_exactly_at_the_boundaries(amount, approvers):
    iid = start("reimbursement", "suxiaoyun", claim("差旅", Decimal(amount)))
    run_to_end(iid)
    assert completed_user_nodes(iid) == approvers
    assert instance(iid).amount == Decimal(amount)


@pytest.mark.parametrize(("amount", "gm"), [("200000.00", False), ("200000.01", True)])
def test_payment_routes_exactly_at_the_boundaries(amount, gm):
    iid = start("payment", "suxiaoyun", payment(Decimal(amount), "MKT-ADS-2026"))
    run_to_end(iid)
    assert ("gm_approval" in completed_user_nodes(iid)) is gm
    [voucher] = [e for e in events(iid) if e.type == "service.completed" and e.node_id == "generate_voucher_task"]
    assert voucher.payload["result"]["total"] == amount


def test_contract_amount_is_kept_to_the_cent_at_the_column_limit():
    iid = start("contract", "zhaoqiang", contract(Decimal("9999999999999999.99")))
    assert instance(iid).amount == Decimal("9999999999999999.99")
    assert instance(iid).data["amount"] == "9999999999999999.99"


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400", "1e20", "12345678901234567.89",
                                 "0.001", "0", "-5"])
@pytest.mark.parametrize(("process_key", "data", "path"), [
    ("reimbursement", claim, "amount"),
    ("reimbursement", claim, "invoices.0.amount"),
    ("payment", payment, "amount"),
    ("contract", contract, "amount"),
])
def test_every_amount_field_refuses_what_is_not_exact_money(as_user, raw, process_key, data, path):
    body = data() if process_key != "payment" else data(1000)
    placeholder = "__AMOUNT__"
    target = body
    *parents, leaf = path.split(".")
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    target[leaf] = placeholder
    text = json.dumps({"process_key": process_key, "data": body}).replace(f'"{placeholder}"', raw)
    response = as_user("zhaoqiang").post(START, data=text, content_type="application/json")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert path in response.json["error"]["details"]["fields"]
    assert as_user("fengli").get(START).json["meta"]["total"] == 0  # nothing half-written


def test_two_decimal_places_and_thousands_pass_exactly(as_user):
    text = ('{"process_key": "payment", "data": {"payee": "p", "bank_account": "6222020200112233", "bank_name": "b",'
            ' "amount": 12345678.9, "due_date": "2026-12-31", "budget_line": "MKT-ADS-2026", "purpose": "x"}}')
    response = as_user("suxiaoyun").post(START, data=text, content_type="application/json")
    assert response.status_code == 201, response.json
    assert response.json["amount"] == "12345678.90"
    assert "NaN" not in response.get_data(as_text=True)


# -- budgets cannot be overspent ----------------------------------------------------------------------

def test_a_payment_reserves_at_the_check_and_consumes_at_the_voucher():
    before = budget("MKT-ADS-2026")
    iid = start("payment", "suxiaoyun", payment(30000, "MKT-ADS-2026"))
    held = budget("MKT-ADS-2026")
    assert (held.used, held.reserved) == (before.used, before.reserved + 30000)
    assert held.available == before.available - 30000
    run_to_end(iid)
    spent = budget("MKT-ADS-2026")
    assert (spent.used, spent.reserved) == (before.used + 30000, before.reserved)
    assert consistent("MKT-ADS-2026")
    with transaction() as session:
        kinds = [e.kind for e in session.scalars(select(BudgetEntry).where(BudgetEntry.instance_id == iid)
                                                 .order_by(BudgetEntry.id))]
    assert kinds == ["reserve", "consume"]


@pytest.mark.parametrize("how", ["reject", "withdraw", "cancel"])
def test_a_request_that_ends_without_approval_releases_its_reservation(as_user, how):
    before = budget("MKT-ADS-2026")
    iid = start("payment", "suxiaoyun", payment(40000, "MKT-ADS-2026"))
    assert budget("MKT-ADS-2026").reserved == before.reserved + 40000
    if how == "reject":
        act(iid, "dept_head_approval", "reject")
    elif how == "withdraw":
        assert as_user("suxiaoyun").post(f"{START}/{iid}/withdraw", json={}).status_code == 200
    else:
        assert as_user("zhangwei").post(f"{START}/{iid}/cancel", json={}).status_code == 200
    after = budget("MKT-ADS-2026")
    assert (after.used, after.reserved) == (before.used, before.reserved)
    assert [e.type for e in events(iid)].count("budget.released") == 1
    assert consistent("MKT-ADS-2026")


def test_what_is_reserved_is_not_available_to_the_next_request():
    """Seen: an 8,000 and a 20,000 payment against 22,000 available both completed (106,000 of 100,000)."""
    first = start("payment", "suxiaoyun", payment(8000, "MKT-TRAVEL-2026"))
    second = start("payment", "suxiaoyun", payment(20000, "MKT-TRAVEL-2026"))
    assert ready_nodes(first) == ["dept_head_approval"]
    assert (instance(second).status, instance(second).outcome) == ("completed", "rejected")
    for iid in (first, second):
        run_to_end(iid)
    line = budget("MKT-TRAVEL-2026")
    assert line.used == Decimal("86000.00") and line.used + line.reserved <= line.amount


def test_racing_requests_for_the_last_of_a_line_one_at_a_time():
    """Six requests of 10,000 race for 22,000: exactly two get it, and the ledger agrees."""
    outcomes, barrier = [], threading.Barrier(6)

    def request():
        barrier.wait()
        with transaction() as session:
            started = start_instance(session, Actor("suxiaoyun"), "payment", payment(10000, "MKT-TRAVEL-2026"))
            outcomes.append(started.status)

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["completed"] * 4 + ["running"] * 2
    line = budget("MKT-TRAVEL-2026")
    assert line.reserved == Decimal("20000.00") and line.available == Decimal("2000.00")
    assert consistent("MKT-TRAVEL-2026")


def test_a_revised_claim_moves_its_reservation_down():
    data = {**claim("差旅", 8000), "budget_line": "MKT-TRAVEL-2026"}
    iid = start("reimbursement", "suxiaoyun", data)
    assert budget("MKT-TRAVEL-2026").reserved == Decimal("8000.00")
    act(iid, "manager_approval", "reject")
    act(iid, "applicant_revise", "submit", form={"amount": 6000, "invoices": [invoice(6000)]})
    assert budget("MKT-TRAVEL-2026").reserved == Decimal("6000.00")
    run_to_end(iid)
    line = budget("MKT-TRAVEL-2026")
    assert (line.used, line.reserved) == (Decimal("84000.00"), Decimal("0.00"))
    assert consistent("MKT-TRAVEL-2026")


def test_a_claim_over_its_budget_goes_back_to_the_applicant_with_the_reason():
    iid = start("reimbursement", "suxiaoyun", {**claim("差旅", 30000), "budget_line": "MKT-TRAVEL-2026"})
    [revise] = ready(iid)
    assert revise.node_id == "applicant_revise"
    check = next(e for e in events(iid) if e.type == "service.completed")
    assert "超出预算" in check.payload["result"]["reason"] and budget("MKT-TRAVEL-2026").reserved == 0


def test_an_applicant_may_not_charge_another_departments_line(as_user):
    """Seen: a marketing employee could charge an R&D budget line."""
    response = as_user("suxiaoyun").post(START, json={"process_key": "payment", "data": payment(1000, "RD-DEV-2026")})
    assert response.status_code == 422 and "budget_line" in response.json["error"]["details"]["fields"]
    assert "RD-DEV-2026" in response.json["error"]["message"]
    sub_team = as_user("zhoujie").post(START, json={"process_key": "payment",  # 华东销售组, under 销售部
                                                    "data": payment(1000, "SALES-TRAVEL-2026")})
    assert sub_team.status_code == 201
    root_line = as_user("zhoujie").post(START, json={"process_key": "payment", "data": payment(1000, "GMO-ADMIN-2026")})
    assert root_line.status_code == 422  # the company-wide 总经办 line is not every team's


def test_budgets_api_shows_totals_and_the_ledger(as_user):
    iid = start("payment", "suxiaoyun", payment(5000, "MKT-ADS-2026"))
    lines = as_user("suxiaoyun").get("/api/v1/budgets").json["items"]
    assert {b["line"] for b in lines} == {"MKT-ADS-2026", "MKT-TRAVEL-2026"}  # her department's only
    detail = as_user("liuli").get("/api/v1/budgets/MKT-ADS-2026").json
    assert (detail["amount"], detail["used"], detail["reserved"], detail["available"]) == (
        "800000.00", "210000.00", "5000.00", "585000.00")
    assert detail["usage_ratio"] == "0.2688"
    assert [e["kind"] for e in detail["ledger"]] == ["reserve", "opening"]
    assert detail["ledger"][0]["instance_id"] == iid and detail["ledger"][0]["actor_id"] == "suxiaoyun"
    assert as_user("suxiaoyun").get("/api/v1/budgets/RD-DEV-2026").status_code == 403
    assert as_user("liuli").get("/api/v1/budgets/NOPE").status_code == 404


def test_warning_counts_reservations():
    start("payment", "suxiaoyun", payment(6000, "MKT-TRAVEL-2026"))  # 84,000 used + held: no warning yet…
    second = start("payment", "suxiaoyun", payment(2000, "MKT-TRAVEL-2026"))  # …86,000 with this one
    [warning] = [e for e in events(second) if e.type == "budget.warning"]
    assert warning.payload["usage_ratio"] == "0.8600"


# -- segregation of duties ----------------------------------------------------------------------------

@pytest.mark.parametrize(("operation", "body"), [
    ("transfer", {"to": "suxiaoyun"}),
    ("delegate", {"to": "suxiaoyun"}),
    ("add-signers", {"users": ["suxiaoyun"], "position": "after"}),
    ("add-signers", {"users": ["suxiaoyun"], "position": "before"}),
])
def test_no_operation_hands_a_request_to_its_applicant(as_user, operation, body):
    """Seen: a task transferred or delegated to the applicant, who then approved their own claim."""
    task = start_api(as_user)
    response = as_user("guoxin").post(f"/api/v1/tasks/{task['id']}/{operation}", json=body)
    assert response.status_code == 422 and response.json["error"]["code"] == "segregation_of_duties"
    field = "users" if operation == "add-signers" else "to"
    assert field in response.json["error"]["details"]["fields"]
    assert as_user("guoxin").get(f"/api/v1/tasks/{task['id']}").json["candidates"] == ["guoxin"]


def start_api(as_user, user="suxiaoyun"):
    response = as_user(user).post(START, json={"process_key": "reimbursement", "data": claim("差旅", 8000)})
    assert response.status_code == 201, response.json
    return response.json["current_tasks"][0]


def test_the_applicant_is_never_a_candidate_of_their_own_approval():
    """会计 yangxue claims 8,000: at 会计审核 (role finance) she is one of the accountants — not for this claim."""
    iid = start("reimbursement", "yangxue", claim("差旅", 8000))
    act(iid, "manager_approval")  # liuli, her manager
    act(iid, "director_approval")  # liuli again, as department head (no finflow.distinct on this node)
    [review] = ready(iid)
    assert review.node_id == "finance_review" and "yangxue" not in review.candidates
    excluded = [e for e in events(iid) if e.type == "task.candidates_excluded"]
    assert [(e.node_id, e.payload["users"]) for e in excluded] == [("finance_review", ["yangxue"])]


def test_distinct_approvals_are_two_people():
    """payment: 部门负责人 then 财务经理 must differ; for a finance employee both are liuli → the CFO."""
    iid = start("payment", "yangxue", payment(5000, "FIN-ADMIN-2026"))
    act(iid, "dept_head_approval", user="liuli")
    [manager] = ready(iid)
    assert (manager.node_id, manager.candidates) == ("finance_manager_approval", ["qianfang"])
    excluded = next(e for e in events(iid) if e.type == "task.candidates_excluded")
    assert excluded.payload["users"] == ["liuli"] and "部门负责人审批" in excluded.payload["reasons"]["liuli"]


def test_a_return_goes_to_whoever_holds_the_node_now(as_user):
    iid = start("reimbursement", "suxiaoyun", claim("差旅", 8000))
    manager = ready(iid)[0]
    assert as_user("guoxin").post(f"/api/v1/tasks/{manager.id}/transfer", json={"to": "jiangtao"}).status_code == 200
    act(iid, "manager_approval", user="jiangtao")
    director = ready(iid)[0]
    response = as_user("huangmin").post(f"/api/v1/tasks/{director.id}/return", json={"to": "manager_approval"})
    assert response.status_code == 200, response.json
    [again] = ready(iid)
    assert (again.node_id, again.candidates) == ("manager_approval", ["jiangtao"])
    # …and after a return to a node (not to the applicant) an approval stands: withdraw is refused
    assert as_user("suxiaoyun").post(f"{START}/{iid}/withdraw", json={}).status_code == 409


def test_withdraw_after_a_return_to_the_applicant_is_allowed(as_user):
    iid = start("reimbursement", "suxiaoyun", claim("差旅", 8000))
    act(iid, "manager_approval")
    director = ready(iid)[0]
    assert as_user("huangmin").post(f"/api/v1/tasks/{director.id}/return", json={"to": "applicant"}).status_code == 200
    assert as_user("suxiaoyun").post(f"{START}/{iid}/withdraw", json={}).status_code == 200


# -- invoices are claimed once ------------------------------------------------------------------------

def test_an_invoice_backs_one_claim_until_that_claim_is_withdrawn(as_user):
    line = invoice(800, number="04403190011100000001")
    first = start("reimbursement", "suxiaoyun", {**claim("交通", 800), "invoices": [line]})
    response = as_user("liyan").post(START, json={"process_key": "reimbursement",
                                                  "data": {**claim("交通", 800), "invoices": [line]}})
    assert response.status_code == 422 and response.json["error"]["code"] == "invoice_already_claimed"
    assert response.json["error"]["details"]["instance_id"] == first
    assert "invoices.0.number" in response.json["error"]["details"]["fields"]
    with transaction() as session:
        withdraw_instance(session, Actor("suxiaoyun"), first, "发错了")
    again = as_user("liyan").post(START, json={"process_key": "reimbursement",
                                               "data": {**claim("交通", 800), "invoices": [line]}})
    assert again.status_code == 201


def test_paper_invoices_are_keyed_by_code_and_number():
    def paper(code):
        return {**claim("交通", 100), "invoices": [invoice(100, "12345678", code=code)]}

    start("reimbursement", "suxiaoyun", paper("044031900111"))
    assert instance(start("reimbursement", "suxiaoyun", paper("044031900222"))).status == "running"
    with pytest.raises(InvalidInput):
        start("reimbursement", "liyan", paper("044031900111"))


def test_racing_claims_on_one_invoice_one_wins():
    line = invoice(50, number="99990000111122223333")
    results, barrier = [], threading.Barrier(4)

    def request(user):
        barrier.wait()
        try:
            with transaction() as session:
                start_instance(session, Actor(user), "reimbursement", {**claim("交通", 50), "invoices": [line]})
            results.append("ok")
        except InvalidInput as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=request, args=(u,)) for u in ("suxiaoyun", "liyan", "jiangtao", "luyao")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["invoice_already_claimed"] * 3 + ["ok"]
    with transaction() as session:
        assert len(list(session.scalars(select(InvoiceClaim)))) == 1


@pytest.mark.parametrize(("invoices", "field"), [
    ([invoice(99999)], "invoices"),  # seen: lines of 99,999 on a claim of 100
    ([invoice(60), invoice(30)], "invoices"),
    ([invoice(100, days_ago=-1)], "invoices.0.date"),  # tomorrow
    ([{"number": "1", "amount": 100, "date": "2099-01-01"}], "invoices.0.date"),
    ([invoice(100, days_ago=400)], "invoices.0.date"),
    ([invoice(50, "7"), invoice(50, "7")], "invoices.1.number"),
])
def test_invoice_lines_must_match_the_claim(as_user, invoices, field):
    response = as_user("suxiaoyun").post(START, json={"process_key": "reimbursement",
                                                      "data": {**claim("交通", 100), "invoices": invoices}})
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]


def test_an_invoice_replaced_in_a_revision_is_free_again():
    line = invoice(300, number="11112222333344445555")
    first = start("reimbursement", "suxiaoyun", {**claim("交通", 300), "invoices": [line]})
    act(first, "manager_approval", "reject")
    act(first, "applicant_revise", "submit", form={"invoices": [invoice(300)]})  # revised: another invoice
    second = start("reimbursement", "liyan", {**claim("交通", 300), "invoices": [line]})
    assert instance(second).status == "running"


# -- the summary stays true ---------------------------------------------------------------------------

def test_summary_follows_a_resubmission(as_user):
    """Seen: after revise-and-resubmit from 60,000 to 55,000, list and detail still showed 60,000."""
    iid = start("reimbursement", "suxiaoyun", claim("其他", 60000, "展会搭建费"))
    act(iid, "manager_approval", "reject")
    act(iid, "applicant_revise", "submit", form={"amount": 55000, "reason": "展会搭建费（已剔除餐费）",
                                                 "invoices": [invoice(55000)]})
    detail = as_user("suxiaoyun").get(f"{START}/{iid}").json
    assert (detail["amount"], detail["title"], detail["data"]["amount"]) == ("55000.00", "展会搭建费（已剔除餐费）",
                                                                             "55000.00")
    listed = as_user("suxiaoyun").get(START).json["items"][0]
    assert (listed["amount"], listed["title"]) == ("55000.00", "展会搭建费（已剔除餐费）")
    [change] = [e for e in events(iid) if e.type == "instance.summary_changed"]
    assert change.payload == {"amount": {"old": "60000.00", "new": "55000.00"},
                              "title": {"old": "展会搭建费", "new": "展会搭建费（已剔除餐费）"}}
    assert change.actor_id == "suxiaoyun"


def test_an_applicant_left_on_a_task_by_an_older_rule_still_cannot_approve_it(as_user):
    """Rows made before segregation of duties (or by any path that missed it) are checked at completion."""
    task = start_api(as_user)
    with transaction() as session:
        row = session.get(Task, task["id"])
        row.candidates = [*row.candidates, "suxiaoyun"]
        session.add(TaskCandidate(task_id=row.id, user_id="suxiaoyun"))
    response = as_user("suxiaoyun").post(f"/api/v1/tasks/{task['id']}/complete", json={"action": "approve"})
    assert response.status_code == 403 and response.json["error"]["code"] == "segregation_of_duties"
    assert as_user("guoxin").get(f"/api/v1/tasks/{task['id']}").json["status"] == "ready"
