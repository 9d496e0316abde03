"""Seed a PostgreSQL database with history at scale: instances, tasks, candidates, 抄送 and hash-chained
history events, bulk-copied, so list and history queries can be measured (bench/history_bench.py) and
their plans checked (tests/test_list_scale.py) at sizes the test suite never reaches.

    python bench/seed_history.py --database-url postgresql+psycopg://127.0.0.1/finflow_scale \\
        --instances 100000 --events 2000000

Nothing is invented by hand. The three shipped processes are first run through the real engine, every
branch of the demo's scenarios plus a withdrawn, a cancelled and a copied (抄送) request, in a throwaway
SQLite database; each finished instance is a template. Seeded instances are copies of templates with a new
id, business key and applicant from the demo org, spread over `--days` days, with the approvers the
applicant's own manager and department head would be, and realistic hours between the steps; one whose
next step would lie in the future is still running, with that step's task open. The history rows are the
template's events, rewritten the same way and chained with the project's own algorithm
(engine.audit.chain), so `finflow audit verify` passes on a seeded database; seeded people act on the
`seed` channel, which marks their rows as seeded. A seeded instance keeps its template's workflow state:
it can be read, listed and searched, not driven further.

The target's finflow tables are dropped and rebuilt from the migrations first (the CLI refuses the
`test` and `postgres` databases); `seed()` alone adds rows to a database that has the schema, the demo org
and the processes already (the test suite's). Rows go in with COPY, a batch of instances per transaction.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if "FINFLOW_DATA_DIR" not in os.environ:  # engine.config reads it at import; the test suite sets its own
    os.environ["FINFLOW_DATA_DIR"] = tempfile.mkdtemp(prefix="finflow-seed-")

import click  # noqa: E402
from sqlalchemy import JSON, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from engine import clock, migrate  # noqa: E402
from engine.audit.chain import canonical_at, canonical_json, event_hash  # noqa: E402
from engine.config import normalize_database_url  # noqa: E402
from engine.db import get_engine, json_dumps, transaction  # noqa: E402
from engine.demo.driver import drive  # noqa: E402
from engine.demo.scenarios import SCENARIOS, claim  # noqa: E402
from engine.history import Actor  # noqa: E402
from engine.models import (  # noqa: E402
    Department,
    HistoryEvent,
    Instance,
    InstanceCc,
    ProcessDefinition,
    ProcessVersion,
    Task,
    TaskCandidate,
    User,
)
from engine.org.directory import load_demo_org  # noqa: E402
from engine.services.deployments import deploy_directory  # noqa: E402
from engine.services.instances import cancel_instance, copy_instance, start_instance, withdraw_instance  # noqa: E402
from engine.services.queries import current_tasks  # noqa: E402
from engine.services.tasks import complete_task  # noqa: E402

SEED_CHANNEL = "seed"  # the channel of every seeded person's event: what marks a row as seeded
PROCESS_WEIGHTS = {"reimbursement": 0.56, "payment": 0.28, "contract": 0.12, "withdrawn": 0.025,
                   "cancelled": 0.005, "cc": 0.01}
MEAN_GAP_HOURS = 8.0  # between two steps of one instance
STALL_CHANCE = 0.004  # a step that waits weeks (an approver away): old instances still running
BATCH = 1000  # instances per COPY transaction
HISTORY_COLUMNS = ("instance_id", "seq", "type", "at", "actor_id", "channel", "client_ip", "user_agent",
                   "task_id", "node_id", "payload", "hash")


# -- templates: the real engine's rows ---------------------------------------------------------------


@dataclass
class Template:
    """One finished instance as the engine wrote it, with each row tied to the command (group) that wrote it."""

    kind: str  # process key, or withdrawn / cancelled / cc
    shape: str  # "employee": the applicant has a manager and a department head; "head": heads their department
    instance: dict[str, Any]
    tasks: list[dict[str, Any]]  # Task columns, plus "_created" / "_closed" group indexes and "_status" when open
    candidates: dict[str, list[str]]  # task id -> user ids
    events: list[dict[str, Any]]  # history rows (chain.FIELDS), plus "_group"
    cc: list[dict[str, Any]]  # InstanceCc columns, plus "_group"
    groups: int  # commands that wrote the history
    weight: float = 0.0

    @property
    def length(self) -> int:
        return len(self.events)


def make_templates() -> list[Template]:
    """Run every demo scenario, a withdrawal, a cancellation and a 抄送 through the engine in a throwaway
    SQLite database and read the rows back as templates."""
    workdir = Path(tempfile.mkdtemp(prefix="finflow-templates-"))
    url = f"sqlite:///{workdir / 'templates.db'}"
    try:
        migrate.upgrade(url)
        with transaction(url) as session:
            load_demo_org(session)
            deploy_directory(session, ROOT / "processes", Actor(None, "cli"))
        kinds = {drive(scenario, url).instance_id: scenario.process_key for scenario in SCENARIOS}
        kinds[_terminated(url, "withdrawn")] = "withdrawn"
        kinds[_terminated(url, "cancelled")] = "cancelled"
        kinds[_copied(url)] = "cc"
        with transaction(url, readonly=True) as session:
            templates = [_template(session, instance_id, kind) for instance_id, kind in kinds.items()]
    finally:
        get_engine(url).dispose()
        shutil.rmtree(workdir, ignore_errors=True)
    for kind, weight in PROCESS_WEIGHTS.items():
        alike = [t for t in templates if t.kind == kind]
        for t in alike:
            t.weight = weight / len(alike)
    return templates


def _terminated(url: str, how: str) -> str:
    with transaction(url) as session:
        instance_id = start_instance(session, Actor("suxiaoyun", "demo"), "reimbursement",
                                     claim("交通", 300, "机场打车")).id
    with transaction(url) as session:
        if how == "withdrawn":
            withdraw_instance(session, Actor("suxiaoyun", "demo"), instance_id, "填错了")
        else:
            cancel_instance(session, Actor("zhangwei", "demo"), instance_id, "重复提交")
    return instance_id


def _copied(url: str) -> str:
    """A claim the applicant copies to a colleague, then approved to the end."""
    with transaction(url) as session:
        instance_id = start_instance(session, Actor("suxiaoyun", "demo"), "reimbursement",
                                     claim("差旅", 2600, "杭州—北京客户拜访")).id
    with transaction(url) as session:
        copy_instance(session, Actor("suxiaoyun", "demo"), instance_id, ["jiangtao"], "请知悉")
    for _ in range(20):
        with transaction(url) as session:
            ready = [t for t in current_tasks(session, instance_id) if t.status == "ready"]
            if not ready:
                break
            complete_task(session, Actor(ready[0].candidates[0], "demo"), ready[0].id, "approve", "同意", {})
    return instance_id


def _columns(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def _template(session, instance_id: str, kind: str) -> Template:
    instance = session.get(Instance, instance_id)
    events = [_columns(e) for e in session.scalars(select(HistoryEvent).where(HistoryEvent.instance_id == instance_id)
                                                   .order_by(HistoryEvent.seq))]
    moments: list[datetime] = []
    for event in events:  # one command, one timestamp: HistoryRecorder.take_rows stamps its rows alike
        if not moments or event["at"] != moments[-1]:
            moments.append(event["at"])
        event["_group"] = len(moments) - 1

    def group_of(moment: datetime | None) -> int | None:
        """The command that wrote a row stamped `moment` (rows are stamped a little before its events)."""
        if moment is None:
            return None
        return next((i for i, at in enumerate(moments) if at >= moment), len(moments) - 1)

    tasks = [_columns(t) for t in session.scalars(select(Task).where(Task.instance_id == instance_id)
                                                  .order_by(Task.created_at, Task.position))]
    created_status = {e["task_id"]: e["payload"].get("status", "ready") for e in events if e["type"] == "task.created"}
    for task in tasks:
        task["_created"] = group_of(task["created_at"])
        task["_closed"] = group_of(task["completed_at"]) if task["status"] in ("completed", "cancelled") else None
        task["_status"] = created_status.get(task["id"], "ready")
        if task["_closed"] is None and task["status"] == "cancelled":  # cancelled with the instance
            task["_closed"] = len(moments) - 1
    ids = [t["id"] for t in tasks]
    candidates: dict[str, list[str]] = {task_id: [] for task_id in ids}
    for task_id, user_id in session.execute(select(TaskCandidate.task_id, TaskCandidate.user_id)
                                            .where(TaskCandidate.task_id.in_(ids or [""]))):
        candidates[task_id].append(user_id)
    for task in tasks:  # the candidate rows in the task's own order
        candidates[task["id"]].sort(key=lambda u, order=task["candidates"]: order.index(u) if u in order else 99)
    cc = [_columns(c) | {"_group": group_of(c.created_at)}
          for c in session.scalars(select(InstanceCc).where(InstanceCc.instance_id == instance_id))]
    starter = session.get(User, instance.starter_id)
    heads = session.get(Department, starter.department_id).head_id == starter.id
    return Template(kind, "head" if heads else "employee", _columns(instance), tasks, candidates, events, cc,
                    len(moments))


# -- the org: who may start which template, and who approves for them -------------------------------


@dataclass
class Org:
    manager: dict[str, str | None]
    head: dict[str, str | None]  # user -> head of their department
    department: dict[str, str]
    starters: dict[str, list[str]]  # template shape -> users who fit it

    @classmethod
    def load(cls, session) -> Org:
        users = session.execute(select(User.id, User.department_id, User.manager_id, User.active)
                                .order_by(User.id)).all()
        heads = {d: h for d, h in session.execute(select(Department.id, Department.head_id))}
        active = {u.id for u in users if u.active}
        manager = {u.id: u.manager_id if u.manager_id in active else None for u in users}
        head = {u.id: heads.get(u.department_id) if heads.get(u.department_id) in active else None for u in users}
        department = {u.id: u.department_id for u in users}
        starters = {"employee": [u for u in sorted(active) if manager[u] and head[u] and head[u] != u],
                    "head": [u for u in sorted(active) if manager[u] and head[u] == u]}
        return cls(manager, head, department, starters)


def _assigned(org: Org, assignment: str, starter: str, template: list[str]) -> list[str]:
    """Who a task asks when `starter` applies: the applicant's own manager or head for the expressions
    that follow the applicant (the head's manager when the applicant heads the department, as the engine
    escalates), the template's people for roles and groups, the applicant left out as the engine does."""
    if assignment == "starter":
        return [starter]
    if assignment == "manager(starter)":
        return [org.manager[starter] or template[0]]
    if assignment == "dept_head(starter)":
        head = org.head[starter]
        return [head if head and head != starter else org.manager[starter] or template[0]]
    others = [u for u in template if u != starter]
    return others or template


