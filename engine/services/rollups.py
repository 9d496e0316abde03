"""Rollups of the append-only history for the per-version statistics (engine.services.statistics).

The statistics of one version used to aggregate every task and history row of the version on each read
(seconds at 100,000 instances). The figures that only grow with the history are now added up once, by a
fold that runs on every sweep (engine.outbox.worker.PERIODIC), into small tables keyed by version and node:

* node_rollups: instances that reached the node, passes through it (tokens), decided and rejected tasks
  and the sum of their durations (average = sum / count);
* node_duration_buckets: a histogram of those durations in logarithmic buckets, for the p90;
* flow_rollups: how often gateway decisions took each sequence flow;
* statistics_watermark: how far the history is folded.

A read is rollup + the history not folded yet (the tail, read live by id, small) — so it is exact
whether the fold ran a second ago, long ago or never (then the tail is the whole history: exact, slow).
What does not only grow (open tasks, instance statuses) is read live by the statistics module.

**Watermark and out-of-order commits.** History ids come from a sequence: a transaction may take id 100,
another 101 and commit first, so "every id up to the largest seen" would skip 100 for good. The watermark
row therefore keeps `folded_to` *and* `gaps`: the id ranges at or below `folded_to` that were not visible
when the fold passed them (a transaction still open, or rolled back). Every fold looks at the gaps again
and folds what has appeared there; a read counts the gaps' rows as tail. A gap is dropped only once it is
known to stay empty: on PostgreSQL when every transaction that was running when the gap was seen has
ended (the snapshot's xmin has passed the xmax recorded with the gap) and at least GAP_GRACE has passed
(an id is taken by a command that wrote its instance row first, so it had a transaction id by then); on
SQLite at once, as writers take the database lock in turn and nothing commits behind the fold.

**Concurrency.** A fold step is one transaction that locks the watermark row first (SKIP LOCKED from the
sweep: another worker is at it) and, on PostgreSQL, runs at REPEATABLE READ, so the rows it folds, the ids
it marks as gaps and the watermark it writes come from one snapshot. Two folds at once never fold a row
twice: the second waits for (or skips) the first and then starts from its watermark. Readers use the
watermark row's `epoch` as a sequence lock: rollups read between two equal epochs belong to that
watermark, whatever the reader's isolation level.

**Archived history** (engine.audit.archive moves it to history_archive, same ids) is read beside the live
table, by id as well, so an instance's figures do not change when it is archived. (The aggregation this
replaced read history_events only, so an archived instance's node figures vanished while its tasks and
status still counted.) The one case this can miss: an id that SQLite hands out again after the row that
had it was archived, which needs the newest event of the whole database to be archived (180 days old).

**p90** comes from the histogram: a duration d > 0 falls in bucket floor(32·log2 d) and a bucket reads
as its geometric middle, so the p90 (the same rank as the exact one: the value at index int(0.9·n) of the
sorted durations) is within MAX_RELATIVE_ERROR = 2^(1/64) − 1 ≈ 1.09 % of the exact value. Durations of
0 or less (clock skew) have a bucket of their own and read as 0.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, exists, func, literal, or_, select, text, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from engine import clock
from engine.db import is_postgres, transaction
from engine.models import (
    FlowRollup,
    HistoryArchive,
    HistoryEvent,
    Instance,
    NodeDurationBucket,
    NodeRollup,
    StatisticsWatermark,
    Task,
)
from engine.services.progress import ENGINE_STEPS

STATE = "history"  # the watermark row's name
BATCH = 50_000  # history ids per fold transaction
SWEEP_IDS = 250_000  # history ids one sweep folds at most, so a first fold does not hold up due timers
GAP_GRACE = timedelta(seconds=60)
READ_ATTEMPTS = 3  # reads of the rollups before a reader gives up on them and reads the history whole
BUCKETS_PER_OCTAVE = 32
ZERO_BUCKET = -(2**31)  # durations of 0 s or less
MAX_RELATIVE_ERROR = 2 ** (1 / (2 * BUCKETS_PER_OCTAVE)) - 1  # of a p90 read from the histogram
PASSING = tuple(sorted(ENGINE_STEPS | {"task.created"}))  # one per pass through a node: the tokens
TABLES = (HistoryEvent, HistoryArchive)

IdRanges = Sequence[tuple[int, int | None]]  # inclusive; None: no upper end


# -- figures ---------------------------------------------------------------------------------------------


@dataclass
class NodeFigures:
    instances: int = 0
    tokens: int = 0
    decided: int = 0
    rejected: int = 0
    seconds: float = 0.0
    buckets: Counter[int] = field(default_factory=Counter)

    def add(self, other: NodeFigures) -> None:
        self.instances += other.instances
        self.tokens += other.tokens
        self.decided += other.decided
        self.rejected += other.rejected
        self.seconds += other.seconds
        self.buckets.update(other.buckets)

    @property
    def average_seconds(self) -> float | None:
        return self.seconds / self.decided if self.decided else None

    @property
    def p90_seconds(self) -> float | None:
        return percentile_of(self.buckets, 0.9)


@dataclass
class Figures:
    """What the history says of each (version, node) and (version, flow)."""

    nodes: dict[tuple[int, str], NodeFigures] = field(default_factory=lambda: defaultdict(NodeFigures))
    flows: Counter[tuple[int, str]] = field(default_factory=Counter)

    def add(self, other: Figures) -> None:
        for key, figures in other.nodes.items():
            self.nodes[key].add(figures)
        self.flows.update(other.flows)


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a duration: BUCKETS_PER_OCTAVE buckets per doubling."""
    return math.floor(math.log2(seconds) * BUCKETS_PER_OCTAVE) if seconds > 0 else ZERO_BUCKET


