"""Prometheus metrics (`GET /metrics`) and the database aggregates behind them and `finflow status`.

Two kinds of figures, kept apart on purpose:

* What the database knows (instances started and completed, open tasks and their age, the outbox
  backlog, dead rows, delivery latency, due timers) is read at scrape time by `DatabaseCollector`, with
  a few GROUP BY queries on indexed columns. Production runs N stateless API processes and M workers, so
  in-memory counters would each see a slice; the database sees everything, and every process answers the
  same numbers.
* How long commands take can only be seen where they run: `timed` wraps the service functions
  (engine/services/) and observes one histogram. With `PROMETHEUS_MULTIPROC_DIR` set (gunicorn with
  several processes, workers on the same host) prometheus_client keeps the observations in files there
  and `exposition` merges every process's; otherwise the default registry of this process is used.

Labels are process keys, node ids, queue and subscription names, outbox targets (event-subscription
ids), statuses and operation names: never amounts, names or other form data.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from inspect import signature
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Float, case, cast, extract, func, select
from sqlalchemy.orm import Session

from engine import clock
from engine.db import is_postgres, transaction
from engine.errors import FinflowError
from engine.models import Instance, Task, Timer
from engine.outbox.models import OutboxMessage

log = logging.getLogger("finflow.metrics")
F = TypeVar("F", bound=Callable[..., Any])

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
DELIVERY_WINDOW = timedelta(hours=1)
COMPLETE_ACTIONS = frozenset({"approve", "reject", "submit"})  # engine.runner.checks.KNOWN_ACTIONS
OPEN_TASK_STATUSES = ("ready", "waiting")

COMMAND_SECONDS = Histogram(
    "finflow_command_duration_seconds",
    "Time a command takes in its service function (validation, engine steps, writes; not the commit), "
    "by operation and outcome (ok, refused: a FinflowError such as 409/422, error: anything else)",
    ["operation", "outcome"], buckets=COMMAND_BUCKETS)


# -- command latency: observed where commands run -----------------------------------------------------

def timed(operation: str, *, by_action: bool = False) -> Callable[[F], F]:
    """Observe the wrapped command's duration in COMMAND_SECONDS under `operation`.

    `by_action`: label with the call's `action` argument instead (approve / reject / submit), so a
    rejection's cost is told apart from an approval's; an action outside that set (a client's typo,
    refused by the command anyway) is labelled `operation`, so a caller cannot make up label values.
    """

    def decorate(function: F) -> F:
        position = list(signature(function).parameters).index("action") if by_action else -1

        def label(args: tuple, kwargs: dict[str, Any]) -> str:
            if not by_action:
                return operation
            action = kwargs.get("action", args[position] if len(args) > position else None)
            return action if action in COMPLETE_ACTIONS else operation

        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began, outcome = time.perf_counter(), "error"
            try:
                result = function(*args, **kwargs)
                outcome = "ok"
                return result
            except FinflowError:
                outcome = "refused"
                raise
            finally:
                COMMAND_SECONDS.labels(label(args, kwargs), outcome).observe(time.perf_counter() - began)

        return wrapper  # type: ignore[return-value]

    return decorate


# -- database aggregates (shared with `finflow status`) -----------------------------------------------

@dataclass(frozen=True)
class OpenTasks:
    process: str
    node: str
    status: str
    count: int
    oldest: datetime | None
    overdue: int


@dataclass(frozen=True)
class OutboxGroup:
    queue: str
    subscription: str
    target: str
    status: str
    count: int
    oldest: datetime | None


@dataclass(frozen=True)
class DeliveryLatency:
    queue: str
    subscription: str
    target: str
    buckets: tuple[int, ...]  # cumulative counts, one per DELIVERY_BUCKETS bound
    count: int
    total_seconds: float


def instance_counts(session: Session) -> list[tuple[str, str, int]]:
    """(process key, status, instances): an index-only GROUP BY on ix_instances_process_status."""
    i = Instance
    return [tuple(row) for row in session.execute(
        select(i.process_key, i.status, func.count()).group_by(i.process_key, i.status))]


def open_tasks(session: Session, now: datetime) -> list[OpenTasks]:
    """Open task rows per process, node and status (ix_tasks_status_created): only the current tasks."""
    t = Task
    overdue = func.sum(case((t.due_at < now, 1), else_=0))
    rows = session.execute(
        select(t.process_key, t.node_id, t.status, func.count(), func.min(t.created_at), overdue)
        .where(t.status.in_(OPEN_TASK_STATUSES)).group_by(t.process_key, t.node_id, t.status))
    return [OpenTasks(p, n, s, c, oldest, int(late or 0)) for p, n, s, c, oldest, late in rows]


def outbox_groups(session: Session) -> list[OutboxGroup]:
    """Pending and dead outbox rows per queue, subscription and target, with the oldest's creation.
    Done rows (the bulk of the table) are not read: the status is the index's first column."""
    o = OutboxMessage
    rows = session.execute(
        select(o.queue, o.subscription, o.target, o.status, func.count(), func.min(o.created_at))
        .where(o.status.in_(("pending", "dead"))).group_by(o.queue, o.subscription, o.target, o.status))
    return [OutboxGroup(*row) for row in rows]