# -- copies of templates ----------------------------------------------------------------------------


@dataclass
class Variant:
    """A template as one applicant (and one 抄送 recipient) would have it: the people are rewritten once and
    the rewritten payloads serialized and canonicalized once, then reused for every copy."""

    tasks: list[dict[str, Any]]
    candidates: list[list[str]]  # per task, in the template's task order
    events: list[tuple[dict[str, Any], str | None, str, str]]  # (template event, actor, payload JSON, canonical)
    cc: list[tuple[dict[str, Any], str, str | None]]  # (template row, user, added by)
    started_payload: dict[str, Any]


def _variant(org: Org, template: Template, starter: str, cc_user: str | None) -> Variant:
    people = {template.instance["starter_id"]: starter}
    for row in template.cc:
        people[row["user_id"]] = cc_user or row["user_id"]
    by_task: dict[str, dict[str, str]] = {}
    tasks, candidates = [], []
    for task in template.tasks:
        old = template.candidates[task["id"]]
        new = _assigned(org, task["assignment"], starter, old)
        names = {o: new[min(i, len(new) - 1)] for i, o in enumerate(old)}
        assignee = task["assignee_id"]
        if assignee is not None:
            names[assignee] = names.get(assignee, new[0])
        by_task[task["id"]] = {**people, **names}
        tasks.append({**task, "candidates": new, "assignee_id": names.get(assignee) if assignee else None})
        candidates.append(new)
    events = []
    for event in template.events:
        names = by_task.get(event["task_id"], people)
        payload = _rename(event["payload"], names)
        actor = names.get(event["actor_id"], event["actor_id"])
        stored = json_dumps(payload)
        events.append((event, actor, stored, canonical_json(json.loads(stored))))
    cc = [(row, people[row["user_id"]], people.get(row["added_by"], row["added_by"])) for row in template.cc]
    started = next(e for e in template.events if e["type"] == "instance.started")
    return Variant(tasks, candidates, events, cc, _rename(started["payload"], people))