def bucket_value(bucket: int) -> float:
    """A bucket's duration as read back: its geometric middle, so never off by more than MAX_RELATIVE_ERROR."""
    return 0.0 if bucket == ZERO_BUCKET else 2 ** ((bucket + 0.5) / BUCKETS_PER_OCTAVE)


def percentile_of(buckets: Counter[int], fraction: float) -> float | None:
    """The value at index int(fraction·n) of the sorted durations (as the exact p90 took it), read from
    the histogram."""
    n = sum(buckets.values())
    if not n:
        return None
    rank, seen = min(n - 1, int(fraction * n)), 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen > rank:
            return bucket_value(bucket)
    return None  # unreachable: the counts add up to n


# -- reading the history by id ----------------------------------------------------------------------------


def _ids_in(column, ranges: IdRanges):
    return or_(*(column >= lo if hi is None else column.between(lo, hi) for lo, hi in ranges))


def _history(ranges: IdRanges):
    """The live and archived history rows with ids in `ranges` (an instance's rows are all in one table)."""
    return union_all(*(select(t.id, t.instance_id, t.seq, t.type, t.node_id, t.task_id)
                       .where(_ids_in(t.id, ranges)) for t in TABLES)).subquery("h")


def _seconds_between(session: Session, start, end):
    """`end - start` in seconds, computed by the database."""
    if is_postgres(session):
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def collect(session: Session, ranges: IdRanges, version_id: int | None = None, *, whole: bool = False) -> Figures:
    """The figures of the history rows with ids in `ranges`, for one version or all of them. `whole`: the
    ranges cover every id, so no row outside them can come first (spares the check, for unfolded reads)."""
    figures = Figures()
    _node_figures(session, ranges, version_id, figures, whole)
    _task_figures(session, ranges, version_id, figures)
    _flow_figures(session, ranges, version_id, figures)
    return figures


def _node_figures(session: Session, ranges: IdRanges, version_id: int | None, figures: Figures,
                  whole: bool) -> None:
    """Passes and first visits per node. An instance reached a node in the row that is its first there:
    the row of smallest seq among the selected ones, with no earlier one in the whole history (an earlier
    row is visible, as an instance's commands commit in seq order, and folded or in the tail)."""
    h = _history(ranges)
    pairs = (select(Instance.version_id, h.c.instance_id, h.c.node_id, func.min(h.c.seq).label("seq"),
                    func.sum(case((h.c.type.in_(PASSING), 1), else_=0)).label("passes"))
             .join(Instance, Instance.id == h.c.instance_id).where(h.c.node_id.is_not(None))
             .group_by(Instance.version_id, h.c.instance_id, h.c.node_id))
    if version_id is not None:
        pairs = pairs.where(Instance.version_id == version_id)
    pairs = pairs.subquery("p")
    if whole:
        first = literal(1)
    else:
        earlier = [exists().where(t.instance_id == pairs.c.instance_id, t.node_id == pairs.c.node_id,
                                  t.seq < pairs.c.seq) for t in TABLES]
        first = case((~earlier[0] & ~earlier[1], 1), else_=0)
    query = (select(pairs.c.version_id, pairs.c.node_id, func.sum(pairs.c.passes), func.sum(first))
             .group_by(pairs.c.version_id, pairs.c.node_id))
    for version, node_id, passes, firsts in session.execute(query):
        node = figures.nodes[(version, node_id)]
        node.tokens += int(passes or 0)
        node.instances += int(firsts or 0)


