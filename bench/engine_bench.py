"""finflow engine benchmark: bare SpiffWorkflow vs the service layer vs the HTTP API.

One benchmark instance is the reimbursement process with a small amount (1,200, category 办公):
start + manager_approval + finance_review + cashier_payment, i.e. 1 start and 3 approvals (4 commands).

    python bench/engine_bench.py [--db sqlite|postgres|both] [--instances N] [--seconds S] [--profile]

Every row (bare engine, service layer, HTTP API, ...) gets a budget of N completed instances or S seconds
of timed work, whichever is reached first (N = 0: no instance cap; S = 0: no time cap), split over
--rounds interleaved rounds so that background load affects all rows alike. Figures are printed, never
asserted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.metadata
import io
import json
import math
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import growth  # noqa: E402
from redis_guard import flush_own  # noqa: E402 (bench/, the script's directory, is on sys.path)
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine  # noqa: E402
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer  # noqa: E402
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow  # noqa: E402
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser  # noqa: E402
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG  # noqa: E402
from SpiffWorkflow.util.task import TaskState  # noqa: E402
from sqlalchemy import event, select, text  # noqa: E402

import engine.db  # noqa: E402
import engine.migrate  # noqa: E402
from engine import models  # noqa: E402
from engine.demo.driver import Scenario, drive  # noqa: E402
from engine.demo.scenarios import claim  # noqa: E402
from engine.history import Actor  # noqa: E402
from engine.org.directory import load_demo_org  # noqa: E402
from engine.runner.model import parse_bundle  # noqa: E402
from engine.runner.script_engine import FinflowScriptEngine, RestrictedEnvironment  # noqa: E402
from engine.runner.state import dump_state, load_state  # noqa: E402
from engine.services.auth import issue_token  # noqa: E402
from engine.services.deployments import deploy  # noqa: E402

PROCESSES = ROOT / "processes"
PG_URL = os.environ.get("FINFLOW_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/finflow_bench")
PROCESS_KEY = "reimbursement"
STARTER = "suxiaoyun"
START_DATA: dict[str, Any] = claim("办公", 1200, "采购办公用品")  # the bare engine's; platform rows get a fresh
# invoice per instance (an invoice backs one claim), the same shape and size
EXPECTED_PATH = ["manager_approval", "finance_review", "cashier_payment"]
# Who the service layer ends up acting as (first candidate of each task), so the bare engine's task data
# has the same shape and size as the platform's.
BARE_ACTORS = {"manager_approval": "guoxin", "finance_review": "gaoyan", "cashier_payment": "linna"}
COMMENT = "同意"  # engine.demo.driver's comment for "approve"
# The bare engine has no database: its budget check (a service task finflow runs against the budget
# ledger) answers what the operator answers for a claim charged to no budget line.
NO_BUDGET_LINE = {"approved": True, "budget_line": None, "usage_ratio": None, "warning": False, "reason": ""}
BARE_START_DATA = {**START_DATA, "budget_line": None}  # the runner declares every start-form field


class BareServicesEngine(PythonScriptEngine):
    def call_service(self, task, **kwargs):
        return json.dumps(NO_BUDGET_LINE)


BARE_SCRIPT_ENGINE = FinflowScriptEngine(RestrictedEnvironment(lambda operator, params: NO_BUDGET_LINE))


def scenario() -> Scenario:
    return Scenario("benchmark: reimbursement 1,200", PROCESS_KEY, STARTER, claim("办公", 1200, "采购办公用品"))
WARMUP_INSTANCES = 3


# -- timing ---------------------------------------------------------------------------------------


@dataclass
class Budget:
    instances: int  # 0 = no cap
    seconds: float  # 0 = no cap

    def share(self, parts: int, factor: float = 1.0) -> Budget:
        """This budget split over `parts` rounds and scaled by `factor`."""
        instances = max(1, math.ceil(self.instances * factor / parts)) if self.instances else 0
        return Budget(instances, self.seconds * factor / parts)

    def spent(self, done: int, elapsed: float) -> bool:
        return bool((self.instances and done >= self.instances) or (self.seconds and elapsed >= self.seconds))


@dataclass
class Phase:
    """One measured configuration; `run` adds one timed round to its totals."""

    label: str
    db: str
    one: Callable[[], None]  # drives one instance from start to completion
    factor: float = 1.0  # share of the budget (reference rows run for half of it)
    before: Callable[[], None] | None = None  # called before the round's warm-up
    timing: Callable[[bool], None] | None = None  # told when timing starts (True) and stops (False)
    instances: int = 0
    seconds: float = 0.0
    rates: list[float] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)  # call type -> latencies (s)

    def run(self, budget: Budget, warmup: int) -> None:
        if self.before is not None:
            self.before()
        for _ in range(warmup):
            self.one()
        gc.collect()
        if self.timing is not None:
            self.timing(True)
        done, start = 0, time.perf_counter()
        while True:
            self.one()
            done += 1
            elapsed = time.perf_counter() - start
            if budget.spent(done, elapsed):
                break
        if self.timing is not None:
            self.timing(False)
        self.instances += done
        self.seconds += elapsed
        self.rates.append(done / elapsed)

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


# -- 1. bare engine ---------------------------------------------------------------------------------


class BareEngine:
    """SpiffWorkflow alone: the same BPMN/DMN, the same task data, a serialize/restore after every step."""

    def __init__(self) -> None:
        parser = SpiffBpmnParser()
        parser.add_dmn_file(str(PROCESSES / "reimbursement_routing.dmn"))
        parser.add_bpmn_file(str(PROCESSES / "reimbursement.bpmn"))
        self.spec = parser.get_spec(PROCESS_KEY)
        self.subprocess_specs = parser.get_subprocess_specs(PROCESS_KEY)
        self.serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
        self.state_bytes = {"stock": 0, "finflow": 0}  # size of the last serialization, per format
        # engine.runner.state's spec-less format needs the engine's ProcessModel for the same files
        files = {p.name: p.read_text(encoding="utf-8") for p in sorted(PROCESSES.rglob("*"))
                 if p.is_file() and p.suffix in (".bpmn", ".dmn", ".json")}
        self.model = next(m for m in parse_bundle(files).models if m.key == PROCESS_KEY)

    def _stock_roundtrip(self, workflow: BpmnWorkflow, script_engine) -> BpmnWorkflow:
        serialized = self.serializer.serialize_json(workflow)
        self.state_bytes["stock"] = len(serialized.encode("utf-8"))
        restored = self.serializer.deserialize_json(serialized)
        restored.script_engine = script_engine  # deserialize_json attaches a fresh default engine
        return restored

    def _finflow_roundtrip(self, workflow: BpmnWorkflow, script_engine) -> BpmnWorkflow:
        serialized = dump_state(workflow)
        self.state_bytes["finflow"] = len(serialized.encode("utf-8"))
        return load_state(serialized, self.model, script_engine)

    def instance_runner(self, script_engine, persist: str) -> Callable[[], None]:
        """persist: 'stock' (BpmnWorkflowSerializer), 'finflow' (engine.runner.state) or 'none'."""
        roundtrip = {"stock": self._stock_roundtrip, "finflow": self._finflow_roundtrip,
                     "none": lambda wf, _engine: wf}[persist]
        spec, subprocess_specs = (self.model.spec, self.model.subprocess_specs) if persist == "finflow" else (
            self.spec, self.subprocess_specs)

        def one() -> None:
            workflow = BpmnWorkflow(spec, subprocess_specs, script_engine=script_engine)
            for task in workflow.get_tasks(state=TaskState.READY):
                task.data.update(BARE_START_DATA)
            workflow.do_engine_steps()
            workflow = roundtrip(workflow, script_engine)
            path = []
            while True:
                task = workflow.get_next_task(state=TaskState.READY, manual=True)
                if task is None:
                    break
                node = task.task_spec.bpmn_id
                path.append(node)
                task.data.update({})  # form_data: the approval form is empty in this scenario
                task.data.update({"decision": "approve", f"{node}_decision": "approve",
                                  f"{node}_by": BARE_ACTORS.get(node, "bench"), f"{node}_comment": COMMENT})
                task.run()
                workflow.do_engine_steps()
                workflow = roundtrip(workflow, script_engine)
            if not workflow.is_completed() or path != EXPECTED_PATH:
                raise RuntimeError(f"bare engine took an unexpected path: {path}")

        return one


# -- database set-up --------------------------------------------------------------------------------


def fresh_database(db: str, workdir: Path, name: str, pg_url: str = PG_URL) -> str:
    """A fresh schema with the demo org and the shipped processes; returns its URL.

    PostgreSQL: every finflow table and alembic_version are dropped first, then migrated from scratch.
    """
    if db == "sqlite":
        url = f"sqlite:///{workdir / (name + '.db')}"
    else:
        url = pg_url
        pg = db_engine(url)
        engine.db.Base.metadata.drop_all(pg)
        with pg.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db_engine(url)
    engine.migrate.upgrade(url)
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted(PROCESSES.rglob("*"))
             if p.is_file() and p.suffix in (".bpmn", ".dmn", ".json")}  # as `finflow deploy` collects them
    with engine.db.transaction(url) as session:
        load_demo_org(session)
    with engine.db.transaction(url) as session:
        deploy(session, files, Actor(user_id=None, channel="cli"))
    return url


_ENGINE_KEYS: set[str | None] = set()  # engine.db.get_engine cache keys this run has used


def db_engine(url: str | None):
    _ENGINE_KEYS.add(url)
    return engine.db.get_engine(url)


def reset_engines() -> None:
    """Dispose every engine the benchmark used and empty engine.db's per-URL caches."""
    for key in _ENGINE_KEYS:
        engine.db.get_engine(key).dispose()
    _ENGINE_KEYS.clear()
    engine.db._session_factory.cache_clear()
    engine.db.get_engine.cache_clear()


