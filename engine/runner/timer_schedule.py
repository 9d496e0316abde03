"""When a BPMN timer fires, decided as the runner records it: quiet hours, and rq's scheduler.

The runner writes a `Timer` row for every timer an instance waits on and asks rq to fire it at its time
once the command commits; firing it is a command of its own (engine/timers.py), above the runner.
Reminders due in quiet hours (default 22:00–08:00 Asia/Shanghai) are deferred to the morning.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from engine.db import after_commit
from engine.models import Timer
from engine.outbox import dispatch

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