def _task_figures(session: Session, ranges: IdRanges, version_id: int | None, figures: Figures) -> None:
    """Decided tasks: a task row becomes completed (for good) in the transaction that writes its one
    task.completed event, so folding the events folds each decided task once."""
    h = _history(ranges)
    query = (select(Instance.version_id, Task.node_id, Task.action,
                    _seconds_between(session, Task.created_at, Task.completed_at))
             .select_from(h).join(Task, Task.id == h.c.task_id).join(Instance, Instance.id == Task.instance_id)
             .where(h.c.type == "task.completed", Task.status == "completed", Task.completed_at.is_not(None)))
    if version_id is not None:
        query = query.where(Instance.version_id == version_id)
    for version, node_id, action, seconds in session.execute(query):
        node = figures.nodes[(version, node_id)]
        node.decided += 1
        node.rejected += action == "reject"
        node.seconds += float(seconds)
        node.buckets[bucket_of(float(seconds))] += 1


# The flows each gateway decision took, counted by the database (decoding the JSON payloads in Python is
# what made the old page slow). The JSON functions differ by dialect.
_FLOWS = {
    "postgresql": "SELECT i.version_id, taken->>'flow_id', count(*) FROM ({history}) h "
                  "JOIN instances i ON i.id = h.instance_id "
                  "CROSS JOIN LATERAL json_array_elements(h.payload->'taken') taken {version} GROUP BY 1, 2",
    "sqlite": "SELECT i.version_id, json_extract(taken.value, '$.flow_id'), count(*) FROM ({history}) h "
              "JOIN instances i ON i.id = h.instance_id, json_each(h.payload, '$.taken') taken {version} "
              "GROUP BY 1, 2",
}


def _flow_figures(session: Session, ranges: IdRanges, version_id: int | None, figures: Figures) -> None:
    params: dict[str, int] = {}
    conditions = []
    for n, (lo, hi) in enumerate(ranges):
        params[f"lo{n}"] = lo
        if hi is None:
            conditions.append(f"id >= :lo{n}")
        else:
            params[f"hi{n}"] = hi
            conditions.append(f"id BETWEEN :lo{n} AND :hi{n}")
    where = " OR ".join(conditions)
    history = " UNION ALL ".join(f"SELECT instance_id, payload FROM {t.__tablename__} "
                                 f"WHERE type = 'gateway.decision' AND ({where})" for t in TABLES)
    version = ""
    if version_id is not None:
        version, params["version"] = "WHERE i.version_id = :version", version_id
    sql = _FLOWS[session.get_bind().dialect.name].format(history=history, version=version)
    for version_of, flow, count in session.execute(text(sql), params):
        if flow:
            figures.flows[(version_of, flow)] += count


def _present_ids(session: Session, ranges: IdRanges) -> list[int]:
    return sorted(session.scalars(union_all(*(select(t.id).where(_ids_in(t.id, ranges)) for t in TABLES))))


# -- the rollup tables ------------------------------------------------------------------------------------


def _insert(session: Session):
    return postgresql.insert if is_postgres(session) else sqlite.insert


def _upsert(session: Session, model, keys: tuple[str, ...], rows: list[dict], adds: tuple[str, ...]) -> None:
    """Add `rows` to the rollup table (a fold holds the watermark row's lock, so nothing else writes)."""
    table = model.__table__
    for start in range(0, len(rows), 500):
        stmt = _insert(session)(table).values(rows[start:start + 500])
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={c: table.c[c] + stmt.excluded[c] for c in adds})
        session.execute(stmt)