def use_default_url(url: str) -> None:
    """Point the default database (DATABASE_URL, what the API's transactions use) at `url`.

    engine.db caches engines per URL argument, the default (`None`) included, so switching databases
    disposes the cached engines and clears the caches; the next warm-up re-creates them.
    """
    if os.environ.get("DATABASE_URL") == url and None in _ENGINE_KEYS:
        return
    reset_engines()
    os.environ["DATABASE_URL"] = url
    db_engine(None)


# -- 2. service layer -------------------------------------------------------------------------------


def service_runner(url: str) -> Callable[[], None]:
    def one() -> None:
        result = drive(scenario(), url)
        if result.status != "completed" or result.path != EXPECTED_PATH:
            raise RuntimeError(f"service layer: unexpected result {result}")

    return one


# -- 3. HTTP API ------------------------------------------------------------------------------------


class HttpFlow:
    """POST /api/v1/instances, then POST /api/v1/tasks/<id>/complete for each task the response lists."""

    def __init__(self, url: str) -> None:
        from api import create_app

        self.url = url
        with engine.db.transaction(url) as session:
            users = list(session.scalars(select(models.User.id).where(models.User.active.is_(True))))
            self.tokens = {u: issue_token(session, u, "bench") for u in users}
        self.client = create_app().test_client()
        self.recording = False
        self.samples: dict[str, list[float]] = {"start": [], "complete": []}

    def activate(self) -> None:
        use_default_url(self.url)

    def timing(self, on: bool) -> None:
        self.recording = on

    def _post(self, kind: str, path: str, user: str, body: dict[str, Any], expect: int) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        start = time.perf_counter()
        response = self.client.post(path, json=body, headers=headers)
        if self.recording:
            self.samples[kind].append(time.perf_counter() - start)
        if response.status_code != expect:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.get_data(as_text=True)[:500]}")
        return response.get_json()

    def one(self) -> None:
        instance = self._post("start", "/api/v1/instances", STARTER,
                              {"process_key": PROCESS_KEY, "data": claim("办公", 1200, "采购办公用品")}, 201)
        path = []
        while instance["current_tasks"]:
            task = instance["current_tasks"][0]
            path.append(task["node_id"])
            body = {"action": "approve", "comment": COMMENT, "form_data": {}}
            instance = self._post("complete", f"/api/v1/tasks/{task['id']}/complete", task["candidates"][0],
                                  body, 200)["instance"]
        if instance["status"] != "completed" or path != EXPECTED_PATH:
            raise RuntimeError(f"HTTP: unexpected end {instance['status']} after {path}")


