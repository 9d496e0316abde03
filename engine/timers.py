"""Timers: BPMN timer events (boundary reminders and timeouts, intermediate waits) fired on schedule.

The runner records every timer an instance waits on as a `Timer` row in the command's transaction and
schedules it (engine/runner/timer_schedule.py: quiet hours, rq's scheduler). Firing is a command above
the runner, like an approval, with the channel `timer`: `fire_due` — called by the worker's periodic
sweep and by rq jobs scheduled for `fire_at` — fires each in its own transaction that locks the
instance, so two workers racing on one timer fire it once.
"""

from __future__ import annotations

from sqlalchemy import select

from engine import clock, metrics
from engine.db import is_postgres, transaction
from engine.history import Actor
from engine.models import Timer
from engine.runner.execution import InstanceRun
from engine.services.deployments import model_for
from engine.services.instances import lock_instance

TIMER_ACTOR = Actor(user_id=None, channel="timer")


def fire_due(url: str | None = None, limit: int = 100) -> int:
    """Fire every pending timer whose time has come; returns how many fired. Safe to run concurrently."""
    fired = 0
    with transaction(url, readonly=True) as session:
        due = list(session.scalars(select(Timer.id).where(Timer.status == "pending", Timer.fire_at <= clock.now())
                                   .order_by(Timer.fire_at).limit(limit)))
    for timer_id in due:
        fired += fire_timer(timer_id, url)
    return fired


@metrics.timed("timer")
def fire_timer(timer_id: int, url: str | None = None) -> int:
    """Fire a timer, with any other due timers of its instance, in one transaction; returns how many
    fired (0 when another worker already did, or the timer is obsolete)."""
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