def _store(session: Session, figures: Figures) -> None:
    nodes = [{"version_id": v, "node_id": n, "instances": f.instances, "tokens": f.tokens, "decided": f.decided,
              "rejected": f.rejected, "seconds": f.seconds} for (v, n), f in figures.nodes.items()]
    buckets = [{"version_id": v, "node_id": n, "bucket": b, "tasks": c}
               for (v, n), f in figures.nodes.items() for b, c in f.buckets.items()]
    flows = [{"version_id": v, "flow_id": flow[:128], "taken": c} for (v, flow), c in figures.flows.items()]
    _upsert(session, NodeRollup, ("version_id", "node_id"), nodes,
            ("instances", "tokens", "decided", "rejected", "seconds"))
    _upsert(session, NodeDurationBucket, ("version_id", "node_id", "bucket"), buckets, ("tasks",))
    _upsert(session, FlowRollup, ("version_id", "flow_id"), flows, ("taken",))


def _stored(session: Session, version_id: int) -> Figures:
    figures = Figures()
    for row in session.scalars(select(NodeRollup).where(NodeRollup.version_id == version_id)):
        figures.nodes[(version_id, row.node_id)].add(NodeFigures(row.instances, row.tokens, row.decided,
                                                                 row.rejected, row.seconds))
    for node_id, bucket, tasks in session.execute(
            select(NodeDurationBucket.node_id, NodeDurationBucket.bucket, NodeDurationBucket.tasks)
            .where(NodeDurationBucket.version_id == version_id)):
        figures.nodes[(version_id, node_id)].buckets[bucket] += tasks
    for flow_id, taken in session.execute(select(FlowRollup.flow_id, FlowRollup.taken)
                                          .where(FlowRollup.version_id == version_id)):
        figures.flows[(version_id, flow_id)] += taken
    return figures


# -- reading ---------------------------------------------------------------------------------------------


def _watermark(session: Session) -> tuple[int, int, list[list]]:
    row = session.execute(select(StatisticsWatermark.epoch, StatisticsWatermark.folded_to, StatisticsWatermark.gaps)
                          .where(StatisticsWatermark.name == STATE)).first()
    return (row[0], row[1], list(row[2] or [])) if row else (-1, 0, [])


def _tail(folded_to: int, gaps: list[list]) -> list[tuple[int, int | None]]:
    return [(int(g[0]), int(g[1])) for g in gaps] + [(folded_to + 1, None)]


def version_figures(session: Session, version_id: int) -> Figures:
    """The history's figures of one version: the rollups plus the rows not folded yet. Read-only."""
    for _ in range(READ_ATTEMPTS):
        epoch, folded_to, gaps = _watermark(session)
        stored = _stored(session, version_id) if epoch >= 0 else Figures()
        if _watermark(session)[0] == epoch:  # no fold committed in between: rollups and watermark agree
            break
    else:  # folds kept committing under the reader: read the history whole, which is exact too
        stored, folded_to, gaps = Figures(), 0, []
    stored.add(collect(session, _tail(folded_to, gaps), version_id, whole=folded_to == 0 and not gaps))
    return stored


# -- folding ---------------------------------------------------------------------------------------------


@dataclass
class FoldReport:
    rows: int = 0  # history rows folded
    steps: int = 0  # transactions that folded something
    folded_to: int = 0
    gaps: int = 0  # id ranges still watched
    busy: bool = False  # another fold held the watermark row
    done: bool = False  # caught up with the history visible at the last step


@dataclass
class _Step:
    rows: int
    folded_to: int
    gaps: int
    done: bool


def fold(database_url: str | None = None, *, batch: int = BATCH, max_ids: int | None = None,
         wait: bool = True) -> FoldReport:
    """Fold the history not folded yet into the rollups, `batch` ids per transaction, at most `max_ids`
    ids past the watermark in all (None: until caught up). Idempotent and safe to run from several
    processes at once; with `wait` False it returns at once (`busy`) when another fold holds the row."""
    report, budget = FoldReport(), max_ids
    while budget is None or budget > 0:
        step = _run_step(database_url, batch if budget is None else min(batch, budget), wait)
        if step is None:
            report.busy = True
            break
        report.rows += step.rows
        report.steps += step.rows > 0
        report.folded_to, report.gaps, report.done = step.folded_to, step.gaps, step.done
        if step.done:
            break
        budget = None if budget is None else budget - batch
    return report


