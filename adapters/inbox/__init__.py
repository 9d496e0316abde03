"""站内通知 (in-app notifications): who has something to approve, and how their own applications went.

Subscribes on the `channels` queue to task.assigned (each candidate: 「待审批：…」), task.completed and
instance.completed (the starter: each step's result and the final one), and to the approval operations
that put a task in front of someone: transfer, delegation, escalation, a waiting task's turn, reminders,
urging and copies (抄送). Read through GET /api/v1/notifications.
"""

from __future__ import annotations

from engine import events

SUBSCRIPTION = "inbox.notify"
EVENT_TYPES = frozenset({"task.assigned", "task.completed", "instance.completed", "task.transferred",
                         "task.delegated", "task.escalated", "task.activated", "task.reminded", "task.urged",
                         "instance.cc"})


def load() -> None:
    from adapters.inbox.handlers import notify

    events.subscribe(SUBSCRIPTION, EVENT_TYPES, "channels", notify)