def delivery_latency(session: Session, now: datetime, window: timedelta = DELIVERY_WINDOW) -> list[DeliveryLatency]:
    """created → done seconds of rows delivered in the last `window`, as cumulative bucket counts per
    queue, subscription and target, computed by the database in one GROUP BY.

    The rows are found through ix_outbox_status_next_attempt: a done row's `next_attempt_at` is the due
    time of its last attempt, at or before `done_at`, so rows whose last attempt fell due in the window are
    an index range. A row that waited longer than the window between falling due and being run (no worker
    and no sweep for an hour) is left out; the pending-age gauge shows such an outage while it lasts.
    """
    o = OutboxMessage
    since = now - window
    if is_postgres(session):
        seconds = extract("epoch", o.done_at - o.created_at)
    else:
        seconds = (func.julianday(o.done_at) - func.julianday(o.created_at)) * 86400.0
    seconds = cast(seconds, Float)
    counts = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in DELIVERY_BUCKETS]
    rows = session.execute(
        select(o.queue, o.subscription, o.target, func.count(), func.sum(seconds), *counts)
        .where(o.status == "done", o.next_attempt_at >= since, o.done_at >= since)
        .group_by(o.queue, o.subscription, o.target))
    return [DeliveryLatency(queue, subscription, target, tuple(int(c or 0) for c in buckets), count,
                            float(total or 0.0))
            for queue, subscription, target, count, total, *buckets in rows]


def timers_due(session: Session, now: datetime) -> int:
    """Pending timers whose firing time has come (ix_timers_status_fire_at)."""
    return session.scalar(select(func.count()).select_from(Timer).where(
        Timer.status == "pending", Timer.fire_at <= now)) or 0