# -- 5. SQL statement and commit counting -----------------------------------------------------------

_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.IGNORECASE)


@dataclass
class SqlCount:
    instances: int = 0
    statements: int = 0
    commits: int = 0
    rollbacks: int = 0
    by_kind: Counter = field(default_factory=Counter)  # "SELECT users", "INSERT history_events", ...

    def per_instance(self, value: int) -> float:
        return value / self.instances if self.instances else 0.0


class SqlCounter:
    """Counts cursor executions (an executemany is one) and commits on the given engines."""

    def __init__(self, engines) -> None:
        self.engines = list(dict.fromkeys(engines))
        self.count = SqlCount()

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self.count.statements += 1
        verb = statement.lstrip().split(None, 1)[0].upper()
        match = _TABLE.search(statement) if verb in ("SELECT", "INSERT", "UPDATE", "DELETE") else None
        self.count.by_kind[f"{verb} {match.group(1)}" if match else verb] += 1

    def _commit(self, conn):
        self.count.commits += 1

    def _rollback(self, conn):
        self.count.rollbacks += 1

    def __enter__(self) -> SqlCounter:
        for eng in self.engines:
            event.listen(eng, "before_cursor_execute", self._before)
            event.listen(eng, "commit", self._commit)
            event.listen(eng, "rollback", self._rollback)
        return self

    def __exit__(self, *exc) -> None:
        for eng in self.engines:
            event.remove(eng, "before_cursor_execute", self._before)
            event.remove(eng, "commit", self._commit)
            event.remove(eng, "rollback", self._rollback)


