"""The per-version statistics read from rollups (engine.services.rollups) equal the full aggregation they
replaced, whenever the fold ran: never, part of the way, all the way, before more activity; with two folds
at once, with a row committed late below the watermark, with archived history. The aggregation is kept
here as the reference (engine/services/statistics.py before the rollups, reading the archive beside the
live table: see the rollups module on archived history)."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, union_all

from engine import clock
from engine.audit import archive
from engine.db import Base, transaction
from engine.errors import FinflowError
from engine.history import Actor
from engine.models import HistoryArchive, HistoryEvent, Instance, StatisticsWatermark, Task
from engine.outbox import worker
from engine.services import rollups
from engine.services.deployments import model_for
from engine.services.instances import withdraw_instance
from engine.services.progress import ENGINE_STEPS
from engine.services.statistics import OPEN, NodeStats, VersionStats, version_statistics
from engine.services.tasks import complete_task, return_task, transfer_task
from tests.helpers import claim, ready, start

STARTERS = ("suxiaoyun", "zhangwei")


def postgres_only(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite writers take the database lock in turn")


# -- the reference: the full aggregation -------------------------------------------------------------


def _history_union():
    columns = ("id", "instance_id", "seq", "type", "node_id", "task_id", "payload")
    return union_all(*(select(*(t.__table__.c[c] for c in columns)) for t in (HistoryEvent, HistoryArchive))
                     ).subquery("h")


def reference(session, version_id: int, model) -> VersionStats:
    """engine/services/statistics.py as it was: every task and history row of the version aggregated."""
    in_version = select(Instance.id).where(Instance.version_id == version_id).scalar_subquery()
    by_status = dict(session.execute(select(Instance.status, func.count()).where(Instance.version_id == version_id)
                                     .group_by(Instance.status)).all())
    stats = VersionStats(sum(by_status.values()), by_status)
    for node_id, node in model.nodes.items():
        stats.nodes[node_id] = NodeStats(node_id, node.name)
    durations: dict[str, list[float]] = defaultdict(list)
    overdue = (Task.due_at.is_not(None)) & (Task.due_at < clock.now())
    rows = session.execute(select(Task.node_id, Task.status, Task.action,
                                  rollups._seconds_between(session, Task.created_at, Task.completed_at), overdue)
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
    h = _history_union()
    passing = h.c.type.in_(sorted(ENGINE_STEPS | {"task.created"}))
    visits = (select(h.c.node_id, func.count().filter(passing).label("passes"))
              .where(h.c.instance_id.in_(in_version), h.c.node_id.is_not(None))
              .group_by(h.c.node_id, h.c.instance_id).subquery())
    for node_id, instances, tokens in session.execute(select(visits.c.node_id, func.count(), func.sum(visits.c.passes))
                                                      .group_by(visits.c.node_id)):
        if node_id in stats.nodes:
            stats.nodes[node_id].instances, stats.nodes[node_id].tokens = instances, int(tokens or 0)
    chosen: dict[str, int] = defaultdict(int)
    for (payload,) in session.execute(select(h.c.payload).where(h.c.type == "gateway.decision",
                                                                h.c.instance_id.in_(in_version))):
        for taken in payload.get("taken", []):
            if taken.get("flow_id"):
                chosen[taken["flow_id"]] += 1
    gateways = {n for n, node in model.nodes.items() if node.chooses_flows}
    for (source, _target), flow in model.flows.items():
        source_stats = stats.nodes.get(source)
        stats.flows[flow.id] = (chosen.get(flow.id, 0) if source in gateways
                                else (source_stats.tokens if source_stats else 0))
    return stats


def version_id_of(process_key: str = "reimbursement") -> int:
    with transaction() as session:
        return session.scalar(select(Instance.version_id).where(Instance.process_key == process_key).limit(1))


def assert_matches_reference(version_id: int) -> VersionStats:
    with transaction(readonly=True) as session:
        model = model_for(session, version_id)
        got, want = version_statistics(session, version_id, model), reference(session, version_id, model)
    assert (got.instances, got.by_status, got.flows) == (want.instances, want.by_status, want.flows)
    for node_id, expected in want.nodes.items():
        node = got.nodes[node_id]
        exact = ("instances", "tokens", "decided", "rejected", "waiting", "overdue")
        assert {k: getattr(node, k) for k in exact} == {k: getattr(expected, k) for k in exact}, node_id
        if expected.average_seconds is None:
            assert node.average_seconds is None and node.p90_seconds is None, node_id
            continue
        assert node.average_seconds == pytest.approx(expected.average_seconds, rel=1e-9, abs=1e-6), node_id
        bound = rollups.MAX_RELATIVE_ERROR * abs(expected.p90_seconds) * (1 + 1e-9) + 1e-9
        assert abs(node.p90_seconds - expected.p90_seconds) <= bound, (node_id, node.p90_seconds, expected)
    assert got.bottleneck is not None or want.bottleneck is None
    return got


# -- driving instances through the engine ----------------------------------------------------------------


def step(rng: random.Random, instance_id: str) -> bool:
    """One decision on one of the instance's ready tasks, after some time has passed; False when none."""
    tasks = ready(instance_id)
    if not tasks:
        return False
    task = rng.choice(tasks)
    clock.advance(timedelta(minutes=rng.randint(1, 600)))
    weights = {"approve": 70, "reject": 18, "resubmit": 80, "return": 6}
    choices = [a for a in task.actions if a in weights] or list(task.actions)
    action = rng.choices(choices, weights=[weights.get(a, 5) for a in choices])[0]
    user = task.candidates[0]
    with transaction() as session:
        try:
            if action == "return":
                return_task(session, Actor(user), task.id, "applicant", "材料不全")
            else:
                complete_task(session, Actor(user), task.id, action, "ok", {})
        except FinflowError:
            complete_task(session, Actor(user), task.id, "approve", "ok", {})
    return True


