"""Clicks on WeCom cards, end to end over real HTTP: the simulator sends the encrypted callback to
finflow under waitress, the queue job applies it through complete_task (history channel "wecom").
Cards come from the card sender (adapters.wecom.deliveries); after a decision it updates them with the
ResponseCode the click stored."""

from __future__ import annotations

import statistics
import time

import pytest
from sqlalchemy import func, select

from adapters.wecom.models import WeComCallback, WeComCard
from engine import clock
from engine.db import transaction
from engine.history import Actor
from engine.models import HistoryEvent, Task
from engine.outbox import dispatch
from engine.services.instances import withdraw_instance
from engine.services.tasks import transfer_task
from tests import wecom_support
from tests.helpers import act, claim, contract, events, payment, ready, start

wecom, live_finflow = wecom_support.wecom, wecom_support.live_finflow  # the fixtures
STARTER = "suxiaoyun"
LATENCIES: list[float] = []


def card_for(task: Task, user: str) -> str:
    """The card_key (WeCom task_id) of the card the card sender sent `user` for `task`."""
    dispatch.drain_background()
    with transaction() as session:
        key = session.scalar(select(WeComCard.card_key).where(WeComCard.task_id == task.id,
                                                               WeComCard.user_id == user))
    assert key, f"no card for {user} on {task.id}"
    return key


def click(bed, user: str, task: Task, action: str, **kwargs):
    key = card_for(task, user) if not kwargs.get("card_key") else kwargs.pop("card_key")
    started = time.perf_counter()
    answer = bed.click(user, key, f"{action}:{task.id}", **kwargs)
    LATENCIES.append(time.perf_counter() - started)
    assert answer.status_code == 200 and answer.text == ""
    dispatch.drain_background()
    return answer


def callbacks() -> list[WeComCallback]:
    with transaction() as session:
        return list(session.scalars(select(WeComCallback).order_by(WeComCallback.id)))


def decisions(iid: str) -> list[HistoryEvent]:
    return [e for e in events(iid) if e.type == "task.completed"]


@pytest.mark.parametrize(("process", "starter", "data", "action"), [
    ("reimbursement", STARTER, claim("办公", 1200), "approve"),
    ("reimbursement", STARTER, claim("办公", 1200), "reject"),
    ("payment", STARTER, payment(30000, "MKT-ADS-2026"), "approve"),
    ("contract", STARTER, contract(), "reject"),
])
def test_a_click_completes_the_task(live_finflow, wecom, process, starter, data, action):
    iid = start(process, starter, data)
    task = ready(iid)[0]
    user = task.candidates[0]
    key = card_for(task, user)
    click(wecom, user, task, action, card_key=key)
    dispatch.drain_background()  # the card sender's update, with the ResponseCode the click stored
    assert wecom.sim.card(user, key)["state"] == {"approve": "已同意", "reject": "已驳回"}[action]
    with transaction() as session:
        done = session.get(Task, task.id)
        assert (done.status, done.action, done.assignee_id) == ("completed", action, user)
    decided = decisions(iid)
    assert [(e.actor_id, e.channel, e.payload.get("action")) for e in decided] == [(user, "wecom", action)]
    assert [c.status for c in callbacks()] == ["applied"]


def test_a_retry_and_a_replay_change_nothing(live_finflow, wecom):
    iid = start("reimbursement", STARTER, claim("办公", 1200))
    task = ready(iid)[0]
    answer = click(wecom, task.candidates[0], task, "approve")
    for _ in range(3):  # WeCom retrying: the same bytes
        again = wecom.sim.replay(answer)
        assert again.status_code == 200 and again.text == ""
    dispatch.drain_background()
    assert len(decisions(iid)) == 1 and len(callbacks()) == 1


def test_a_second_click_after_the_decision_shows_done(live_finflow, wecom):
    iid = start("reimbursement", STARTER, claim("办公", 1200))
    task = ready(iid)[0]
    user = task.candidates[0]
    key = card_for(task, user)
    click(wecom, user, task, "approve")
    time.sleep(1.05)  # another second: WeCom's CreateTime differs, so this is a new event, not a retry
    click(wecom, user, task, "reject", card_key=key)
    assert len(decisions(iid)) == 1
    assert [c.status for c in callbacks()] == ["applied", "refused"]
    assert wecom.sim.card(user, key)["state"] in ("已处理", "已同意")


def test_a_non_candidates_click_is_refused_and_recorded(live_finflow, wecom):
    iid = start("reimbursement", STARTER, claim("办公", 1200))
    task = ready(iid)[0]
    key = card_for(task, task.candidates[0])
    click(wecom, "qianfang", task, "approve", card_key=key, force=True)  # a forged click on someone's card
    with transaction() as session:
        assert session.get(Task, task.id).status == "ready"
    refused = [e for e in events(iid) if e.type == "task.action_refused"]
    assert len(refused) == 1 and refused[0].payload["user"] == "qianfang" and refused[0].channel == "wecom"
    assert callbacks()[-1].status == "refused"
    assert not decisions(iid)


