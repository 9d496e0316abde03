"""Test-only subscriptions for `finflow worker` subprocesses (FINFLOW_PLUGINS=tests.plugins_slow).

Their effect is a row in `notifications` with a user id unique to the run (`<pid>:<random>`), so the
notifications table's own (outbox_id, user_id) guard cannot hide a second run: one row per outbox id
proves the outbox made the effect happen once. The test process subscribes the one it needs itself
(the subscriptions where events are recorded decide which outbox rows exist); workers load all of them.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from adapters.inbox.models import Notification
from engine import events
from engine.outbox.delivery import Message

SLOW = "test.slow"  # on instance.started: the first run of a row sleeps, so a test can kill the worker there
COUNT = "test.count"  # on several event types: a short pause per run, so two workers share a backlog
COUNT_EVENTS = frozenset({"instance.started", "task.created", "task.assigned"})


def load() -> None:
    subscribe_slow()
    subscribe_count()


def subscribe_slow() -> None:
    events.subscribe(SLOW, {"instance.started"}, "sync", slow)


def subscribe_count() -> None:
    events.subscribe(COUNT, COUNT_EVENTS, "sync", count)


def effect(session: Session, message: Message) -> None:
    session.add(Notification(user_id=f"{os.getpid()}:{uuid.uuid4().hex[:12]}", outbox_id=message.id,
                             kind=message.subscription, title=message.event_type, body=str(os.getpid()),
                             instance_id=message.instance_id, task_id=None, created_at=datetime.now(UTC)))
    session.flush()


def slow(session: Session, message: Message) -> None:
    """Leave a marker per run (FINFLOW_TEST_MARKERS), write the effect, and on a row's first run sleep."""
    markers = Path(os.environ["FINFLOW_TEST_MARKERS"])
    first = not any(markers.glob(f"{message.id}-*"))
    effect(session, message)
    (markers / f"{message.id}-{os.getpid()}-{uuid.uuid4().hex[:8]}").touch()
    if first:
        time.sleep(float(os.environ.get("FINFLOW_TEST_SLOW_SECONDS", "60")))


def count(session: Session, message: Message) -> None:
    effect(session, message)
    time.sleep(float(os.environ.get("FINFLOW_TEST_COUNT_SECONDS", "0.02")))
