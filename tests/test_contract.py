"""合同审批: legal and finance in parallel, countersign (会签) by the reviewer group, GM, seal, archive."""

from tests.helpers import act, completed_user_nodes, contract, events, instance, ready, ready_nodes, start

STARTER = "zhaoqiang"
GROUP = ["lihua", "qianfang", "zhaoqiang"]  # group contract_reviewers
REVIEWERS = ["lihua", "qianfang"]  # the applicant never countersigns their own contract


def test_legal_and_finance_review_run_in_parallel():
    iid = start("contract", STARTER, contract())
    assert ready_nodes(iid) == ["finance_review", "legal_review"]
    act(iid, "finance_review")  # finance first: order does not matter
    assert ready_nodes(iid) == ["legal_review"]
    act(iid, "legal_review")
    assert ready_nodes(iid) == ["countersign"] * 2


def test_the_applicant_in_the_reviewer_group_does_not_countersign_their_own_contract():
    iid = start("contract", STARTER, contract())
    act(iid, "legal_review")
    act(iid, "finance_review")
    assert sorted(c for t in ready(iid) for c in t.candidates) == REVIEWERS
    [excluded] = [e for e in events(iid) if e.type == "task.candidates_excluded"]
    assert excluded.node_id == "countersign" and excluded.payload["users"] == [STARTER]
    assert "申请人" in excluded.payload["reasons"][STARTER]
    for reviewer in REVIEWERS:
        act(iid, "countersign", user=reviewer)
    assert ready_nodes(iid) == ["gm_signoff"]


def test_countersign_all_approve_then_gm_seal_archive():
    iid = start("contract", STARTER, contract())
    act(iid, "legal_review")
    act(iid, "finance_review")
    signers = sorted(c for t in ready(iid) for c in t.candidates)
    assert signers == REVIEWERS  # one task per member, each for that member only
    for reviewer in REVIEWERS:
        task = next(t for t in ready(iid) if t.candidates == [reviewer])
        act(iid, "countersign", user=reviewer)
    assert ready_nodes(iid) == ["gm_signoff"]
    for node in ("gm_signoff", "seal", "archive"):
        act(iid, node)
    done = instance(iid)
    assert (done.status, done.outcome) == ("completed", "approved")
    assert completed_user_nodes(iid)[-3:] == ["gm_signoff", "seal", "archive"]
    assert task is not None


def test_one_countersign_rejection_rejects_and_cancels_the_other_signers():
    iid = start("contract", STARTER, contract())
    act(iid, "legal_review")
    act(iid, "finance_review")
    act(iid, "countersign", "reject", user="qianfang")
    done = instance(iid)
    assert (done.status, done.outcome) == ("completed", "rejected")
    assert ready(iid) == []
    cancelled = [e for e in events(iid) if e.type == "task.cancelled"]
    assert len(cancelled) == 1 and cancelled[0].node_id == "countersign"


def test_legal_rejection_rejects_after_both_reviews():
    iid = start("contract", STARTER, contract())
    act(iid, "legal_review", "reject")
    assert ready_nodes(iid) == ["finance_review"]
    act(iid, "finance_review")
    done = instance(iid)
    assert (done.status, done.outcome) == ("completed", "rejected")


def test_gm_rejection():
    iid = start("contract", STARTER, contract())
    act(iid, "legal_review")
    act(iid, "finance_review")
    for reviewer in REVIEWERS:
        act(iid, "countersign", user=reviewer)
    act(iid, "gm_signoff", "reject")
    assert instance(iid).outcome == "rejected"
