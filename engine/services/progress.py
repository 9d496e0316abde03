"""Where an instance is on its diagram, from its history: the nodes it has been through (with how long
each took), the nodes it waits at now, and the sequence flows it took — what the auditor's diagram
colours, and what a per-version heatmap adds up.

Everything comes from the append-only history and the open task rows, never from the engine's
serialized state, so it reads the same for a running, finished or failed instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.models import HistoryEvent, Instance, Task
from engine.runner.model import ProcessModel

ENGINE_STEPS = frozenset({"node.completed", "gateway.decision", "dmn.decision", "service.completed"})  # the runner's
LEAVING = ENGINE_STEPS | {"task.completed", "timer.fired"}
OPEN_TASKS = ("ready", "waiting")


@dataclass
class NodeVisit:
    node_id: str
    entered_at: datetime
    left_at: datetime | None = None
    visits: int = 0  # how many times it was left (a loop through 退回 counts each pass)

    @property
    def seconds(self) -> float | None:
        return (self.left_at - self.entered_at).total_seconds() if self.left_at else None


@dataclass
class Progress:
    visited: dict[str, NodeVisit] = field(default_factory=dict)  # left at least once
    current: list[str] = field(default_factory=list)  # waiting there now (open tasks)
    taken_flows: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"completed": [{"node_id": v.node_id, "entered_at": v.entered_at.isoformat(),
                               "left_at": v.left_at.isoformat() if v.left_at else None,
                               "seconds": v.seconds, "visits": v.visits}
                              for v in self.visited.values() if v.left_at and v.node_id not in self.current],
                "current": self.current, "taken_flows": self.taken_flows}


def instance_progress(session: Session, instance: Instance, model: ProcessModel) -> Progress:
    events = session.execute(select(HistoryEvent.type, HistoryEvent.node_id, HistoryEvent.at, HistoryEvent.payload)
                             .where(HistoryEvent.instance_id == instance.id, HistoryEvent.node_id.is_not(None))
                             .order_by(HistoryEvent.seq)).all()
    progress = Progress()
    chosen: dict[str, set[str]] = {}  # gateway -> flow ids its decisions took
    for kind, node_id, at, payload in events:
        visit = progress.visited.setdefault(node_id, NodeVisit(node_id, at))
        if kind in LEAVING:
            visit.left_at, visit.visits = at, visit.visits + 1
        if kind == "gateway.decision":
            chosen.setdefault(node_id, set()).update(f["flow_id"] for f in payload.get("taken", []) if f.get("flow_id"))
    progress.current = sorted(set(session.scalars(select(Task.node_id).where(
        Task.instance_id == instance.id, Task.status.in_(OPEN_TASKS)))))
    reached = set(progress.visited) | set(progress.current)
    for (source, target), flow in model.flows.items():
        if source in chosen:
            taken = flow.id in chosen[source]
        else:
            taken = progress.visited.get(source) is not None and progress.visited[source].left_at is not None \
                and target in reached
        if taken:
            progress.taken_flows.append(flow.id)
    return progress