def test_a_button_key_for_another_task_is_refused(live_finflow, wecom):
    first, second = start("reimbursement", STARTER, claim("办公", 1200)), start("reimbursement", STARTER, claim())
    task, other = ready(first)[0], ready(second)[0]
    key = card_for(task, task.candidates[0])
    answer = wecom.click(task.candidates[0], key, f"approve:{other.id}")
    assert answer.status_code == 200 and answer.text == ""
    dispatch.drain_background()
    assert not decisions(first) and not decisions(second) and callbacks()[-1].status == "refused"


def test_a_click_by_a_wecom_user_unknown_to_finflow(live_finflow, wecom):
    iid = start("reimbursement", STARTER, claim("办公", 1200))
    task = ready(iid)[0]
    key = card_for(task, task.candidates[0])
    wecom.sim.add_user(userid="stranger", name="陌生人", department=[1], main_department=1, status=1, enable=1)
    click(wecom, "stranger", task, "approve", card_key=key, force=True)
    assert not decisions(iid) and callbacks()[-1].status == "refused"


def test_a_click_on_a_withdrawn_request(live_finflow, wecom):
    iid = start("reimbursement", STARTER, claim("办公", 1200))
    task = ready(iid)[0]
    key = card_for(task, task.candidates[0])
    with transaction() as session:
        withdraw_instance(session, Actor(STARTER), iid, "不报了")
    click(wecom, task.candidates[0], task, "approve", card_key=key)
    assert not decisions(iid)
    assert callbacks()[-1].status == "refused"
    assert wecom.sim.card(task.candidates[0], key)["state"] == "已撤回"


def test_a_click_on_a_transferred_task(live_finflow, wecom):
    iid = start("reimbursement", STARTER, claim("办公", 1200))
    task = ready(iid)[0]
    holder = task.candidates[0]
    key = card_for(task, holder)
    with transaction() as session:
        transfer_task(session, Actor(holder), task.id, "huangmin", "请黄总处理")
    click(wecom, holder, task, "approve", card_key=key)
    assert not decisions(iid) and callbacks()[-1].status == "refused"
    with transaction() as session:
        moved = session.get(Task, task.id)
        assert moved.status == "cancelled" or "huangmin" in moved.candidates


def test_ack_latency_is_measured(live_finflow, wecom):
    """200 "" comes back before the engine runs: measured here, not asserted (see the report)."""
    iid = start("reimbursement", STARTER, claim("办公", 1200))
    task = ready(iid)[0]
    key = card_for(task, task.candidates[0])
    samples = []
    for i in range(40):
        started = time.perf_counter()
        answer = wecom.sim.send_event({"ToUserName": wecom.config.corp_id, "FromUserName": "nobody",
                                       "CreateTime": str(int(time.time()) + i), "MsgType": "event",
                                       "Event": "template_card_event", "TaskId": key, "EventKey": "approve:x",
                                       "ResponseCode": "x", "AgentID": str(wecom.config.agent_id)})
        samples.append(time.perf_counter() - started)
        assert answer.status_code == 200 and answer.text == ""
    dispatch.drain_background()
    samples.sort()
    print(f"\nack latency over {len(samples)} callbacks: p50 {statistics.median(samples) * 1000:.1f} ms, "
          f"p99 {samples[int(len(samples) * 0.99) - 1] * 1000:.1f} ms, max {samples[-1] * 1000:.1f} ms")
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(WeComCallback)) == 40


def test_a_crash_half_way_loses_no_click_and_decides_once(live_finflow, wecom, monkeypatch):
    from adapters.wecom import callback, inbound

    iid = start("reimbursement", STARTER, claim("办公", 1200))
    task = ready(iid)[0]
    real = inbound.complete_task

    def crash(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("worker killed after the decision, before the commit")

    monkeypatch.setattr(inbound, "complete_task", crash)
    click(wecom, task.candidates[0], task, "approve")
    assert [c.status for c in callbacks()] == ["queued"] and not decisions(iid)  # rolled back, kept
    monkeypatch.setattr(inbound, "complete_task", real)
    clock.advance(callback.REQUEUE_AFTER * 2)
    assert callback.requeue_stale() == 1
    dispatch.drain_background()
    assert callback.requeue_stale() == 0  # applied: nothing left to re-queue
    assert [c.status for c in callbacks()] == ["applied"] and len(decisions(iid)) == 1
    assert inbound.apply(callbacks()[0].id) == "applied"  # a late duplicate job: no second decision
    assert len(decisions(iid)) == 1


def test_or_sign_one_click_and_the_others_cards_show_done_by_another(live_finflow, wecom):
    iid = start("reimbursement", STARTER, claim("办公", 1200))
    act(iid, "manager_approval")
    task = ready(iid)[0]  # 财务审核: every finance member is a candidate (或签)
    assert len(task.candidates) > 1
    keys = {user: card_for(task, user) for user in task.candidates}
    first, *others = task.candidates
    click(wecom, first, task, "approve", card_key=keys[first])
    dispatch.drain_background()
    assert wecom.sim.card(first, keys[first])["state"] == "已同意"
    assert {wecom.sim.card(u, keys[u])["state"] for u in others} == {"已被他人处理"}
    time.sleep(1.05)
    click(wecom, others[0], task, "approve", card_key=keys[others[0]])  # a late click on a stale card
    assert len([d for d in decisions(iid) if d.task_id == task.id]) == 1 and callbacks()[-1].status == "refused"
