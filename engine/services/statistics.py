"""Per-version process statistics (the auditor's 流程统计 and its heatmap, like Camunda Cockpit's): how
many instances reached each node, the time spent there (average and p90, from the task rows), the
slowest node, the rejection rate, how many open tasks are overdue, and how often each sequence flow was
taken — all index-backed reads of the task rows and the history, never the engine state."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import clock
from engine.models import HistoryEvent, Instance, Task
from engine.runner.model import ProcessModel

OPEN = ("ready", "waiting")


@dataclass
class NodeStats:
    node_id: str
    name: str
    instances: int = 0  # instances that reached it
    tokens: int = 0  # passes through it (a loop counts each)
    average_seconds: float | None = None
    p90_seconds: float | None = None
    rejected: int = 0
    decided: int = 0
    overdue: int = 0
    waiting: int = 0

    @property
    def rejection_rate(self) -> float | None:
        return self.rejected / self.decided if self.decided else None


@dataclass
class VersionStats:
    instances: int
    by_status: dict[str, int]
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    flows: dict[str, int] = field(default_factory=dict)  # flow id -> times taken

    @property
    def bottleneck(self) -> NodeStats | None:
        timed = [n for n in self.nodes.values() if n.average_seconds is not None]
        return max(timed, key=lambda n: n.average_seconds) if timed else None


def version_statistics(session: Session, version_id: int, model: ProcessModel) -> VersionStats:
    in_version = select(Instance.id).where(Instance.version_id == version_id).scalar_subquery()
    by_status = dict(session.execute(select(Instance.status, func.count()).where(Instance.version_id == version_id)
                                     .group_by(Instance.status)).all())
    stats = VersionStats(sum(by_status.values()), by_status)
    for node_id, node in model.nodes.items():
        stats.nodes[node_id] = NodeStats(node_id, node.name)
    _task_figures(session, in_version, stats)
    _history_figures(session, in_version, stats, model)
    return stats


def _task_figures(session: Session, in_version, stats: VersionStats) -> None:
    now = clock.now()
    durations: dict[str, list[float]] = defaultdict(list)
    rows = session.execute(select(Task.node_id, Task.status, Task.action, Task.created_at, Task.completed_at,
                                  Task.due_at).where(Task.instance_id.in_(in_version)))
    for node_id, status, action, created, completed, due in rows:
        node = stats.nodes.get(node_id)
        if node is None:
            continue
        if status == "completed" and completed is not None:
            durations[node_id].append((completed - created).total_seconds())
            node.decided += 1
            node.rejected += action == "reject"
        elif status in OPEN:
            node.waiting += 1
            node.overdue += due is not None and due < now
    for node_id, values in durations.items():
        values.sort()
        stats.nodes[node_id].average_seconds = sum(values) / len(values)
        stats.nodes[node_id].p90_seconds = values[min(len(values) - 1, int(0.9 * len(values)))]


def _history_figures(session: Session, in_version, stats: VersionStats, model: ProcessModel) -> None:
    reached = session.execute(select(HistoryEvent.node_id, func.count(func.distinct(HistoryEvent.instance_id)))
                              .where(HistoryEvent.instance_id.in_(in_version), HistoryEvent.node_id.is_not(None))
                              .group_by(HistoryEvent.node_id))
    for node_id, count in reached:
        if node_id in stats.nodes:
            stats.nodes[node_id].instances = count
    passes = session.execute(select(HistoryEvent.node_id, func.count()).where(
        HistoryEvent.instance_id.in_(in_version), HistoryEvent.node_id.is_not(None),
        HistoryEvent.type.in_(("node.completed", "gateway.decision", "dmn.decision", "service.completed",
                               "task.created"))).group_by(HistoryEvent.node_id))
    for node_id, count in passes:
        if node_id in stats.nodes:
            stats.nodes[node_id].tokens = count
    decisions = session.scalars(select(HistoryEvent.payload).where(
        HistoryEvent.instance_id.in_(in_version), HistoryEvent.type == "gateway.decision"))
    chosen: dict[str, int] = defaultdict(int)
    for payload in decisions:
        for flow in payload.get("taken", []):
            if flow.get("flow_id"):
                chosen[flow["flow_id"]] += 1
    gateways = {n for n, node in model.nodes.items() if node.kind in ("exclusiveGateway", "inclusiveGateway")}
    for (source, _target), flow in model.flows.items():
        source_stats = stats.nodes.get(source)
        taken = chosen.get(flow.id, 0) if source in gateways else (source_stats.tokens if source_stats else 0)
        stats.flows[flow.id] = taken
