"""Per-version process statistics (the auditor's 流程统计 and its heatmap, like Camunda Cockpit's): how
many instances reached each node, the time spent there (average and p90, from the task rows), the
slowest node, the rejection rate, how many open tasks are overdue, and how often each sequence flow was
taken — all index-backed reads of the task rows and the history, never the engine state."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from engine import clock
from engine.db import is_postgres
from engine.models import HistoryEvent, Instance, Task
from engine.runner.model import ProcessModel
from engine.services.progress import ENGINE_STEPS

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
    _history_figures(session, in_version, stats, model, version_id)
    return stats


def _seconds_between(session: Session, start, end):
    """`end - start` in seconds, computed by the database (converting 10,000s of timestamps to Python
    datetimes and back is most of what reading them costs)."""
    if is_postgres(session):
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _task_figures(session: Session, in_version, stats: VersionStats) -> None:
    durations: dict[str, list[float]] = defaultdict(list)
    overdue = (Task.due_at.is_not(None)) & (Task.due_at < clock.now())
    rows = session.execute(select(Task.node_id, Task.status, Task.action,
                                  _seconds_between(session, Task.created_at, Task.completed_at), overdue)
                           .where(Task.instance_id.in_(in_version)))
    for node_id, status, action, seconds, late in rows:
        node = stats.nodes.get(node_id)
        if node is None:
            continue
        if status == "completed" and seconds is not None:
            durations[node_id].append(float(seconds))
            node.decided += 1
            node.rejected += action == "reject"
        elif status in OPEN:
            node.waiting += 1
            node.overdue += bool(late)
    for node_id, values in durations.items():
        values.sort()
        stats.nodes[node_id].average_seconds = sum(values) / len(values)
        stats.nodes[node_id].p90_seconds = values[min(len(values) - 1, int(0.9 * len(values)))]


# The flows each gateway decision took, counted by the database: decoding tens of thousands of JSON
# payloads in Python is what made this page slow. The JSON functions differ by dialect.
_GATEWAY_FLOWS = {
    "postgresql": "SELECT taken->>'flow_id', count(*) FROM history_events h "
                  "CROSS JOIN LATERAL json_array_elements(h.payload->'taken') taken "
                  "WHERE h.type = 'gateway.decision' AND h.instance_id IN "
                  "(SELECT id FROM instances WHERE version_id = :version) GROUP BY 1",
    "sqlite": "SELECT json_extract(taken.value, '$.flow_id'), count(*) FROM history_events h, "
              "json_each(h.payload, '$.taken') taken WHERE h.type = 'gateway.decision' AND h.instance_id IN "
              "(SELECT id FROM instances WHERE version_id = :version) GROUP BY 1",
}


def _gateway_flows(session: Session, version_id: int) -> dict[str, int]:
    sql = _GATEWAY_FLOWS[session.get_bind().dialect.name]
    return {flow: count for flow, count in session.execute(text(sql), {"version": version_id}) if flow}


def _history_figures(session: Session, in_version, stats: VersionStats, model: ProcessModel,
                     version_id: int) -> None:
    passing = HistoryEvent.type.in_(sorted(ENGINE_STEPS | {"task.created"}))  # one per pass through a node
    # per (node, instance) first, then per node: a hash aggregate, where count(DISTINCT) would sort
    visits = (select(HistoryEvent.node_id, func.count().filter(passing).label("passes"))
              .where(HistoryEvent.instance_id.in_(in_version), HistoryEvent.node_id.is_not(None))
              .group_by(HistoryEvent.node_id, HistoryEvent.instance_id).subquery())
    per_node = session.execute(select(visits.c.node_id, func.count(), func.sum(visits.c.passes))
                               .group_by(visits.c.node_id))
    for node_id, instances, tokens in per_node:
        if node_id in stats.nodes:
            stats.nodes[node_id].instances, stats.nodes[node_id].tokens = instances, int(tokens or 0)
    chosen = _gateway_flows(session, version_id)
    gateways = {n for n, node in model.nodes.items() if node.chooses_flows}
    for (source, _target), flow in model.flows.items():
        source_stats = stats.nodes.get(source)
        taken = chosen.get(flow.id, 0) if source in gateways else (source_stats.tokens if source_stats else 0)
        stats.flows[flow.id] = taken
