"""The events finflow publishes: every history event, under a CloudEvents type `com.finflow.<history type>`.

Subscriptions choose events with patterns over the short names (`task.completed`, `task.*`, `*`); a
pattern that matches no event type is refused, so a typo does not become a subscription that stays
silent. The catalogue lists what the engine records today (tests check it stays complete).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

from engine.errors import InvalidInput

TYPE_PREFIX = "com.finflow."
EVENT_TYPES: dict[str, str] = {
    "instance.started": "an application was submitted",
    "instance.completed": "the process reached an end; `outcome` says approved or rejected",
    "instance.withdrawn": "the applicant withdrew the application",
    "instance.cancelled": "an administrator cancelled the instance",
    "instance.failed": "the instance stopped on an error (bad data, a failing service task)",
    "instance.cc": "people were copied on the instance (抄送)",
    "instance.summary_changed": "the title or amount changed (a revised request); `old` and `new` of each",
    "task.created": "an approval task was opened",
    "task.assigned": "a task got its candidates",
    "task.candidates_excluded": "people the assignment named who may not approve this request (the applicant, "
                                "an earlier approver of a distinct node), with the reason",
    "task.activated": "a waiting task's turn came (依次审批, 加签)",
    "task.action_refused": "someone tried to act on a task and was refused (a WeCom click by a non-candidate, "
                           "on a finished task); `reason`, `user`, `action`",
    "task.completed": "someone acted on a task; `action` is approve / reject / submit",
    "task.cancelled": "a task closed without a decision (rejected elsewhere, returned, withdrawn)",
    "task.transferred": "转办: the task now belongs to someone else",
    "task.delegated": "委派: a delegate gives an opinion first",
    "task.delegation_resolved": "the delegate gave the opinion; the task is back with its owner",
    "task.signers_added": "加签: approvers added before or after",
    "task.returned": "退回: the application went back to an earlier node or the applicant",
    "task.urged": "催办: the applicant urged the approvers",
    "task.reminded": "a reminder timer fired",
    "task.escalated": "the task went to another role (timeout, or nobody to approve)",
    "task.reassigned": "a candidate may no longer approve (left, disabled in WeCom): `user` was taken off, "
                       "`candidates` hold the task now (the node's on_empty rule when nobody was left)",
    "task.auto_approved": "a node was approved without a person (same approver again, nobody and skip)",
    "timer.fired": "a BPMN timer fired",
    "node.completed": "an automatic node completed",
    "gateway.decision": "a gateway chose its path",
    "dmn.decision": "a DMN decision table was evaluated",
    "service.completed": "a service task returned its result (budget check, voucher)",
    "budget.warning": "a budget line passed its warning ratio (reservations included)",
    "budget.consumed": "an approved request spent what it had reserved on a budget line",
    "budget.released": "a request that ended without approval gave back what it had reserved",
    "integration.incident": "a channel could not keep its twin in step (an OA submission given up, a decision "
                            "taken on both sides): `channel`, `kind`, `message`",
}
_PATTERN = re.compile(r"^[a-z_*]+(\.[a-z_*]+)*$")


def cloud_type(event_type: str) -> str:
    return TYPE_PREFIX + event_type


def normalize_patterns(patterns: object) -> list[str]:
    """The patterns, without the optional `com.finflow.` prefix; 422 naming each bad one."""
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise InvalidInput("event_types must be a non-empty list of patterns such as \"task.*\"",
                           {"fields": {"event_types": ["must be a non-empty list of strings"]}})
    normalized = [p.strip().removeprefix(TYPE_PREFIX) for p in patterns]
    bad = [p for p in normalized if not _PATTERN.match(p) or not any(fnmatchcase(t, p) for t in EVENT_TYPES)]
    if bad:
        raise InvalidInput(f"unknown event type pattern(s): {', '.join(bad)}",
                           {"fields": {"event_types": [f"{p!r} matches no event type" for p in bad]},
                            "known": sorted(EVENT_TYPES)})
    return list(dict.fromkeys(normalized))


def matches(patterns: Iterable[str], event_type: str) -> bool:
    return any(fnmatchcase(event_type, p) for p in patterns)