def fold_sweep(database_url: str | None) -> FoldReport:
    """The sweep's fold: a bounded share, and nothing when another worker is folding."""
    return fold(database_url, max_ids=SWEEP_IDS, wait=False)


def _run_step(database_url: str | None, limit: int, wait: bool) -> _Step | None:
    """One fold transaction; None when another fold has the watermark row (after retrying, with `wait`,
    the serialization failures a REPEATABLE READ transaction gets when that fold commits under it)."""
    for _ in range(10 if wait else 1):
        try:
            with transaction(database_url) as session:
                step = _fold_step(session, limit, wait)
        except OperationalError as exc:
            if "could not serialize" not in str(exc):
                raise
            continue
        if step is not None or not wait:
            return step
    return None


def _lock_watermark(session: Session, wait: bool) -> StatisticsWatermark | None:
    query = select(StatisticsWatermark).where(StatisticsWatermark.name == STATE)
    query = query.with_for_update(skip_locked=not wait)
    row = session.scalar(query)
    if row is None:
        insert = _insert(session)(StatisticsWatermark.__table__).values(
            name=STATE, folded_to=0, gaps=[], epoch=0, events=0).on_conflict_do_nothing()
        session.execute(insert)
        row = session.scalar(query)
    return row


def _top_id(session: Session) -> int:
    return max((session.scalar(select(func.max(t.id))) or 0) for t in TABLES)


def _fold_step(session: Session, limit: int, wait: bool) -> _Step | None:
    postgres = is_postgres(session)
    if postgres:  # one snapshot for the rows folded, the gaps seen and the watermark written
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    state = _lock_watermark(session, wait)
    if state is None:
        return None
    gaps = [list(g) for g in state.gaps or []]
    top, start = _top_id(session), state.folded_to
    end = max(start, min(start + limit, top))
    ranges = [(int(g[0]), int(g[1])) for g in gaps] + ([(start + 1, end)] if end > start else [])
    if not ranges:
        return _Step(0, start, 0, True)
    present = _present_ids(session, ranges)
    if present:
        _store(session, collect(session, ranges))
    now, xmin, xmax = clock.now(), *_snapshot(session)
    watched = _still_missing(gaps, present) + [[lo, hi, now.isoformat(), xmax]
                                               for lo, hi in _missing(start + 1, end, present)]
    kept = [g for g in watched if not _settled(g, now, xmin, postgres)]
    if present or kept != gaps or end != start:
        state.folded_to, state.gaps, state.epoch = end, kept, state.epoch + 1
        state.events, state.folded_at = state.events + len(present), now
    return _Step(len(present), end, len(kept), end >= top)


def _snapshot(session: Session) -> tuple[int | None, int | None]:
    """(xmin, xmax) of the transaction's snapshot on PostgreSQL: every transaction below xmin has ended;
    every one that could still commit a row this fold did not see is below xmax."""
    if not is_postgres(session):
        return None, None
    row = session.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
                               "pg_snapshot_xmax(pg_current_snapshot())::text::bigint")).one()
    return int(row[0]), int(row[1])


def _missing(lo: int, hi: int, present: Iterable[int]) -> list[tuple[int, int]]:
    """The ranges of ids in [lo, hi] not in `present` (sorted)."""
    gaps, expected = [], lo
    for found in present:
        if found < lo or found > hi:
            continue
        if found > expected:
            gaps.append((expected, found - 1))
        expected = max(expected, found + 1)
    if expected <= hi:
        gaps.append((expected, hi))
    return gaps


def _still_missing(gaps: list[list], present: list[int]) -> list[list]:
    """The watched ranges minus the ids that have appeared, each part keeping when it was first seen."""
    return [[lo, hi, g[2], g[3]] for g in gaps for lo, hi in _missing(int(g[0]), int(g[1]), present)]


def _settled(gap: list, now: datetime, xmin: int | None, postgres: bool) -> bool:
    """Whether a missing range will stay empty: no transaction that could still fill it is running."""
    if not postgres:
        return True  # writers take the database lock in turn: nothing commits behind the fold
    seen = datetime.fromisoformat(gap[2])
    return now - seen >= GAP_GRACE and xmin is not None and gap[3] is not None and xmin > int(gap[3])