def count_sql(engines, one: Callable[[], None], instances: int) -> SqlCount:
    one()  # warm: model cache, compiled-statement cache
    with SqlCounter(engines) as counter:
        for _ in range(instances):
            one()
    counter.count.instances = instances
    return counter.count




# -- the run ----------------------------------------------------------------------------------------


@dataclass
class DbRun:
    db: str
    url: str
    service: Phase
    http: Phase
    flow: HttpFlow
    service_sql: SqlCount | None = None
    http_sql: SqlCount | None = None


def ensure_postgres(url: str) -> None:
    """Check the server answers; create the database when it does not exist yet."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                       {"name": target.database})
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    except Exception as exc:  # noqa: BLE001 - say how to start it
        raise SystemExit(f"PostgreSQL at {target.render_as_string(hide_password=True)} is not usable "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0]}). Start it with:\n"
                         "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start") from exc
    finally:
        admin.dispose()


def prepare_db(db: str, workdir: Path, pg_url: str) -> DbRun:
    url = fresh_database(db, workdir, f"bench-{db}", pg_url)
    flow = HttpFlow(url)
    service = Phase("service layer (driver.drive)", db, service_runner(url), before=lambda: db_engine(url))
    http = Phase("HTTP API (Flask test client)", db, flow.one, before=flow.activate, timing=flow.timing)
    http.samples = flow.samples
    return DbRun(db, url, service, http, flow)


def profile_service(budget: Budget, workdir: Path, log, top: int = 25) -> str:
    log("[profile] service layer on SQLite under cProfile ...")
    reset_engines()
    url = fresh_database("sqlite", workdir, "profile")
    one = service_runner(url)
    for _ in range(WARMUP_INSTANCES):
        one()
    gc.collect()
    profiler = cProfile.Profile()
    done, start = 0, time.perf_counter()
    profiler.enable()
    while True:
        one()
        done += 1
        elapsed = time.perf_counter() - start
        if budget.spent(done, elapsed):
            break
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(15)
    text_ = re.sub(r"/\S*/site-packages/", "", out.getvalue()).replace(str(ROOT) + "/", "")
    return (f"cProfile, service layer on SQLite: {done} instances in {elapsed:.1f}s under the profiler "
            f"({done / elapsed:.1f} inst/s profiled)\n" + text_)


# -- printing ---------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]], align: str) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, align, strict=True)).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def code_version() -> str:
    """The commit measured, and whether engine/ or api/ had uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "engine", "api"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}{' + uncommitted changes in engine/ or api/' if dirty else ''}"