def age_seconds(now: datetime, then: datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


# -- the scrape --------------------------------------------------------------------------------------

class DatabaseCollector:
    """Reads the figures the database holds at each scrape. A database that does not answer gives
    `finflow_metrics_database_up 0` (and is logged) instead of failing the scrape, so the command
    latencies of this process are still collected."""

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration (and no query then)

    def collect(self) -> Iterator[Metric]:
        now = clock.now()
        try:
            with transaction(readonly=True) as session:
                families = list(_database_families(session, now))
        except Exception:  # the database is down or refuses: say so in the metrics, never a 500
            log.exception("metrics: the database did not answer")
            families, up = [], 0
        else:
            up = 1
        database_up = GaugeMetricFamily("finflow_metrics_database_up",
                                        "1 when the database answered this scrape's queries, else 0")
        database_up.add_metric([], up)
        yield database_up
        yield from families


def _database_families(session: Session, now: datetime) -> Iterator[Metric]:
    yield from _instance_families(instance_counts(session))
    yield from _task_families(open_tasks(session, now), now)
    yield from _outbox_families(outbox_groups(session), now)
    yield _latency_family(delivery_latency(session, now))
    due = GaugeMetricFamily("finflow_timers_due", "Pending BPMN timers whose firing time has come")
    due.add_metric([], timers_due(session, now))
    yield due


def _instance_families(counts: list[tuple[str, str, int]]) -> Iterator[Metric]:
    started = CounterMetricFamily("finflow_instances_started", "Instances started, per process (every "
                                  "instance row: rows are never deleted)", labels=["process"])
    completed = CounterMetricFamily("finflow_instances_completed", "Instances that ran to their end event "
                                    "(approved or rejected), per process", labels=["process"])
    current = GaugeMetricFamily("finflow_instances", "Instances per process and status (running, completed, "
                                "withdrawn, cancelled, failed)", labels=["process", "status"])
    per_process: dict[str, list[int]] = {}
    for process, status, count in counts:
        totals = per_process.setdefault(process, [0, 0])
        totals[0] += count
        totals[1] += count if status == "completed" else 0
        current.add_metric([process, status], count)
    for process, (all_started, all_completed) in sorted(per_process.items()):
        started.add_metric([process], all_started)
        completed.add_metric([process], all_completed)
    yield from (started, completed, current)


def _task_families(groups: list[OpenTasks], now: datetime) -> Iterator[Metric]:
    count = GaugeMetricFamily("finflow_open_tasks", "Open task rows per process, node and status (ready: "
                              "someone can act; waiting: a later signer of a sequence or add-sign)",
                              labels=["process", "node", "status"])
    overdue = GaugeMetricFamily("finflow_open_tasks_overdue", "Open task rows past their due time, per "
                                "process and node", labels=["process", "node"])
    oldest = GaugeMetricFamily("finflow_open_task_oldest_age_seconds", "Age of the oldest open task row, "
                               "per process and node", labels=["process", "node"])
    per_node: dict[tuple[str, str], tuple[int, datetime | None]] = {}
    for group in groups:
        count.add_metric([group.process, group.node, group.status], group.count)
        late, first = per_node.get((group.process, group.node), (0, None))
        if group.oldest is not None and (first is None or group.oldest < first):
            first = group.oldest
        per_node[(group.process, group.node)] = (late + group.overdue, first)
    for (process, node), (late, first) in sorted(per_node.items()):
        overdue.add_metric([process, node], late)
        oldest.add_metric([process, node], age_seconds(now, first))
    yield from (count, overdue, oldest)


def _outbox_families(groups: list[OutboxGroup], now: datetime) -> Iterator[Metric]:
    labels = ["queue", "subscription", "target"]
    pending = GaugeMetricFamily("finflow_outbox_pending", "Outbox rows not delivered yet (the backlog), per "
                                "queue, subscription and target", labels=labels)
    pending_age = GaugeMetricFamily("finflow_outbox_oldest_pending_age_seconds", "Age of the oldest "
                                    "undelivered outbox row", labels=labels)
    dead = GaugeMetricFamily("finflow_outbox_dead", "Outbox rows given up on (dead), waiting for an "
                             "administrator's retry", labels=labels)
    for group in groups:
        key = [group.queue, group.subscription, group.target]
        if group.status == "pending":
            pending.add_metric(key, group.count)
            pending_age.add_metric(key, age_seconds(now, group.oldest))
        else:
            dead.add_metric(key, group.count)
    yield from (pending, pending_age, dead)


def _latency_family(groups: list[DeliveryLatency]) -> Metric:
    family = GaugeHistogramMetricFamily(
        "finflow_outbox_delivery_latency_seconds",
        f"Seconds from an outbox row's creation to its delivery, over rows delivered in the last "
        f"{int(DELIVERY_WINDOW.total_seconds())} s (a window: the counts go down again)",
        labels=["queue", "subscription", "target"])
    for group in groups:
        buckets = [(_bound(b), c) for b, c in zip(DELIVERY_BUCKETS, group.buckets, strict=True)]
        family.add_metric([group.queue, group.subscription, group.target], [*buckets, ("+Inf", group.count)],
                          gsum_value=group.total_seconds)
    return family


def _bound(value: float) -> str:
    return f"{value:g}"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The scrape's body and content type: this process's (or, in multiprocess mode, every process's)
    command latencies, plus what the database holds now."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)  # the default registry: process, GC and the command histogram
    registry.register(DatabaseCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
