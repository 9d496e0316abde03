"""付款申请: budget check (over budget, ≥85 % warning), GM above 200,000, voucher generation."""

from decimal import Decimal

from tests.helpers import act, budget, completed_user_nodes, events, instance, payment, ready, start, vouchers

STARTER = "suxiaoyun"


def run_to_end(instance_id):
    while ready(instance_id):
        act(instance_id, ready(instance_id)[0].node_id)


def test_payment_within_budget_generates_a_balanced_voucher_and_uses_budget():
    before = budget("MKT-ADS-2026").used
    iid = start("payment", STARTER, payment(30000, "MKT-ADS-2026"))
    run_to_end(iid)
    assert completed_user_nodes(iid) == ["dept_head_approval", "finance_manager_approval", "cashier_payment"]
    done = instance(iid)
    assert (done.status, done.outcome) == ("completed", "approved")
    [voucher] = vouchers(iid)
    debit = sum(Decimal(line["debit"]) for line in voucher.lines)
    credit = sum(Decimal(line["credit"]) for line in voucher.lines)
    assert debit == credit == Decimal("30000.00")
    assert {line["account"] for line in voucher.lines} == {"6601", "1002"}
    assert done.data["voucher"]["balanced"] is True and done.data["voucher"]["voucher_no"] == voucher.id
    assert budget("MKT-ADS-2026").used == before + Decimal("30000")


def test_gm_approval_only_above_200000():
    big = start("payment", "zhaoqiang", payment(250000, "SALES-TRAVEL-2026"))
    run_to_end(big)
    assert "gm_approval" in completed_user_nodes(big)
    edge = start("payment", "zhaoqiang", payment(200000, "SALES-TRAVEL-2026"))
    run_to_end(edge)
    assert "gm_approval" not in completed_user_nodes(edge)


def test_over_budget_is_rejected_with_a_reason_before_any_approval():
    iid = start("payment", STARTER, payment(30000, "MKT-TRAVEL-2026"))  # 22,000 left
    done = instance(iid)
    assert (done.status, done.outcome) == ("completed", "rejected")
    assert ready(iid) == []
    check = next(e for e in events(iid) if e.type == "service.completed")
    assert check.payload["operator"] == "budget_check"
    assert check.payload["result"]["approved"] is False and "超出预算" in check.payload["result"]["reason"]
    line = budget("MKT-TRAVEL-2026")
    assert (line.used, line.reserved) == (Decimal("78000.00"), Decimal("0.00"))  # nothing consumed or held


def test_budget_usage_at_85_percent_raises_a_warning_event_and_continues():
    iid = start("payment", STARTER, payment(10000, "MKT-TRAVEL-2026"))  # 78,000 + 10,000 of 100,000
    warning = [e for e in events(iid) if e.type == "budget.warning"]
    assert len(warning) == 1 and warning[0].payload["usage_ratio"] == "0.8800"
    assert [t.node_id for t in ready(iid)] == ["dept_head_approval"]


def test_no_warning_below_threshold():
    iid = start("payment", STARTER, payment(1000, "MKT-ADS-2026"))
    assert not [e for e in events(iid) if e.type == "budget.warning"]


def test_rejection_ends_the_payment_as_rejected_without_voucher():
    iid = start("payment", STARTER, payment(5000, "MKT-ADS-2026"))
    act(iid, "dept_head_approval")
    act(iid, "finance_manager_approval", "reject")
    done = instance(iid)
    assert (done.status, done.outcome) == ("completed", "rejected")
    assert vouchers(iid) == []