def _rename(value: Any, names: dict[str, str]) -> Any:
    """`value` with every string (and key) that is a renamed user id replaced."""
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {names.get(k, k): _rename(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, names) for v in value]
    return value


@dataclass
class Rows:
    """One batch of rows, in COPY column order, table by table (parents first)."""

    instances: list[tuple] = field(default_factory=list)
    tasks: list[tuple] = field(default_factory=list)
    task_candidates: list[tuple] = field(default_factory=list)
    instance_cc: list[tuple] = field(default_factory=list)
    history_events: list[tuple] = field(default_factory=list)


@dataclass
class SeedReport:
    instances: int = 0
    running: int = 0
    tasks: int = 0
    open_tasks: int = 0
    candidates: int = 0
    cc: int = 0
    events: int = 0
    seconds: float = 0.0


class Seeder:
    """Makes copies of templates, batch by batch; `rng` decides everything, so a seed repeats a database."""

    def __init__(self, templates: list[Template], org: Org, versions: dict[str, int], rng: random.Random,
                 now: datetime, days: float):
        self.templates, self.org, self.versions, self.rng = templates, org, versions, rng
        self.now, self.days = now, days
        self.variants: dict[tuple[int, str, str | None], Variant] = {}
        self.task_columns = [c.key for c in Task.__table__.columns]
        self.task_json = {c.key for c in Task.__table__.columns if isinstance(c.type, JSON)}
        self.instance_columns = [c.key for c in Instance.__table__.columns]

    def tilt(self, wanted_average: float) -> list[float]:
        """The process mix's weights, exponentially tilted towards longer or shorter templates just enough
        that the expected events per instance are `wanted_average` (clamped to what the templates allow):
        the mix moves as little as it can."""
        lengths = [t.length for t in self.templates]
        mid = sum(lengths) / len(lengths)

        def mean(slope: float) -> float:
            weights = [t.weight * math.exp(slope * (t.length - mid) / mid) for t in self.templates]
            return sum(w * n for w, n in zip(weights, lengths, strict=True)) / sum(weights)

        low, high = -50.0, 50.0
        for _ in range(60):
            slope = (low + high) / 2
            low, high = (slope, high) if mean(slope) < wanted_average else (low, slope)
        return [t.weight * math.exp(low * (t.length - mid) / mid) for t in self.templates]

    def instance(self, template: Template, rows: Rows, report: SeedReport, check: bool) -> int:
        """Append one copy of `template` to `rows`; returns how many history events it has."""
        rng, org = self.rng, self.org
        starter = rng.choice(org.starters[template.shape])
        cc_user = rng.choice([u for u in org.starters["employee"] if u != starter]) if template.cc else None
        key = (self.templates.index(template), starter, cc_user)
        variant = self.variants.get(key) or self.variants.setdefault(key, _variant(org, template, starter, cc_user))
        started = self.now - timedelta(days=rng.random() * self.days)
        moments = [started]
        for _ in range(template.groups - 1):
            hours = rng.uniform(120, 1200) if rng.random() < STALL_CHANCE else rng.expovariate(1 / MEAN_GAP_HOURS)
            moments.append(moments[-1] + timedelta(hours=hours, seconds=rng.uniform(1, 90)))
        done = sum(1 for m in moments if m <= self.now)  # commands that have happened by now
        finished = done == template.groups
        instance_id = str(uuid.uuid4())
        base = template.instance
        business_key = f"{base['business_key'][:2]}-{started:%Y%m%d}-{instance_id[:6].upper()}"
        task_ids = {t["id"]: str(uuid.uuid4()) for t in template.tasks}

        for task, new_candidates in zip(variant.tasks, variant.candidates, strict=True):
            if task["_created"] >= done:
                continue
            closed = task["_closed"] is not None and task["_closed"] < done
            row = {**task, "id": task_ids[task["id"]], "instance_id": instance_id,
                   "created_at": moments[task["_created"]], "due_at": None}
            if closed:
                row["completed_at"] = moments[task["_closed"]]
            else:
                row.update(status=task["_status"], assignee_id=None, action=None, comment=None, completed_at=None,
                           form_data=None)
                report.open_tasks += 1
            rows.tasks.append(tuple(json_dumps(row[c]) if c in self.task_json and row[c] is not None else row[c]
                                    for c in self.task_columns))
            rows.task_candidates.extend((row["id"], user) for user in dict.fromkeys(new_candidates))
            report.tasks += 1
            report.candidates += len(set(new_candidates))
        for row, user, added_by in variant.cc:
            if row["_group"] < done:
                rows.instance_cc.append((instance_id, user, added_by, row["node_id"], moments[row["_group"]]))
                report.cc += 1

        head, seq = None, 0
        ats = [canonical_at(m) for m in moments[:done]]
        for event, actor, stored, canonical in variant.events:
            group = event["_group"]
            if group >= done:
                break
            seq += 1
            task_id = task_ids.get(event["task_id"]) if event["task_id"] else None
            channel = SEED_CHANNEL if actor is not None else event["channel"]
            if event["type"] == "instance.started":
                payload = {**variant.started_payload, "business_key": business_key,
                           "version_id": self.versions[base["process_key"]]}
                stored = json_dumps(payload)
                canonical = canonical_json(json.loads(stored))
            line = (f'["{instance_id}",{seq},{canonical_json(event["type"])},"{ats[group]}",'
                    f'{canonical_json(actor)},{canonical_json(channel)},{canonical_json(event["client_ip"])},'
                    f'{canonical_json(event["user_agent"])},{canonical_json(task_id)},'
                    f'{canonical_json(event["node_id"])},{canonical}]')
            digest = hashlib.sha256(((head or "0" * 64) + line).encode("utf-8")).hexdigest()
            at = moments[group]
            if check:  # the fast path must agree with the audit code, which verification uses
                assert digest == event_hash(head or "0" * 64, {
                    "instance_id": instance_id, "seq": seq, "type": event["type"], "at": at, "actor_id": actor,
                    "channel": channel, "client_ip": event["client_ip"], "user_agent": event["user_agent"],
                    "task_id": task_id, "node_id": event["node_id"], "payload": json.loads(stored)}), "hash"
            head = digest
            rows.history_events.append((instance_id, seq, event["type"], at, actor, channel, event["client_ip"],
                                        event["user_agent"], task_id, event["node_id"], stored, digest))
        instance = {**base, "id": instance_id, "version_id": self.versions[base["process_key"]],
                    "business_key": business_key, "starter_id": starter, "department_id": org.department[starter],
                    "status": base["status"] if finished else "running", "outcome": base["outcome"] if finished
                    else None, "data": json_dumps(base["data"]), "error": None, "lock_version": 1, "last_seq": seq,
                    "started_at": started, "updated_at": moments[done - 1],
                    "ended_at": moments[done - 1] if finished and base["ended_at"] else None, "chain_head": head,
                    "archived_at": None}
        rows.instances.append(tuple(instance[c] for c in self.instance_columns))
        report.instances += 1
        report.running += not finished
        report.events += seq
        return seq