def drive(rng: random.Random, instances: list[str], steps: int) -> None:
    for _ in range(steps):
        open_ones = [i for i in instances if ready(i)]
        if not open_ones:
            return
        step(rng, rng.choice(open_ones))


def start_some(rng: random.Random, n: int) -> list[str]:
    started = []
    for _ in range(n):
        category, amount = rng.choice([("办公", 1200), ("差旅", 6800), ("办公", 300), ("差旅", 26000)])
        started.append(start("reimbursement", rng.choice(STARTERS), claim(category, amount)))
    return started


def withdraw_fresh(rng: random.Random) -> str:
    (instance_id,) = start_some(rng, 1)
    with transaction() as session:
        withdraw_instance(session, Actor(session.get(Instance, instance_id).starter_id), instance_id, "不报了")
    return instance_id


def watermark() -> StatisticsWatermark | None:
    with transaction() as session:
        return session.get(StatisticsWatermark, rollups.STATE)


# -- tests -----------------------------------------------------------------------------------------------


def test_the_figures_match_the_full_aggregation_before_during_and_after_folds():
    rng = random.Random(7)
    instances = start_some(rng, 6)
    drive(rng, instances, 25)
    withdraw_fresh(rng)
    version_id = version_id_of()
    assert watermark() is None
    assert_matches_reference(version_id)  # never folded: the tail is the whole history

    partial = rollups.fold(batch=7, max_ids=30)
    assert partial.rows > 0 and not partial.done and partial.folded_to == 30
    assert_matches_reference(version_id)

    everything = rollups.fold(batch=40)
    assert everything.done and everything.gaps == 0
    with transaction() as session:
        assert everything.folded_to == session.scalar(select(func.max(HistoryEvent.id)))
    stats = assert_matches_reference(version_id)
    assert any(n.tokens > n.instances for n in stats.nodes.values())  # a loop (reject, resubmit) counts twice
    assert sum(n.decided for n in stats.nodes.values()) > 15 and sum(n.rejected for n in stats.nodes.values())
    assert sum(stats.flows.values()) > 30 and stats.by_status.get("withdrawn") == 1

    instances += start_some(rng, 3)
    drive(rng, instances, 20)
    instances += start_some(rng, 2)
    with transaction() as session:  # the shipped diagrams have no deadlines: give two open tasks one
        for n, task in enumerate(session.scalars(select(Task).where(Task.status.in_(OPEN)).limit(2))):
            task.due_at = clock.now() + timedelta(hours=-1 if n == 0 else 1)
    stats = assert_matches_reference(version_id)  # the new rows are the tail
    assert sum(n.overdue for n in stats.nodes.values()) == 1
    rollups.fold(batch=5, max_ids=12)
    assert_matches_reference(version_id)
    again = rollups.fold()
    assert again.done
    assert_matches_reference(version_id)


def test_a_fold_with_nothing_new_changes_nothing():
    rng = random.Random(11)
    drive(rng, start_some(rng, 2), 6)
    first = rollups.fold()
    epoch = watermark().epoch
    second = rollups.fold()
    assert first.rows > 0 and second.rows == 0 and second.done
    assert watermark().epoch == epoch and watermark().events == first.rows
    assert_matches_reference(version_id_of())


def test_the_statistics_read_is_read_only_and_registered_on_the_sweep():
    assert rollups.fold_sweep in worker.periodic()
    rng = random.Random(3)
    drive(rng, start_some(rng, 2), 4)
    rollups.fold_sweep(None)
    assert watermark().folded_to > 0
    assert_matches_reference(version_id_of())