def report(bare: Phase, references: list[Phase], runs: list[DbRun], state_bytes: dict[str, int], args,
           code_at_start: str) -> str:
    out = []
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("SpiffWorkflow", "SQLAlchemy", "Flask"))
    out.append("finflow engine benchmark — reimbursement, amount 1,200 (办公): "
               "start + manager_approval + finance_review + cashier_payment")
    code_now = code_version()
    code = code_at_start if code_now == code_at_start else (
        f"{code_at_start} at start (imported and measured), {code_now} on disk at the end")
    out.append(f"code {code}; Python {platform.python_version()}, {versions}, {os.cpu_count()} CPUs, "
               f"load average {os.getloadavg()[0]:.2f}")
    out.append(f"Budget per row: --seconds {args.seconds:g} --instances {args.instances}, split over {args.rounds} "
               f"interleaved rounds (ref rows: half); warm-up {WARMUP_INSTANCES} instances in round 1, "
               f"1 later, never timed")
    out.append("")
    out.append("Throughput (one instance = 1 start + 3 approvals = 4 commands)")
    rows = []
    for t in [bare, *references, *(x for r in runs for x in (r.service, r.http))]:
        rate = t.per_second
        rows.append([t.label, t.db, str(t.instances), f"{t.seconds:.1f}", f"{rate:.1f}",
                     f"{min(t.rates):.1f}–{max(t.rates):.1f}", f"{1000 / rate:.1f}", f"{1000 / rate / 4:.2f}",
                     f"{rate / bare.per_second:.2f}"])
    out.append(table(["layer", "db", "instances", "s", "inst/s", "per round", "ms/inst", "ms/cmd", "× bare"],
                     rows, "llrrrrrrr"))
    out.append(f"  serialized state at completion: stock BpmnWorkflowSerializer {state_bytes['stock'] / 1024:.1f} KiB, "
               f"finflow spec-less state (engine.runner.state) {state_bytes['finflow'] / 1024:.1f} KiB")
    if not runs:
        return "\n".join(out)

    out.append("")
    out.append("HTTP API latency per call (ms, timed rounds only)")
    rows = []
    for r in runs:
        for kind, values in r.http.samples.items():
            ms = [v * 1000 for v in values]
            rows.append([r.db, kind, str(len(ms)), f"{percentile(ms, 50):.2f}", f"{percentile(ms, 90):.2f}",
                         f"{percentile(ms, 99):.2f}", f"{max(ms):.2f}"])
    out.append(table(["db", "call", "n", "p50", "p90", "p99", "max"], rows, "llrrrrr"))

    out.append("")
    out.append("SQL per completed instance (cursor executions, an executemany counts once; commits of the engine)")
    rows = []
    for r in runs:
        for layer, c in (("service layer", r.service_sql), ("HTTP API", r.http_sql)):
            verbs = Counter()
            for kind, n in c.by_kind.items():
                verbs[kind.split()[0]] += n
            rows.append([r.db, layer, str(c.instances), f"{c.per_instance(c.statements):g}",
                         f"{c.per_instance(c.commits):g}", f"{c.per_instance(c.rollbacks):g}",
                         ", ".join(f"{v} {c.per_instance(n):g}" for v, n in verbs.most_common())])
    out.append(table(["db", "layer", "instances", "statements", "commits", "rollbacks", "by verb"], rows, "llrrrrl"))
    for r in runs:
        for layer, c in (("service", r.service_sql), ("HTTP", r.http_sql)):
            kinds = sorted(c.by_kind.items(), key=lambda kv: (-kv[1], kv[0]))
            out.append(f"  {r.db} {layer}: " + ", ".join(f"{k} {c.per_instance(n):g}" for k, n in kinds))
    out.append("  service counts include engine.demo.driver's own read of current_tasks after each command, in "
               "that command's transaction;\n  SQLite's BEGIN IMMEDIATE counts as a statement.")

    out.append("")
    out.append("Platform ÷ bare engine (bare = SCRIPT_ENGINE + stock serializer round trip after every step)")
    rows = []
    for r in runs:
        row = [r.db]
        for phase in (r.service, r.http):
            per_round = [p / b for p, b in zip(phase.rates, bare.rates, strict=True)]
            row += [f"{phase.per_second / bare.per_second:.2f}", f"{statistics.median(per_round):.2f}",
                    f"{min(per_round):.2f}–{max(per_round):.2f}", f"{max(phase.rates) / max(bare.rates):.2f}"]
        rows.append(row)
    out.append(table(["db", "service ÷ bare", "median of rounds", "rounds", "best ÷ best",
                      "HTTP ÷ bare", "median of rounds", "rounds", "best ÷ best"], rows, "lrrrrrrrr"))
    out.append("  ÷ bare: from the totals; median of rounds / rounds: the ratio per round (rows measured seconds "
               "apart);\n  best ÷ best: fastest round of the row ÷ fastest bare round (least affected by slow "
               "spells of the machine)")
    sqlite = next((r for r in runs if r.db == "sqlite"), None)
    if sqlite is not None:
        ratio = sqlite.service.per_second / bare.per_second
        per_round = [p / b for p, b in zip(sqlite.service.rates, bare.rates, strict=True)]
        verdict = "MET" if ratio >= 0.5 else "NOT MET"
        if min(per_round) < 0.5 <= max(per_round):
            verdict += (f" — borderline: round ratios span {min(per_round):.2f}–{max(per_round):.2f}; "
                        "rerun with a larger --seconds on a quiet machine")
        out.append(f"Target service ≥ 0.5 × bare on SQLite: {ratio:.2f} × bare → {verdict}")
    else:
        out.append("Target service ≥ 0.5 × bare on SQLite: not evaluated (run with --db sqlite or both)")
    return "\n".join(out)