def seed(url: str, instances: int, events: int, *, rng_seed: int = 19, days: float = 730.0,
         batch: int = BATCH, progress: Callable[[int], None] | None = None,
         templates: list[Template] | None = None) -> SeedReport:
    """Add `instances` seeded instances with about `events` history events in all to the PostgreSQL
    database at `url` (schema, demo org and processes in place), then ANALYZE. `progress(n)` is told of
    each batch of n instances written."""
    url = normalize_database_url(url)
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        raise SystemExit("seed_history needs PostgreSQL (it writes with COPY)")
    started = time.perf_counter()
    templates = templates or make_templates()
    with transaction(url, readonly=True) as session:
        org = Org.load(session)
        versions = {k: v for k, v in session.execute(select(ProcessDefinition.key, ProcessVersion.id).join(
            ProcessVersion, (ProcessVersion.process_key == ProcessDefinition.key)
            & (ProcessVersion.version == ProcessDefinition.latest_version)))}
    seeder = Seeder(templates, org, versions, random.Random(rng_seed), clock.now(), days)
    weights = seeder.tilt(events / max(instances, 1))
    report = SeedReport()
    written = 0
    while written < instances:
        rows = Rows()
        for template in seeder.rng.choices(templates, weights=weights, k=min(batch, instances - written)):
            seeder.instance(template, rows, report, check=written == 0)
        _copy(engine, rows)
        if progress is not None:
            progress(len(rows.instances))
        written += len(rows.instances)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("instances", "tasks", "task_candidates", "instance_cc", "history_events"):
            connection.execute(text(f"VACUUM ANALYZE {table}"))
    report.seconds = time.perf_counter() - started
    return report