def test_the_p90_histogram_is_within_its_stated_error():
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 400)
        scale = 10 ** rng.uniform(-3, 7)
        values = sorted(rng.lognormvariate(0, 2) * scale for _ in range(n))
        if rng.random() < 0.2:
            values = sorted([0.0] * rng.randint(1, n) + values)
        exact = values[min(len(values) - 1, int(0.9 * len(values)))]
        buckets = rollups.Counter(rollups.bucket_of(v) for v in values)
        estimate = rollups.percentile_of(buckets, 0.9)
        assert abs(estimate - exact) <= rollups.MAX_RELATIVE_ERROR * exact * (1 + 1e-12)
    assert rollups.MAX_RELATIVE_ERROR < 0.011
    assert rollups.percentile_of(rollups.Counter(), 0.9) is None
    assert rollups.percentile_of(rollups.Counter({rollups.bucket_of(0.0): 3}), 0.9) == 0.0


def test_archived_history_keeps_counting_whether_folded_before_or_after():
    rng = random.Random(13)
    instances = start_some(rng, 5)
    drive(rng, instances, 40)
    withdraw_fresh(rng)
    withdraw_fresh(rng)
    version_id = version_id_of()
    rollups.fold(batch=10, max_ids=25)  # part folded before the archive, the rest after it
    moved = archive.archive(now=clock.now() + timedelta(days=400))
    assert moved.instances >= 2
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(HistoryArchive)) == moved.events
    assert_matches_reference(version_id)
    rollups.fold()
    assert_matches_reference(version_id)


def test_two_folds_at_once_do_not_count_twice(db):
    postgres_only(db)
    rng = random.Random(17)
    drive(rng, start_some(rng, 5), 30)
    version_id = version_id_of()
    barrier, errors, reports = threading.Barrier(3), [], []

    def folding(wait: bool) -> None:
        try:
            barrier.wait(10)
            reports.append(rollups.fold(batch=9, wait=wait))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=folding, args=(w,)) for w in (True, True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(reports) == 3
    with transaction() as session:
        assert sum(r.rows for r in reports) == session.scalar(select(func.count()).select_from(HistoryEvent))
    assert watermark().events == sum(r.rows for r in reports)
    assert_matches_reference(version_id)


def test_a_row_committed_late_below_the_watermark_is_still_counted(db):
    postgres_only(db)
    rng = random.Random(19)
    slow, fast = start_some(rng, 2)
    version_id = version_id_of()
    rollups.fold()
    held, release, failures = threading.Event(), threading.Event(), []

    def slow_command() -> None:  # takes its history ids, then waits before committing
        try:
            task = ready(slow)[0]
            with transaction() as session:
                complete_task(session, Actor(task.candidates[0]), task.id, "approve", "ok", {})
                session.flush()
                held.set()
                assert release.wait(30)
        except Exception as exc:  # reported below
            failures.append(exc)
            held.set()

    thread = threading.Thread(target=slow_command)
    thread.start()
    assert held.wait(30)
    step(rng, fast)  # commits history with larger ids
    with transaction() as session:
        transfer_task(session, Actor(ready(fast)[0].candidates[0]), ready(fast)[0].id, "liyan", "休假")
    passed = rollups.fold()
    assert passed.gaps >= 1  # the slow command's ids are below the watermark, not visible yet
    assert_matches_reference(version_id)
    release.set()
    thread.join(30)
    assert not failures
    assert_matches_reference(version_id)  # read as tail: in the watched gap
    after = rollups.fold()
    assert after.rows > 0 and after.gaps == 0
    assert_matches_reference(version_id)


def test_a_gap_left_by_a_rollback_is_dropped_once_settled(db):
    postgres_only(db)
    rng = random.Random(23)
    (instance_id,) = start_some(rng, 1)
    with pytest.raises(RuntimeError), transaction() as session:
        task = ready(instance_id)[0]
        complete_task(session, Actor(task.candidates[0]), task.id, "approve", "ok", {})
        session.flush()
        raise RuntimeError("roll back: the ids it took stay unused")
    step(rng, instance_id)
    assert rollups.fold().gaps == 1
    assert rollups.fold().gaps == 1  # within the grace period
    clock.advance(rollups.GAP_GRACE + timedelta(seconds=1))
    assert rollups.fold().gaps == 0
    assert_matches_reference(version_id_of())


def test_the_migration_matches_the_models(schema):
    tables = {"statistics_watermark", "node_rollups", "node_duration_buckets", "flow_rollups", "history_archive"}
    with schema.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(context, Base.metadata) if _table(d) in tables]
    assert diffs == []


def _table(diff) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:]:
        name = getattr(getattr(part, "table", None), "name", None) or getattr(part, "name", None)
        if isinstance(part, str):
            name = part
        if isinstance(name, str):
            return name
    return None
