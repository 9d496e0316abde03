"""Timers: BPMN timer events (boundary reminders and timeouts, intermediate waits) fired on schedule.

The runner records every timer an instance waits on as a `Timer` row in the command's transaction. A
timer is fired by `fire_due` — called by the worker's periodic sweep and by rq jobs scheduled for
`fire_at` — in its own transaction that locks the instance, so two workers racing on one timer fire it
once. Reminders due in quiet hours (default 22:00–08:00 Asia/Shanghai) are deferred to the morning.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from engine import clock
from engine.db import is_postgres, transaction
from engine.history import Actor
from engine.models import Timer

TIMER_ACTOR = Actor(user_id=None, channel="timer")
log = logging.getLogger("finflow.timers")
LOCAL_ZONE = ZoneInfo(os.environ.get("FINFLOW_TIMEZONE", "Asia/Shanghai"))


def quiet_hours() -> tuple[time, time] | None:
    raw = os.environ.get("FINFLOW_QUIET_HOURS", "22:00-08:00").strip()
    if not raw or raw.lower() == "off":
        return None
    start, end = (time.fromisoformat(part.strip()) for part in raw.split("-"))
    return start, end


def defer_for_quiet_hours(moment: datetime) -> datetime:
    """The first moment at or after `moment` outside quiet hours, in the company's time zone."""
    window = quiet_hours()
    if window is None:
        return moment
    start, end = window
    local = moment.astimezone(LOCAL_ZONE)
    clock_time = local.time()
    in_window = (start <= clock_time or clock_time < end) if start > end else (start <= clock_time < end)
    if not in_window:
        return moment
    morning = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if clock_time >= end:  # evening part of the window: next morning
        morning += timedelta(days=1)
    return morning.astimezone(moment.tzinfo)


FIRE_JOB = "engine.timers.fire_timer"


def schedule_after_commit(session, created: list[Timer]) -> None:
    """Ask rq's scheduler to fire each new timer at its time, once the transaction that made it commits.

    The periodic sweep (`fire_due`) stays the safety net: a lost job, or Redis down at commit, only delays
    a timer to the next sweep. Embedded mode has no scheduler; its sweeper thread fires timers.
    """
    from engine.db import after_commit
    from engine.outbox import dispatch

    url = dispatch.redis_url()
    if url is None or not created:
        return

    def enqueue() -> None:
        queue = dispatch.queue("timers", url)
        for timer in created:
            try:
                queue.enqueue_at(timer.fire_at, FIRE_JOB, timer.id, result_ttl=0,
                                 description=f"timer {timer.id}")
            except Exception as exc:  # noqa: BLE001 - the sweep fires it; the command already committed
                log.warning("timer %s not scheduled on rq, left for the sweep: %s", timer.id, exc)
                return

    after_commit(session, enqueue)


def fire_due(url: str | None = None, limit: int = 100) -> int:
    """Fire every pending timer whose time has come; returns how many fired. Safe to run concurrently."""
    fired = 0
    with transaction(url, readonly=True) as session:
        due = list(session.scalars(select(Timer.id).where(Timer.status == "pending", Timer.fire_at <= clock.now())
                                   .order_by(Timer.fire_at).limit(limit)))
    for timer_id in due:
        fired += fire_timer(timer_id, url)
    return fired


def fire_timer(timer_id: int, url: str | None = None) -> int:
    """Fire a timer, with any other due timers of its instance, in one transaction; returns how many
    fired (0 when another worker already did, or the timer is obsolete)."""
    from engine.runner.execution import InstanceRun
    from engine.services.deployments import model_for
    from engine.services.instances import lock_instance

    with transaction(url) as session:
        instance_id = session.scalar(select(Timer.instance_id).where(Timer.id == timer_id))
        if instance_id is None:
            return 0
        instance = lock_instance(session, instance_id)  # serializes racing workers on this instance
        stmt = (select(Timer).where(Timer.instance_id == instance_id, Timer.status == "pending",
                                    Timer.fire_at <= clock.now())
                .order_by(Timer.fire_at).execution_options(populate_existing=True))
        if is_postgres(session):
            stmt = stmt.with_for_update()
        due = list(session.scalars(stmt))
        if timer_id not in {t.id for t in due}:
            return 0
        if instance.status != "running":
            for timer in due:
                timer.status = "cancelled"
            return 0
        run = InstanceRun.load(session, instance, model_for(session, instance.version_id), TIMER_ACTOR)
        fired = run.fire_timers(due)
        run.save()
        return fired