def _copy(engine, rows: Rows) -> None:
    """One batch in one transaction: COPY table by table, parents first."""
    columns = {"instances": [c.key for c in Instance.__table__.columns],
               "tasks": [c.key for c in Task.__table__.columns],
               "task_candidates": ["task_id", "user_id"],
               "instance_cc": ["instance_id", "user_id", "added_by", "node_id", "created_at"],
               "history_events": list(HISTORY_COLUMNS)}
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cursor:
            for table, names in columns.items():
                batch: Iterable[tuple] = getattr(rows, table)
                with cursor.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row(row)
        raw.commit()
    finally:
        raw.close()


# -- the command ------------------------------------------------------------------------------------


def fresh_schema(url: str) -> str:
    """Create the database when missing and rebuild finflow's schema from the migrations, with the demo
    org and the shipped processes (bench/common.py's fresh_database); refuses the suite's databases."""
    from common import fresh_database  # bench/, the script's directory, is on sys.path

    import adapters  # noqa: F401  (their models too, so every finflow table is dropped)

    return fresh_database(url, "history")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL; its finflow tables are rebuilt")
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000, help="history events in all (about)")
    parser.add_argument("--days", type=float, default=730.0, help="instances start over this many past days")
    parser.add_argument("--seed", type=int, default=19, help="random seed: the same seed, the same database")
    parser.add_argument("--batch", type=int, default=BATCH, help="instances per COPY transaction")
    args = parser.parse_args(argv)
    url = normalize_database_url(args.database_url)
    if make_url(url).get_backend_name() != "postgresql":
        raise SystemExit("--database-url must be a PostgreSQL URL")
    t0 = time.perf_counter()
    click.echo(f"rebuilding the schema in {make_url(url).database} ...", err=True)
    fresh_schema(url)
    click.echo("running the processes through the engine for templates ...", err=True)
    templates = make_templates()
    with click.progressbar(length=args.instances, label="seeding instances", file=sys.stderr,
                           show_pos=True, show_eta=True) as bar:
        report = seed(url, args.instances, args.events, rng_seed=args.seed, days=args.days, batch=args.batch,
                      progress=bar.update, templates=templates)
    elapsed = time.perf_counter() - t0
    click.echo(f"seeded {report.instances:,} instances ({report.running:,} running), {report.tasks:,} tasks "
               f"({report.open_tasks:,} open), {report.candidates:,} task candidates, {report.cc:,} 抄送, "
               f"{report.events:,} history events from {len(templates)} templates in {elapsed:.0f} s "
               f"({report.events / max(report.seconds, 1e-9):,.0f} events/s)")


if __name__ == "__main__":
    main()