def growth_report(runs: list[DbRun], signers: list[int], log) -> str:
    """Step cost as an instance grows (bench/growth.py): reject loops, then countersigns beside the bare engine."""
    out = ["Growth: reject loop (reimbursement rejected at the manager and resubmitted; mean of the loop's 2 commands)"]
    loops = {}
    for r in runs:
        log(f"[growth] {r.db}: 10 reject loops ...")
        use_default_url(r.url)
        loops[r.db] = growth.reject_loop(10)
    rows = []
    for i in range(10):
        row = [str(i + 1)]
        for r in runs:
            first, figures = loops[r.db]
            f = figures[i]
            row += [f"{f.state_bytes / 1024:.1f} KB", f"{f.state_bytes / figures[0].state_bytes:.2f}",
                    f"{f.step_ms:.1f}", f"{f.step_ms / figures[0].step_ms:.2f}"]
        rows.append(row)
    headers = ["loop"] + [h for r in runs for h in (f"{r.db} state", "÷ loop 1", "step ms", "÷ loop 1")]
    out.append(table(headers, rows, "r" * len(headers)))
    out.append("State after start: " + ", ".join(f"{r.db} {loops[r.db][0] / 1024:.1f} KB" for r in runs))
    out.append("")
    out.append("Growth: 会签 countersign (one signer's completion; state once all have signed)")
    rows, medians = [], {}
    for count in signers:
        log(f"[growth] countersign with {count} signers: bare engine, " + ", ".join(r.db for r in runs) + " ...")
        figures = [("bare engine (stock round trip)", growth.bare_countersign(count))]
        for r in runs:
            use_default_url(r.url)
            figures.append((f"service layer {r.db}", growth.countersign(count)))
        for label, f in figures:
            medians.setdefault(label, []).append(f.median_ms)
            rows.append([label, str(count), f"{f.median_ms:.2f}", f"{f.max_ms:.2f}", f"{f.max_ms / f.median_ms:.1f}",
                         f"{f.state_bytes / 1024:.1f} KB"])
    out.append(table(["row", "signers", "median ms", "max ms", "max ÷ median", "state"], rows, "lrrrrr"))
    if len(signers) > 1:
        out.append(f"Per-signer median, {signers[-1]} ÷ {signers[0]} signers: " + ", ".join(
            f"{label} {m[-1] / m[0]:.1f} ×" for label, m in medians.items()))
    return "\n".join(out)


