"""Accepted WeCom callbacks reach the workers over real Redis: a burst of clicks costs one hand-over job,
not a job per click, every click is applied exactly once, and the periodic re-queue puts back a lost job
without doubling the ones that are only waiting."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import select

from adapters.wecom import callback
from adapters.wecom.models import WeComCallback, WeComCard
from engine import clock
from engine.db import transaction
from engine.models import HistoryEvent
from tests import outbox_support, wecom_support
from tests.helpers import claim, ready, start

wecom, live_finflow = wecom_support.wecom, wecom_support.live_finflow  # the fixtures
private_redis, redis_url = outbox_support.private_redis, outbox_support.redis_url
CLICKS = 8


def open_tasks(redis_url: str) -> list:
    """CLICKS reimbursements at the manager's node, their cards sent (the queued jobs run here)."""
    tasks = [ready(start("reimbursement", "suxiaoyun", claim("办公", 300 + i)))[0] for i in range(CLICKS)]
    outbox_support.drain(redis_url)
    return tasks


def click_all(bed, tasks: list) -> None:
    with transaction() as session:
        cards = {c.task_id: c for c in session.scalars(select(WeComCard).where(
            WeComCard.task_id.in_([t.id for t in tasks])))}
    for task in tasks:
        card = cards[task.id]
        answer = bed.click(card.user_id, card.card_key, f"approve:{task.id}")
        assert answer.status_code == 200 and answer.text == ""


def statuses() -> list[str]:
    with transaction() as session:
        return list(session.scalars(select(WeComCallback.status).order_by(WeComCallback.id)))


def decided_once(tasks: list) -> bool:
    with transaction() as session:
        rows = list(session.scalars(select(HistoryEvent.task_id).where(
            HistoryEvent.type == "task.completed", HistoryEvent.channel == "wecom")))
    return sorted(rows) == sorted(t.id for t in tasks)


def test_a_burst_of_clicks_is_one_hand_over_job_and_each_click_is_applied_once(redis_url, wecom, live_finflow):
    tasks = open_tasks(redis_url)
    click_all(wecom, tasks)
    channels = Queue("channels", connection=Redis.from_url(redis_url))
    assert statuses() == ["received"] * CLICKS  # stored before the answer, applied later
    assert [job.func_name for job in channels.jobs] == ["engine.outbox.dispatch.run_coalesced"]
    assert outbox_support.drain(redis_url)
    assert statuses() == ["applied"] * CLICKS and decided_once(tasks)


def test_the_re_queue_puts_back_a_lost_job_and_leaves_waiting_ones(redis_url, wecom, live_finflow):
    tasks = open_tasks(redis_url)
    click_all(wecom, tasks)
    connection = Redis.from_url(redis_url)
    connection.delete(callback.WAKE_FLAG)
    Queue("channels", connection=connection).empty()  # the hand-over job is lost
    clock.advance(callback.REQUEUE_AFTER * 2)
    assert callback.requeue_stale() == CLICKS  # rows still received: the hand-over is woken again
    assert callback.hand_over_received() == CLICKS
    assert statuses() == ["queued"] * CLICKS
    with transaction() as session:
        first = session.scalar(select(WeComCallback.id).order_by(WeComCallback.id))
    Job.fetch(callback.apply_job_id(first), connection=connection).delete()  # a worker killed with it
    assert callback.requeue_stale() == 1  # the other jobs are only waiting: not queued twice
    assert callback.requeue_stale() == 0
    assert outbox_support.drain(redis_url)
    assert statuses() == ["applied"] * CLICKS and decided_once(tasks)
