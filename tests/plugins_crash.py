"""Test-only crash for `finflow worker` subprocesses (FINFLOW_PLUGINS=tests.plugins_crash).

The worker's first RabbitMQ publish that the broker confirms is followed by SIGKILL of the worker itself,
before the outbox can record the delivery: the moment a real crash loses. A marker file in
FINFLOW_TEST_MARKERS makes it happen once per test, so the next worker delivers normally.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from adapters.events.rabbitmq import RabbitMQPublisher

_publish = RabbitMQPublisher.publish


def load() -> None:
    RabbitMQPublisher.publish = _publish_then_die_once


def _publish_then_die_once(self, event, routing_key: str) -> None:
    _publish(self, event, routing_key)  # returns once the broker confirmed
    marker = Path(os.environ["FINFLOW_TEST_MARKERS"]) / "crashed-after-publish"
    if not marker.exists():
        marker.write_text(event.get_id())
        os.kill(os.getpid(), signal.SIGKILL)
