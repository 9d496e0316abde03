"""Engine events reach WeCom as cards and messages, through the simulator over real HTTP: exactly the
right people get a card, and every card shows the result once the task is no longer theirs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from adapters.wecom.models import WeComCard
from engine import clock, timers
from engine.db import transaction
from engine.history import Actor
from engine.outbox.sweeper import sweep
from engine.services.deployments import deploy
from engine.services.instances import copy_instance, urge_instance, withdraw_instance
from engine.services.tasks import add_signers, delegate_task, return_task, transfer_task
from tests.helpers import act, claim, contract, payment, ready, start
from tests.test_timers import TIMED, deploy_text
from tests.wecom_support import wecom  # noqa: F401  (the fixture)

PROCESSES = Path(__file__).resolve().parent.parent / "processes"
STARTER, MANAGER = "suxiaoyun", "guoxin"
FINANCE = ["liuli", "yangxue", "zhuwei", "gaoyan"]


def cards_of(sim, user: str) -> list[dict]:
    return sim.cards(user)


def only_card(sim, user: str) -> dict:
    [card] = sim.cards(user)
    return card


def db_cards(instance_id: str) -> list[WeComCard]:
    with transaction() as session:
        return list(session.scalars(select(WeComCard).where(WeComCard.instance_id == instance_id)
                                    .order_by(WeComCard.id)))


def test_the_manager_gets_a_button_card_and_sees_the_result_after_approving(wecom):  # noqa: F811
    instance_id = start("reimbursement", STARTER, claim("办公", 1200, "采购办公用品"))
    card = only_card(wecom.sim, MANAGER)
    body = card["template_card"]
    assert body["card_type"] == "button_interaction"
    assert body["main_title"]["title"] == "费用报销 · 苏晓云 · ¥1,200.00"
    facts = {f["keyname"]: f["value"] for f in body["horizontal_content_list"]}
    assert facts["部门"] and "¥1,200.00" in facts.values()
    [task] = ready(instance_id)
    assert [b["key"] for b in body["button_list"]] == [f"approve:{task.id}", f"reject:{task.id}"]
    assert body["card_action"]["url"].endswith(f"/m/tasks/{task.id}")
    assert sum(len(wecom.sim.cards(u)) for u in FINANCE + [STARTER]) == 0  # nobody else yet

    act(instance_id, "manager_approval", user=MANAGER)
    assert wecom.sim.card(MANAGER, card["task_id"])["state"] == "已同意"
    finance_cards = {u: only_card(wecom.sim, u) for u in FINANCE}  # or-sign: every candidate
    assert all(c["state"] == "open" for c in finance_cards.values())

    act(instance_id, "finance_review", user="yangxue")
    states = {u: wecom.sim.card(u, c["task_id"])["state"] for u, c in finance_cards.items()}
    assert states == {"liuli": "已被他人处理", "yangxue": "已同意", "zhuwei": "已被他人处理", "gaoyan": "已被他人处理"}
    assert [c.status for c in db_cards(instance_id)].count("updated") == 5


def test_transfer_withdraw_and_urge_reach_wecom(wecom):  # noqa: F811
    instance_id = start("reimbursement", STARTER, claim("办公", 800, "打印纸"))
    [task] = ready(instance_id)
    with transaction() as session:
        transfer_task(session, Actor(MANAGER), task.id, "wangjianguo", "出差中")
    assert only_card(wecom.sim, MANAGER)["state"] == "已转办给王建国"
    new_card = only_card(wecom.sim, "wangjianguo")
    assert new_card["state"] == "open"
    with transaction() as session:
        urge_instance(session, Actor(STARTER), instance_id, "请尽快")
    texts = [m["text"]["content"] for m in wecom.sim.inbox("wangjianguo") if m["msgtype"] == "text"]
    assert len(texts) == 1 and "请尽快" in texts[0]
    with transaction() as session:
        withdraw_instance(session, Actor(STARTER), instance_id, "不需要了")
    assert wecom.sim.card("wangjianguo", new_card["task_id"])["state"] == "已撤回"


def test_the_applicant_gets_the_result_as_a_textcard(wecom):  # noqa: F811
    instance_id = start("reimbursement", STARTER, claim("办公", 300, "文具"))
    act(instance_id, "manager_approval", user=MANAGER, action="reject", comment="发票不全")
    results = [m for m in wecom.sim.inbox(STARTER) if m["msgtype"] == "textcard"]
    assert len(results) == 1 and "发票不全" in results[0]["textcard"]["description"]
    # a rejection returns the claim to the applicant: a card (no buttons: the form must be filled in) links to it
    assert any(c["template_card"]["card_type"] == "text_notice" for c in wecom.sim.cards(STARTER))


def test_sensitive_fields_are_masked_on_the_payment_card(wecom):  # noqa: F811
    data = {**payment(30000), "bank_account": "6222020200112233445"}
    instance_id = start("payment", STARTER, data)
    everyone = {c["task_id"]: c for u in [t for r in ready(instance_id) for t in r.candidates]
                for c in wecom.sim.cards(u)}
    assert everyone
    for card in everyone.values():
        text = str(card["template_card"])
        assert "6222020200112233445" not in text


def test_token_expiry_and_an_outage_are_recovered_without_duplicates(wecom):  # noqa: F811
    wecom.sim.fault("token_expired", times=1)
    instance_id = start("reimbursement", STARTER, claim("办公", 500, "墨盒"))
    assert len(wecom.sim.cards(MANAGER)) == 1  # refreshed once and sent
    wecom.sim.fault_for("http500", 3600, api="message/send")
    act(instance_id, "manager_approval", user=MANAGER)
    assert sum(len(wecom.sim.cards(u)) for u in FINANCE) == 0  # WeCom is down: nothing delivered yet
    wecom.sim.clear_faults()
    clock.advance(timedelta(hours=2))
    sweep()
    sweep()
    assert all(len(wecom.sim.cards(u)) == 1 for u in FINANCE)  # delivered once each after recovery


def test_an_invalid_user_is_a_failed_delivery_visible_on_the_task(wecom, as_user):  # noqa: F811
    wecom.sim.visible = {u["userid"] for u in wecom.sim.org["users"]} - {MANAGER}
    instance_id = start("reimbursement", STARTER, claim("办公", 500, "订书机"))
    [task] = ready(instance_id)
    answer = as_user(MANAGER).get(f"/api/v1/tasks/{task.id}/deliveries")
    assert answer.status_code == 200, answer.json
    [card] = answer.json["items"]
    assert card["status"] == "failed" and card["errcode"] == 81013 and card["user_id"] == MANAGER
    stats = as_user("wangjianguo").get("/api/v1/admin/wecom/stats")
    assert stats.status_code in (200, 403)


def test_delegate_add_sign_and_return_reach_the_cards(wecom):  # noqa: F811
    instance_id = start("reimbursement", STARTER, claim("差旅", 8000, "上海客户拜访差旅"))
    [task] = ready(instance_id)
    manager_card = only_card(wecom.sim, MANAGER)
    with transaction() as session:
        delegate_task(session, Actor(MANAGER), task.id, "wangjianguo", "请先核对")
    assert wecom.sim.card(MANAGER, manager_card["task_id"])["state"] == "已委派给王建国"
    delegate_card = only_card(wecom.sim, "wangjianguo")
    act(instance_id, "manager_approval", user="wangjianguo")  # the delegate resolves; the task returns to the owner
    assert wecom.sim.card("wangjianguo", delegate_card["task_id"])["state"] == "已处理，交回郭鑫"
    back = [c for c in wecom.sim.cards(MANAGER) if c["task_id"] != manager_card["task_id"]]
    assert len(back) == 1 and back[0]["state"] == "open"

    [task] = ready(instance_id)
    with transaction() as session:
        add_signers(session, Actor(MANAGER), task.id, ["linna"], "before", "请出纳先看")
    assert only_card(wecom.sim, "linna")["state"] == "open"
    assert wecom.sim.card(MANAGER, back[0]["task_id"])["state"] == "等待加签人处理"
    act(instance_id, "manager_approval", user="linna")
    act(instance_id, "manager_approval", user=MANAGER)

    head_tasks = ready(instance_id)  # 8,000: the department head is next
    head = head_tasks[0].candidates[0]
    head_card = only_card(wecom.sim, head)
    with transaction() as session:
        return_task(session, Actor(head), head_tasks[0].id, "manager_approval", "金额需拆分")
    assert wecom.sim.card(head, head_card["task_id"])["state"] == "已退回"
    assert [c["state"] for c in wecom.sim.cards(MANAGER)].count("open") == 1  # the returned-to node: a new card


def test_countersign_one_card_per_signer_and_a_rejection_closes_the_rest(wecom):  # noqa: F811
    signers = ["lihua", "qianfang"]  # contract_reviewers without the applicant
    instance_id = start("contract", "zhaoqiang", contract())
    act(instance_id, "legal_review")
    act(instance_id, "finance_review")
    cards = {u: only_card(wecom.sim, u) for u in signers}
    assert all(c["state"] == "open" for c in cards.values())
    assert len(wecom.sim.cards("zhaoqiang")) == 0  # the applicant does not countersign
    act(instance_id, "countersign", "reject", user="qianfang", comment="条款有风险")
    assert wecom.sim.card("qianfang", cards["qianfang"]["task_id"])["state"] == "已驳回"
    assert wecom.sim.card("lihua", cards["lihua"]["task_id"])["state"] == "已被他人处理"


def test_a_node_template_sets_the_cards_title_and_fields(wecom):  # noqa: F811
    files = {p.relative_to(PROCESSES).as_posix(): p.read_text(encoding="utf-8")
             for p in PROCESSES.rglob("*") if p.suffix in (".bpmn", ".dmn", ".json")}
    files["reimbursement.bpmn"] = files["reimbursement.bpmn"].replace(
        '<spiffworkflow:property name="finflow.form" value="approval" />',
        '<spiffworkflow:property name="finflow.form" value="approval" />'
        '<spiffworkflow:property name="card.title" value="{starter}的报销 {amount} {typo}" />'
        '<spiffworkflow:property name="card.fields" value="reason, category" />', 1)
    with transaction() as session:
        deploy(session, files, Actor(None, "cli"))
    start("reimbursement", STARTER, claim("差旅", 8000, "上海客户拜访差旅"))
    body = only_card(wecom.sim, MANAGER)["template_card"]
    assert body["main_title"]["title"] == "苏晓云的报销 ¥8,000.00 {typo}"  # an unknown placeholder stays text
    assert [f["keyname"] for f in body["horizontal_content_list"]][:2] == ["报销事由", "费用类别"]


def test_a_cc_and_a_timers_reminder_and_timeout_reach_wecom(wecom, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FINFLOW_QUIET_HOURS", "off")  # else a run started after 21:00 in Shanghai waits till 08:00
    deploy_text("timed", TIMED.replace("{action}", "approve"))
    instance_id = start("timed", STARTER, {})
    finance_cards = {u: only_card(wecom.sim, u) for u in FINANCE}
    with transaction() as session:
        copy_instance(session, Actor(STARTER), instance_id, ["xulan"], "供参考")
    [cc] = [m for m in wecom.sim.inbox("xulan") if m["msgtype"] == "textcard"]
    assert cc["textcard"]["title"].startswith("抄送") and f"/m/instances/{instance_id}" in cc["textcard"]["url"]

    clock.advance(timedelta(hours=25))
    assert timers.fire_due() == 1  # the 24 h reminder, sent by the timer through the same path
    for user in FINANCE:
        texts = [m["text"]["content"] for m in wecom.sim.inbox(user) if m["msgtype"] == "text"]
        assert len(texts) == 1 and "审批提醒" in texts[0], user
    clock.advance(timedelta(hours=48))
    timers.fire_due()  # the 72 h timeout approves: every card shows that nobody has it any more
    assert {wecom.sim.card(u, c["task_id"])["state"] for u, c in finance_cards.items()} == {"已被他人处理"}
