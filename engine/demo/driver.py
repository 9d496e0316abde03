"""Drive instances through the service layer, one transaction per command, as approvers would.

Used by `finflow demo`, the benchmark and the tests: a scenario says who starts what and which action
each node gets; the first candidate of every ready task acts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.db import transaction
from engine.history import Actor
from engine.services.instances import start_instance
from engine.services.queries import current_tasks
from engine.services.tasks import complete_task

Decision = str | Callable[[int], str]  # an action, or one chosen by how often the node was visited


@dataclass
class Scenario:
    title: str
    process_key: str
    starter: str
    data: dict[str, Any]
    decisions: Mapping[str, Decision] = field(default_factory=dict)  # node id -> action; default approve
    revisions: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # node id -> form data on submit


@dataclass
class DriveResult:
    instance_id: str
    status: str
    outcome: str | None
    path: list[str]  # node ids of the tasks completed, in order


def drive(scenario: Scenario, url: str | None = None, max_steps: int = 100) -> DriveResult:
    """Start the scenario's instance and act on its tasks until it ends; one transaction per command."""
    with transaction(url) as session:
        instance = start_instance(session, Actor(scenario.starter, "demo"), scenario.process_key, scenario.data)
        instance_id, status, outcome = instance.id, instance.status, instance.outcome
        tasks = _ready(session, instance_id)
    path: list[str] = []
    visits: dict[str, int] = {}
    for _ in range(max_steps):
        if not tasks:
            return DriveResult(instance_id, status, outcome, path)
        task = tasks[0]
        visits[task.node_id] = visits.get(task.node_id, 0) + 1
        action = _action(scenario, task.node_id, task.actions, visits[task.node_id])
        form = scenario.revisions.get(task.node_id, {}) if action == "submit" else {}
        with transaction(url) as session:
            _, instance = complete_task(session, Actor(task.candidates[0], "demo"), task.id, action,
                                        _comment(action), form)
            status, outcome = instance.status, instance.outcome
            tasks = _ready(session, instance_id)
        path.append(task.node_id)
    raise RuntimeError(f"{scenario.title}: still running after {max_steps} steps")


def _ready(session, instance_id: str) -> list:
    return [t for t in current_tasks(session, instance_id) if t.status == "ready"]


def _action(scenario: Scenario, node_id: str, allowed: list[str], visit: int) -> str:
    decision = scenario.decisions.get(node_id)
    if decision is None:
        return "submit" if "submit" in allowed else "approve"
    return decision(visit) if callable(decision) else decision


def _comment(action: str) -> str:
    return {"approve": "同意", "reject": "请补充材料后重新提交", "submit": "已按要求修改"}[action]
