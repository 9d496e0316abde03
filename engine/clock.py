"""finflow's clock: real UTC time, which tests may move forward instead of sleeping.

SpiffWorkflow reads `datetime.now()` inside its timer event definitions and offers no way to inject a
clock, so `install()` points that module's `datetime` at a subclass whose `now()` asks this clock. In
production the offset is zero and nothing changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from SpiffWorkflow.bpmn.specs.event_definitions import timer as spiff_timer

_offset = timedelta(0)


def now() -> datetime:
    return datetime.now(UTC) + _offset


def advance(delta: timedelta) -> None:
    """Move time forward (tests and demos only)."""
    global _offset
    _offset += delta


def reset() -> None:
    global _offset
    _offset = timedelta(0)


class _ClockDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        moment = now()
        return moment.astimezone(tz) if tz is not None else moment.replace(tzinfo=None)


def install() -> None:
    spiff_timer.datetime = _ClockDatetime


install()
