"""Per-version process statistics (the auditor's 流程统计 and its heatmap, like Camunda Cockpit's): how
many instances reached each node, the time spent there (average and p90, from the task rows), the
slowest node, the rejection rate, how many open tasks are overdue, and how often each sequence flow was
taken — never from the engine state.

What only grows with the history (instances and passes per node, decided and rejected tasks and their
durations, flows taken) comes from the rollups (engine.services.rollups: folded figures plus the rows not
folded yet, exact either way); what changes in place is read live and is small by nature: the open tasks
(ix_tasks_status_created) and the instances by status (ix_instances_version_status). The p90 is read from
a per-node histogram, within rollups.MAX_RELATIVE_ERROR (1.1 %) of the exact value; the rest is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import clock
from engine.models import Instance, Task
from engine.runner.model import ProcessModel
from engine.services import rollups

OPEN = ("ready", "waiting")


@dataclass
class NodeStats:
    node_id: str
    name: str
    instances: int = 0  # instances that reached it
    tokens: int = 0  # passes through it (a loop counts each)
    average_seconds: float | None = None
    p90_seconds: float | None = None  # within rollups.MAX_RELATIVE_ERROR of the exact p90
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
    """The statistics of one version; read-only, a few index reads whatever the history's size."""
    by_status = dict(session.execute(select(Instance.status, func.count()).where(Instance.version_id == version_id)
                                     .group_by(Instance.status)).all())
    stats = VersionStats(sum(by_status.values()), by_status)
    for node_id, node in model.nodes.items():
        stats.nodes[node_id] = NodeStats(node_id, node.name)
    _history_figures(stats, model, rollups.version_figures(session, version_id), version_id)
    _open_tasks(session, version_id, stats)
    return stats


def _history_figures(stats: VersionStats, model: ProcessModel, figures: rollups.Figures, version_id: int) -> None:
    for (_version, node_id), node in figures.nodes.items():
        target = stats.nodes.get(node_id)
        if target is None:
            continue
        target.instances, target.tokens = node.instances, node.tokens
        target.decided, target.rejected = node.decided, node.rejected
        target.average_seconds, target.p90_seconds = node.average_seconds, node.p90_seconds
    gateways = {n for n, node in model.nodes.items() if node.chooses_flows}
    for (source, _target), flow in model.flows.items():
        source_stats = stats.nodes.get(source)
        taken = (figures.flows.get((version_id, flow.id), 0) if source in gateways
                 else (source_stats.tokens if source_stats else 0))
        stats.flows[flow.id] = taken


def _open_tasks(session: Session, version_id: int, stats: VersionStats) -> None:
    """Waiting and overdue tasks per node: the open rows (a few hundred, from ix_tasks_status_created)
    of the version's instances."""
    late = func.count().filter(Task.due_at.is_not(None) & (Task.due_at < clock.now()))
    rows = session.execute(select(Task.node_id, func.count(), late).join(Instance, Instance.id == Task.instance_id)
                           .where(Task.status.in_(OPEN), Instance.version_id == version_id).group_by(Task.node_id))
    for node_id, waiting, overdue in rows:
        node = stats.nodes.get(node_id)
        if node is not None:
            node.waiting, node.overdue = waiting, overdue
