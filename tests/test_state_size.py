"""The saved workflow state stays bounded however often a request goes round a reject loop, and states
saved before pruning (every finished task kept) still load and run on."""

from __future__ import annotations

from functools import partial

from engine.db import transaction
from engine.models import Instance
from engine.runner import execution
from engine.runner.state import dump_state
from tests.helpers import act, claim, instance, invoice, ready, start

STARTER = "suxiaoyun"


def state_bytes(instance_id: str) -> int:
    with transaction() as session:
        return len(session.get(Instance, instance_id).state.encode())


def reject_and_resubmit(instance_id: str, loop: int) -> None:
    act(instance_id, "manager_approval", "reject", comment="发票不清晰")
    amount = 700 + loop
    act(instance_id, "applicant_revise", "submit", form={"amount": amount, "invoices": [invoice(amount)]})


def test_ten_reject_loops_keep_the_state_near_its_size_after_one():
    iid = start("reimbursement", STARTER, claim("交通", 800, "打车费"))
    sizes = []
    for loop in range(1, 11):
        reject_and_resubmit(iid, loop)
        sizes.append(state_bytes(iid))
    assert sizes[-1] <= 1.5 * sizes[0], sizes
    assert [t.node_id for t in ready(iid)] == ["manager_approval"]


def test_a_state_saved_with_every_finished_task_loads_continues_and_shrinks(monkeypatch):
    monkeypatch.setenv("FINFLOW_WARM_INSTANCES", "0")  # each command restores from the row, none kept warm
    iid = start("reimbursement", STARTER, claim("交通", 800, "打车费"))
    with monkeypatch.context() as old_code:
        old_code.setattr(execution, "dump_state", partial(dump_state, pruned=False))
        for loop in range(1, 6):
            reject_and_resubmit(iid, loop)
    unpruned = state_bytes(iid)
    act(iid, "manager_approval")
    assert state_bytes(iid) < 0.75 * unpruned  # the earlier loops are gone from the saved tree
    while ready(iid):
        act(iid, ready(iid)[0].node_id)
    done = instance(iid)
    assert (done.status, done.outcome, str(done.amount)) == ("completed", "approved", "705.00")