def use_redis(url: str, flush_only: bool = False) -> str:
    """Point the outbox at a real Redis (commands only enqueue, as API processes do in production), or
    at embedded mode, where the notification jobs run inside each command's caller."""
    from redis import Redis

    current = os.environ.get("REDIS_URL")
    if flush_only:
        if current:
            flush_own(Redis.from_url(current), current)
        return ""
    if url != "embedded":
        try:
            flush_own(Redis.from_url(url, socket_connect_timeout=2), url)
            os.environ["REDIS_URL"] = url
            return f"written in each command's transaction and enqueued on Redis {url} after commit (no worker runs)"
        except Exception as exc:  # noqa: BLE001 - fall back to embedded mode, and say so
            print(f"Redis {url} unreachable ({exc}); measuring embedded mode", file=sys.stderr)
    os.environ.pop("REDIS_URL", None)
    return "embedded mode: delivered in-process after each command (no REDIS_URL)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--instances", type=int, default=0,
                        help="per row: stop after N completed instances (0 = no cap; default 0)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="per row: stop after S seconds of timed work (0 = no cap; default 8)")
    parser.add_argument("--pg-url", default=PG_URL,
                        help="PostgreSQL URL; its finflow tables are DROPPED and re-created (default: "
                             "$FINFLOW_BENCH_PG_URL or %(default)s). Created if the database does not exist")
    parser.add_argument("--rounds", type=int, default=8,
                        help="interleave the rows in this many rounds, so background load hits all alike (default 8)")
    parser.add_argument("--count-instances", type=int, default=20,
                        help="instances driven with SQL counting on, not timed (default 20)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the service layer on SQLite (cProfile, top 25 cumulative)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--gc", choices=["tuned", "default"], default="tuned",
                        help="tuned: engine.heap.settle() after set-up, as servers and workers do; default: Python's")
    parser.add_argument("--signers", type=lambda v: [int(n) for n in v.split(",")], default=[5, 50, 200],
                        help="countersign sizes for the growth figures (default 5,50,200)")
    parser.add_argument("--side-effects", choices=["redis", "embedded", "none"], default="redis",
                        help="redis: commands write outbox rows and enqueue them on --redis-url (production path); "
                             "embedded: delivered in-process; none: no subscribers, the engine path alone")
    parser.add_argument("--redis-url", default=os.environ.get("FINFLOW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/3"),
                        help="Redis the commands hand side effects to, as in production (flushed before and "
                             "after, and refused if it holds keys no bench wrote; no worker runs, so nothing "
                             "is delivered). 'embedded' delivers in-process")
    args = parser.parse_args(argv)
    if args.instances < 0 or args.seconds < 0 or (args.instances == 0 and args.seconds == 0):
        parser.error("give a positive --instances or --seconds")
    if args.rounds < 1 or args.count_instances < 1:
        parser.error("--rounds and --count-instances must be at least 1")
    if args.instances:
        args.rounds = min(args.rounds, args.instances)
    budget = Budget(args.instances, args.seconds)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    code_at_start = code_version()
    saved_url = os.environ.get("DATABASE_URL")
    saved_redis = os.environ.get("REDIS_URL")
    side_effects = use_redis("embedded" if args.side_effects == "embedded" else args.redis_url)
    if args.side_effects == "none":
        side_effects = "none: no subscribers (engine path: state, tasks, history)"
    workdir = Path(tempfile.mkdtemp(prefix="finflow-bench-"))
    try:
        if "postgres" in dbs:
            ensure_postgres(args.pg_url)
        import adapters

        adapters.load_all()  # the composition root's part, as the API and the CLI do: OA mappings need it
        log("[setup] parsing BPMN/DMN once for the bare engine ...")
        bare_engine = BareEngine()
        bare = Phase("bare engine, SCRIPT_ENGINE, stock serializer", "-",
                     bare_engine.instance_runner(BARE_SCRIPT_ENGINE, "stock"))
        references = [
            Phase("  ref: bare, default PythonScriptEngine, stock serializer", "-",
                  bare_engine.instance_runner(BareServicesEngine(), "stock"), factor=0.5),
            Phase("  ref: bare, SCRIPT_ENGINE, finflow spec-less state", "-",
                  bare_engine.instance_runner(BARE_SCRIPT_ENGINE, "finflow"), factor=0.5),
            Phase("  ref: bare, SCRIPT_ENGINE, no serialization", "-",
                  bare_engine.instance_runner(BARE_SCRIPT_ENGINE, "none"), factor=0.5),
        ]
        runs = []
        for db in dbs:
            log(f"[setup] {db}: fresh database, demo org, processes, API tokens ...")
            runs.append(prepare_db(db, workdir, args.pg_url))
        if args.side_effects == "none":
            from engine import events

            for name in [s.name for s in events.subscriptions_for("task.assigned")]:
                events.unsubscribe(name)
        if args.gc == "tuned":
            from engine import heap

            heap.settle()  # as API processes and workers do once started (engine/heap.py)
        # bare next to the platform rows it is compared with; the reference rows last
        phases = [bare, *(p for r in runs for p in (r.service, r.http)), *references]
        for round_ in range(args.rounds):
            for phase in phases:
                phase.run(budget.share(args.rounds, phase.factor), WARMUP_INSTANCES if round_ == 0 else 1)
            log(f"[round {round_ + 1}/{args.rounds}] " + ", ".join(
                f"{p.label.strip().split(',')[0]}{'@' + p.db if p.db != '-' else ''} {p.rates[-1]:.1f}/s"
                for p in (bare, *(x for r in runs for x in (r.service, r.http)))))
        for r in runs:
            log(f"[count] {r.db}: SQL statements and commits over {args.count_instances} instances per layer ...")
            r.service.before()
            r.service_sql = count_sql([db_engine(r.url)], r.service.one, args.count_instances)
            r.flow.activate()
            r.http_sql = count_sql([db_engine(r.url), db_engine(None)], r.flow.one, args.count_instances)
        print(report(bare, references, runs, dict(bare_engine.state_bytes), args, code_at_start), flush=True)
        print(f"Side effects (outbox rows for in-app notifications): {side_effects}", flush=True)
        print()
        print(growth_report(runs, args.signers, log), flush=True)
        print(f"Garbage collector: {args.gc} (gc thresholds {gc.get_threshold()}, frozen {gc.get_freeze_count()})")
        if args.profile:
            print()
            print(profile_service(budget, workdir, log))
    finally:
        reset_engines()
        use_redis("embedded", flush_only=True)
        if saved_redis is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = saved_redis
        if saved_url is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved_url
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
