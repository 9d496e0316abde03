"""finflow OA benchmark: twin requests created and nodes advanced per second in the simulated 泛微 E9 by 1 and 2
`finflow worker` processes, a decision's callback → task completed, and a reconciliation of 10,000 open instances.

    python bench/oa_bench.py [--instances 300] [--callbacks 200] [--reconcile 10000] [--reconcile-real 1000]
    python bench/oa_bench.py --quick

Real parts: PostgreSQL, Redis, `finflow serve` (waitress) receiving the node Action callbacks, `finflow worker`
processes running the OA sync, and the E9 simulator (adapters/oa/simulator) in this process, reached over HTTP.
Figures are printed, never asserted. See bench/README.md ("OA adapter benchmark").
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PG_URL = os.environ.get("FINFLOW_OA_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/finflow_oa_bench")
REDIS_URL = os.environ.get("FINFLOW_OA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
WORKDIR = Path(tempfile.mkdtemp(prefix="finflow-oa-bench-"))
os.environ["FINFLOW_DATA_DIR"] = str(WORKDIR)

sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import httpx  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import adapters  # noqa: E402  (every model, so the schema is dropped whole)
from adapters.oa import reconcile  # noqa: E402
from adapters.oa.config import OAConfig  # noqa: E402
from adapters.oa.models import OADecision, OARequest, OASubmission  # noqa: E402
from adapters.oa.simulator import OASimulator  # noqa: E402
from adapters.oa.simulator.cli import DEMO_SECRET, demo_env  # noqa: E402
from adapters.oa.system import NewRequest, system  # noqa: E402
from adapters.oa.users import oa_user_of, sync_links  # noqa: E402
from engine.audit import chain  # noqa: E402
from engine.db import get_engine, transaction  # noqa: E402
from engine.finance.invoices import today as invoice_today  # noqa: E402
from engine.history import Actor  # noqa: E402
from engine.models import HistoryEvent, Instance, Task, TaskCandidate  # noqa: E402
from engine.outbox import dispatch  # noqa: E402
from engine.outbox.models import OutboxMessage  # noqa: E402
from engine.services.instances import start_instance  # noqa: E402
from engine.services.tasks import complete_task  # noqa: E402

STARTER = "suxiaoyun"
CREATED, APPROVED = "1011", "1014"  # 直属上级审批 after the create; 会计审核 after the manager's approval (800 办公)
WARMUP = 5  # callbacks sent first, untimed
WARMUP_INSTANCES = 3  # per worker, started and approved untimed before each part-1 run
WAIT_SECONDS = 600
QUICK = {"instances": 40, "callbacks": 30, "reconcile": 500, "reconcile_real": 100}
DEFAULTS = {"instances": 300, "callbacks": 200, "reconcile": 10_000, "reconcile_real": 1000}
_SERIAL = itertools.count(1)
_RUN = f"{datetime.now():%y%m%d%H%M%S}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def claim(amount: int = 800) -> dict:
    """A reimbursement of 800 (办公): the manager, then 会计审核; one 全电发票 no other claim uses."""
    number = f"{_RUN}{next(_SERIAL):08d}"
    return {"category": "办公", "amount": amount, "reason": "采购办公用品",
            "invoices": [{"number": number, "amount": amount,
                          "date": (invoice_today() - timedelta(days=1)).isoformat()}]}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, help="reimbursements started and approved per worker count "
                                                      f"(default {DEFAULTS['instances']})")
    parser.add_argument("--callbacks", type=int, help="OA decisions whose callback is timed "
                                                      f"(default {DEFAULTS['callbacks']})")
    parser.add_argument("--reconcile", type=int, help="open instances reconciled "
                                                      f"(default {DEFAULTS['reconcile']:,})")
    parser.add_argument("--reconcile-real", type=int, help="of those, started through the engine in part 3; the "
                                                           f"rest are copied (default {DEFAULTS['reconcile_real']})")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--quick", action="store_true", help="a small run: " + ", ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, QUICK[name] if args.quick else default)
    children: list[subprocess.Popen] = []
    sim = None
    try:
        sim = run(args, children)
    finally:  # a failed run must not leave workers behind to steal the next run's jobs
        common.stop_processes(children)
        if sim is not None:
            sim.stop()
        log(f"logs: {WORKDIR}")


def run(args: argparse.Namespace, children: list[subprocess.Popen]) -> OASimulator:
    counts_to_run = [int(n) for n in args.workers.split(",") if n.strip()]
    url, redis_version = common.use_services(args.pg_url, args.redis_url, flush=True)
    log("setting up the bench database")
    common.fresh_database(url, "OA")
    adapters.load_all()
    port = common.free_port()
    finflow = f"http://127.0.0.1:{port}"
    sim = OASimulator(callback_url=f"{finflow}/oa/callback", callback_secret=DEMO_SECRET)
    sim.start()
    oa_env = {**demo_env(sim, WORKDIR / "oa-client-key.pem", finflow), "FINFLOW_OA_POLL_SECONDS": "0",
              "FINFLOW_OA_RECONCILE_HOUR": "off", "FINFLOW_QUIET_HOURS": "off"}
    os.environ.update(oa_env)
    config = OAConfig.from_env()
    sync_links(config, url)
    env = common.worker_env(url, args.redis_url, **oa_env)
    with open(WORKDIR / "serve.log", "ab") as serve_log:
        server = subprocess.Popen([str(common.FINFLOW), "serve", "--port", str(port), "--threads", "8"], cwd=ROOT,
                                  env=env, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True)
    children.append(server)
    wait(lambda: _answers(f"{finflow}/api/v1/health"), 60, "finflow serve to answer")
    print(common.header("finflow OA benchmark", [("PostgreSQL", common.postgres_version(url)),
                                                 ("Redis", redis_version)]))
    print(f"reimbursements of 800 (办公) by {STARTER}: OA workflow 101, create → {CREATED} 直属上级审批 → "
          f"{APPROVED} 会计审核; OA = the E9 simulator in this process; callbacks to `finflow serve` (waitress)\n")
    redis = dispatch.connection(args.redis_url)
    summary: list[tuple[str, str, str, str]] = []
    steal_0 = _stolen()

    # 1. twins created and moved on by the OA sync in 1, then 2 workers
    sync_runs = []
    workers: list[subprocess.Popen] = []
    for count in counts_to_run:
        common.stop_processes(workers)
        workers = [common.start_worker(["--queues", "channels"], env, WORKDIR / f"worker-{count}-{i}.log")
                   for i in range(count)]
        children.extend(workers)
        wait(lambda c=count, w=workers: common.listening_workers(redis, {p.pid for p in w}) == c, 60,
             f"{count} worker(s) to listen")
        log(f"part 1: {args.instances} reimbursements started and approved, {count} worker(s)")
        cpu = Cpu.of("bench (driver + OA simulator)", workers, server, url)
        result = sync_run(url, sim, args.instances, count, cpu)
        sync_runs.append((count, result))
        print(f"OA sync, {count} worker(s): {args.instances} requests created in {result['create_s']:.1f} s = "
              f"{result['creates']:.1f} creates/s (the starts took {result['start_drive_s']:.1f} s; last twin "
              f"{result['create_lag_s']:.1f} s after the last start); {args.instances} manager approvals "
              f"submitted in {result['submit_s']:.1f} s = {result['submits']:.1f} submits/s (the approvals took "
              f"{result['approve_drive_s']:.1f} s; last twin {result['submit_lag_s']:.1f} s after the last); "
              f"OA calls: {result['calls']}")
        print(f"  {result['create_cpu']}\n  {result['submit_cpu']}")
        summary.append(("OA requests created (twin at 1011)", str(count), str(args.instances),
                        f"{result['creates']:.1f} creates/s"))
        summary.append(("manager approval submitted (twin at 1014)", str(count), str(args.instances),
                        f"{result['submits']:.1f} submits/s"))
    if len(sync_runs) >= 2:
        (n1, first), (n2, last) = sync_runs[0], sync_runs[-1]
        print(f"{n2} ÷ {n1} worker(s): creates ×{last['creates'] / first['creates']:.2f}, "
              f"submits ×{last['submits'] / first['submits']:.2f}")
        summary.append((f"{n2} ÷ {n1} workers", "", "", f"creates ×{last['creates'] / first['creates']:.2f}, "
                                                        f"submits ×{last['submits'] / first['submits']:.2f}"))
    workers_now = counts_to_run[-1]

    # 2. a decision taken in OA: its node Action's callback, answered once the task is completed
    log(f"part 2: {args.callbacks} callbacks (+{WARMUP} untimed), {workers_now} worker(s) running")
    cpu = Cpu.of("bench (OA simulator)", workers, server, url)
    samples, checked, callback_cpu = callback_run(url, sim, args.callbacks, cpu)
    spread = common.spread(samples)
    print(f"callback → task completed ({len(samples)} signed POSTs to /oa/callback, one at a time, status "
          f"\"applied\" checked on each, {workers_now} worker(s) running): p50 {spread['p50']:.1f} ms, "
          f"p99 {spread['p99']:.1f} ms, max {spread['max']:.1f} ms; then the workers' check saw every twin at "
          f"{APPROVED}: {checked} of {args.callbacks + WARMUP}")
    print(f"  {callback_cpu}")
    floor = common.spread(refused_posts(sim.callback_url, 50))
    print(f"  for scale: an unsigned POST to /oa/callback sent the same way (httpx.post, a new client each time) and "
          f"refused with 401 before any database work: p50 {floor['p50']:.1f} ms, p99 {floor['p99']:.1f} ms")
    summary.append(("callback → task completed", str(workers_now), str(len(samples)),
                    f"p50 {spread['p50']:.1f} / p99 {spread['p99']:.1f} / max {spread['max']:.1f} ms"))

    # 3. reconciliation of every open instance
    made = prepare_reconcile(url, sim, config, args.reconcile, args.reconcile_real)
    print(f"reconcile data: {made['open']:,} open instances = {made['earlier']} from parts 1–2 + {made['real']} "
          f"started now through the engine ({made['real_s']:.1f} s of starts, {made['start_rate']:.1f}/s; the "
          f"last twin created by the workers {made['real_sync_s']:.1f} s after the first start, so "
          f"{made['open']:,} that way would take ≈ {made['extrapolated_s'] / 60:.1f} min) + {made['copies']:,} "
          f"copied row for row from those {made['real']} ({made['copy_s']:.1f} s: their OA requests created "
          f"through E9's API in {made['copy_oa_s']:.1f} s, the database rows in {made['copy_db_s']:.1f} s)")
    log(f"part 3: reconcile() over {made['open']:,} open instances")
    sim_rate = simulator_rate(url, config, made["a_request"])
    cpu = Cpu.of("bench (reconcile + OA simulator)", workers, server, url)
    cpu_0 = cpu.sample()
    t0 = time.perf_counter()
    report = reconcile.reconcile(url)
    seconds = time.perf_counter() - t0
    reconcile_cpu = cpu_line(Cpu.used(cpu_0, cpu.sample()), report.counts["checked"], seconds, "instance")
    t0 = time.perf_counter()
    subjects = len(reconcile._subjects(url))
    read_s = time.perf_counter() - t0
    found = ", ".join(f"{kind} {report.counts[kind]}" for kind in reconcile.KINDS)
    print(f"reconcile(): {report.counts['checked']:,} instances checked in {seconds:.1f} s = "
          f"{report.counts['checked'] / seconds:.0f} instances/s ({reconcile.THREADS} threads; report.seconds "
          f"{report.seconds:.1f}); findings: {found}; reading finflow's side alone ({subjects:,} subjects): "
          f"{read_s:.1f} s; the simulator alone answers {sim_rate:.0f} status+log pairs/s to one client thread")
    print(f"  {reconcile_cpu}")
    summary.append(("reconcile() (report only)", "", f"{report.counts['checked']:,}",
                    f"{seconds:.1f} s = {report.counts['checked'] / seconds:.0f} instances/s"))

    with transaction(url, readonly=True) as session:
        decisions = dict(session.execute(select(OADecision.status, func.count()).group_by(OADecision.status)).all())
        twins = dict(session.execute(select(OARequest.state, func.count()).group_by(OARequest.state)).all())
    print("decisions from OA: " + ", ".join(f"{n} {s}" for s, n in sorted(decisions.items())) +
          " (ignored: the node Action's echo of finflow's own submits); twins: " +
          ", ".join(f"{n} {s}" for s, n in sorted(twins.items())))

    (steal, ticks), (steal_1, ticks_1) = steal_0, _stolen()
    print(f"CPU time taken by the hypervisor (steal) during the run: {(steal_1 - steal) / max(1, ticks_1 - ticks):.1%}")
    print("\nsummary")
    widths = [max(len(row[i]) for row in [("figure", "workers", "n", "result"), *summary]) for i in range(4)]
    for row in [("figure", "workers", "n", "result"), *summary]:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")
    return sim


# -- part 1 -----------------------------------------------------------------------------------------


def sync_run(url: str, sim: OASimulator, count: int, workers: int, cpu: Cpu) -> dict:
    """Start `count` reimbursements, wait for every twin to be created (at 1011), approve every manager task,
    wait for every twin to be at 1014; each phase timed from its first command to the last twin's synced_at.
    A few instances per worker go first, untimed: the workers' first jobs open connections and fill caches."""
    warm = start_many(url, WARMUP_INSTANCES * workers)
    for task_id, user in manager_tasks(url, warm):
        with transaction(url) as session:
            complete_task(session, Actor(user, "bench"), task_id, "approve", "同意", {})
    wait_twins(url, warm, APPROVED, "the warm-up twins")
    settle(url, sim)
    calls = {api: sim.calls_to(api) for api in ("doCreateRequest", "submitRequest", "getRequestStatus")}
    cpu_0 = cpu.sample()
    started = time.time()
    ids = start_many(url, count)
    start_drive = time.time() - started
    wait_twins(url, ids, CREATED, f"{count} twin requests created")
    created_at = last_synced(url, ids)
    cpu_1 = cpu.sample()
    waited = time.time()
    tasks = manager_tasks(url, ids)
    approving = time.time()
    for task_id, user in tasks:
        with transaction(url) as session:
            complete_task(session, Actor(user, "bench"), task_id, "approve", "同意", {})
    approve_drive = time.time() - approving
    wait_twins(url, ids, APPROVED, f"{count} twins at {APPROVED}")
    submitted_at = last_synced(url, ids)
    cpu_2 = cpu.sample()
    settle(url, sim)
    made = {api: sim.calls_to(api) - n for api, n in calls.items()}
    return {"create_s": created_at - started, "creates": count / (created_at - started),
            "start_drive_s": start_drive, "create_lag_s": created_at - started - start_drive,
            "submit_s": submitted_at - approving, "submits": count / (submitted_at - approving),
            "approve_drive_s": approve_drive, "submit_lag_s": submitted_at - approving - approve_drive,
            "create_cpu": cpu_line(Cpu.used(cpu_0, cpu_1), count, waited - started, "start + create"),
            "submit_cpu": cpu_line(Cpu.used(cpu_1, cpu_2), count, time.time() - waited, "approval + submit"),
            "calls": ", ".join(f"{n} {api}" for api, n in made.items())}


def start_many(url: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        with transaction(url) as session:
            ids.append(start_instance(session, Actor(STARTER, "bench"), "reimbursement", claim()).id)
    return ids


def manager_tasks(url: str, ids: list[str]) -> list[tuple[str, str]]:
    """(task id, first candidate) of each instance's ready manager_approval, in the order started."""
    with transaction(url, readonly=True) as session:
        found = {t.instance_id: (t.id, t.candidates[0]) for t in session.scalars(select(Task).where(
            Task.instance_id.in_(ids), Task.node_id == "manager_approval", Task.status == "ready"))}
    if len(found) != len(ids):
        raise SystemExit(f"{len(ids) - len(found)} instance(s) have no ready manager_approval task")
    return [found[i] for i in ids]


def wait_twins(url: str, ids: list[str], node: str, what: str) -> None:
    """Until every twin of `ids` is synced at `node`; a failed or mismatched twin stops the run."""
    def done() -> bool:
        with transaction(url, readonly=True) as session:
            states = dict(session.execute(select(OARequest.state, func.count()).where(
                OARequest.instance_id.in_(ids), OARequest.oa_node == node, OARequest.request_id.is_not(None))
                .group_by(OARequest.state)).all())
            bad = session.execute(select(OARequest.instance_id, OARequest.state, OARequest.last_error).where(
                OARequest.instance_id.in_(ids), OARequest.state.in_(("failed", "mismatch"))).limit(1)).first()
        if bad is not None:
            raise SystemExit(f"twin of instance {bad[0]} is {bad[1]}: {bad[2]}; logs in {WORKDIR}")
        return states.get("synced", 0) == len(ids)

    wait(done, WAIT_SECONDS, what)


def last_synced(url: str, ids: list[str]) -> float:
    with transaction(url, readonly=True) as session:
        return session.scalar(select(func.max(OARequest.synced_at)).where(OARequest.instance_id.in_(ids))).timestamp()


def settle(url: str, sim: OASimulator) -> None:
    """Until the node Action's echoes are answered and no side effect of the workers' queue is pending, so the
    next run starts clean."""
    wait(lambda: sim.callbacks_in_flight() == 0 and count_rows(
        url, OutboxMessage, OutboxMessage.queue == "channels", OutboxMessage.status == "pending") == 0,
        WAIT_SECONDS, "the outbox to drain")


# -- part 2 -----------------------------------------------------------------------------------------


def callback_run(url: str, sim: OASimulator, count: int, cpu: Cpu) -> tuple[list[float], int, str]:
    """Decide `count` (+ WARMUP) manager tasks in OA: the simulated OA applies the decision (act, notify=False),
    then its node Action callback, built as the simulator builds it, is sent and timed from send to answer."""
    ids = start_many(url, count + WARMUP)
    wait_twins(url, ids, CREATED, f"{len(ids)} twin requests created")
    tasks = manager_tasks(url, ids)
    with transaction(url, readonly=True) as session:
        twins = {t.instance_id: t.request_id for t in session.scalars(select(OARequest).where(
            OARequest.instance_id.in_(ids)))}
        oa_users = {user: oa_user_of(session, user) for _, user in tasks}
    samples, cpu_0, timed_from = [], cpu.sample(), time.perf_counter()
    for i, (instance_id, (_, user)) in enumerate(zip(ids, tasks, strict=True)):
        if i == WARMUP:
            cpu_0, timed_from = cpu.sample(), time.perf_counter()
        request_id, oa_user = twins[instance_id], oa_users[user]
        answer = sim.act(request_id, oa_user, "submit", "OA 中批准", notify=False)
        if answer.get("code") != "SUCCESS":
            raise SystemExit(f"the simulated OA refused the decision on request {request_id}: {answer}")
        entry, view = sim.logs(request_id)[-1], sim.request(request_id)
        payload = {"requestid": str(request_id), "workflowid": view["workflowid"], "nodeid": entry["nodeid"],
                   "nodename": entry["nodename"], "operator": oa_user, "action": "submit",
                   "remark": entry["remark"], "logid": entry["logid"], "currentnodeid": view["currentnodeid"]}
        sent = time.perf_counter()
        response = sim.send_callback(payload)
        elapsed = (time.perf_counter() - sent) * 1000
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code != 200 or body.get("status") != "applied":
            raise SystemExit(f"callback on request {request_id} answered HTTP {response.status_code}: {body}")
        if i >= WARMUP:
            samples.append(elapsed)
    used = cpu_line(Cpu.used(cpu_0, cpu.sample()), max(1, count), time.perf_counter() - timed_from,
                    "callback (the callbacks' own check by the workers partly after)")
    with transaction(url, readonly=True) as session:
        completed = session.scalar(select(func.count()).select_from(Task).where(
            Task.instance_id.in_(ids), Task.node_id == "manager_approval", Task.status == "completed"))
    if completed != len(ids):
        raise SystemExit(f"only {completed} of {len(ids)} manager tasks completed after their callbacks")
    wait_twins(url, ids, APPROVED, f"the workers' check of {len(ids)} twins at {APPROVED}")
    settle(url, sim)
    return samples, len(ids), used


def refused_posts(callback_url: str, count: int) -> list[float]:
    """Round trips of an unsigned POST to the callback endpoint (401, no database work), in ms."""
    samples = []
    for _ in range(count):
        sent = time.perf_counter()
        response = httpx.post(callback_url, content=b"{}", headers={"Content-Type": "application/json"}, timeout=10)
        samples.append((time.perf_counter() - sent) * 1000)
        if response.status_code != 401:
            raise SystemExit(f"an unsigned callback answered HTTP {response.status_code}, not 401")
    return samples


# -- part 3 -----------------------------------------------------------------------------------------


def prepare_reconcile(url: str, sim: OASimulator, config: OAConfig, total: int, real: int) -> dict:
    """`total` open instances: those of parts 1–2, `real` more started through the engine (their twins created
    by the workers), and copies of those `real` (instance, tasks, candidates, history, outbox, twin and its
    submissions) each with a request of its own created in the simulated OA through E9's API."""
    earlier = count_rows(url, Instance, Instance.status == "running")
    real = max(0, min(real, total - earlier))
    log(f"part 3: {real} more reimbursements started through the engine")
    started = time.time()
    seeds = start_many(url, real)
    real_s = time.time() - started
    if seeds:
        wait_twins(url, seeds, CREATED, f"{real} twin requests created")
        real_sync_s = last_synced(url, seeds) - started
    else:
        real_sync_s = 0.0
    settle(url, sim)
    copies = max(0, total - earlier - real) if seeds else 0
    log(f"part 3: {copies:,} copies")
    copy_oa_s, copy_db_s = copy_instances(url, sim, config, seeds, copies)
    with transaction(url, readonly=True) as session:
        a_request = session.scalar(select(OARequest.request_id).where(OARequest.request_id.is_not(None)).limit(1))
    now_open = count_rows(url, Instance, Instance.status == "running")
    return {"earlier": earlier, "real": real, "real_s": real_s, "real_sync_s": real_sync_s,
            "start_rate": real / real_s if real else float("nan"),
            "extrapolated_s": real_sync_s / real * now_open if real else float("nan"), "copies": copies,
            "copy_oa_s": copy_oa_s, "copy_db_s": copy_db_s, "copy_s": copy_oa_s + copy_db_s, "a_request": a_request,
            "open": now_open}


def copy_instances(url: str, sim: OASimulator, config: OAConfig, seeds: list[str], copies: int) -> tuple[float, float]:
    """Copy the seeds row for row under new ids until `copies` are made; returns (OA seconds, database seconds)."""
    with transaction(url, readonly=True) as session:
        def rows(table, *criteria) -> list[dict]:
            return [r._asdict() for r in session.execute(select(table).where(*criteria))]

        instances = rows(Instance.__table__, Instance.id.in_(seeds))
        tasks = rows(Task.__table__, Task.instance_id.in_(seeds))
        candidates = rows(TaskCandidate.__table__, TaskCandidate.task_id.in_([t["id"] for t in tasks]))
        events = rows(HistoryEvent.__table__, HistoryEvent.instance_id.in_(seeds))
        outbox = rows(OutboxMessage.__table__, OutboxMessage.instance_id.in_(seeds))
        twins = {t["instance_id"]: t for t in rows(OARequest.__table__, OARequest.instance_id.in_(seeds))}
        submissions = rows(OASubmission.__table__, OASubmission.instance_id.in_(seeds))
    outbox_key = {o["id"]: (o["event_seq"], o["subscription"], o["target"]) for o in outbox}
    oa_s = db_s = 0.0
    engine = get_engine(url)
    made = 0
    with ThreadPoolExecutor(8, thread_name_prefix="oa-bench-copy") as pool:
        while made < copies:
            batch = instances[:min(len(instances), copies - made)]
            new_instance = {i["id"]: str(uuid.uuid4()) for i in batch}
            new_task = {t["id"]: str(uuid.uuid4()) for t in tasks if t["instance_id"] in new_instance}
            t0 = time.perf_counter()
            request_ids = dict(zip(new_instance, pool.map(
                _oa_copy, itertools.repeat(sim), itertools.repeat(config), [twins[s] for s in new_instance],
                list(new_instance.values())), strict=True))
            t1 = time.perf_counter()
            copied = [{**{k: v for k, v in e.items() if k != "id"}, "instance_id": new_instance[e["instance_id"]],
                       "task_id": new_task.get(e["task_id"], e["task_id"])}
                      for e in events if e["instance_id"] in new_instance]
            heads = chain.link_instances(copied)  # a copy is a new instance: its own chain
            with engine.begin() as connection:
                connection.execute(insert(Instance.__table__), [
                    {**i, "id": new_instance[i["id"]], "business_key": None,
                     "chain_head": heads.get(new_instance[i["id"]])} for i in batch])
                connection.execute(insert(Task.__table__), [
                    {**t, "id": new_task[t["id"]], "instance_id": new_instance[t["instance_id"]]}
                    for t in tasks if t["instance_id"] in new_instance])
                connection.execute(insert(TaskCandidate.__table__), [
                    {**c, "task_id": new_task[c["task_id"]]} for c in candidates if c["task_id"] in new_task])
                connection.execute(insert(HistoryEvent.__table__), copied)
                table = OutboxMessage.__table__
                inserted = connection.execute(insert(table).returning(
                    table.c.id, table.c.instance_id, table.c.event_seq, table.c.subscription, table.c.target), [
                    {**{k: v for k, v in o.items() if k != "id"}, "instance_id": new_instance[o["instance_id"]]}
                    for o in outbox if o["instance_id"] in new_instance])
                new_outbox = {(r.instance_id, r.event_seq, r.subscription, r.target): r.id for r in inserted}
                connection.execute(insert(OARequest.__table__), [
                    {**twins[seed], "instance_id": new_id, "request_id": request_ids[seed]}
                    for seed, new_id in new_instance.items()])
                connection.execute(insert(OASubmission.__table__), [
                    {**{k: v for k, v in s.items() if k != "id"}, "instance_id": new_instance[s["instance_id"]],
                     "request_id": request_ids[s["instance_id"]],
                     "outbox_id": new_outbox[(new_instance[s["instance_id"]], *outbox_key[s["outbox_id"]])]}
                    for s in submissions if s["instance_id"] in new_instance])
            oa_s, db_s = oa_s + t1 - t0, db_s + time.perf_counter() - t1
            made += len(batch)
    return oa_s, db_s


def _oa_copy(sim: OASimulator, config: OAConfig, twin: dict, instance_id: str) -> str:
    """The copy's own request in OA: the seed's as the simulator shows it, created (and submitted to 1011) by
    the seed's creator through E9's API, with the copy's finflow id."""
    seed = sim.request(twin["request_id"])
    main = {**seed["main"], "finflow_id": instance_id, "djbh": ""}
    return system(config).create_request(twin["creator"], NewRequest(seed["workflowid"], seed["requestname"], main,
                                                                     seed["details"], submit=True))


def simulator_rate(url: str, config: OAConfig, request_id: str, seconds: float = 2.0) -> float:
    """getRequestStatus + getWorkflowRequestLogs pairs per second from one client: what reconcile asks per instance."""
    client = system(config)
    with transaction(url, readonly=True) as session:
        creator = session.scalar(select(OARequest.creator).where(OARequest.request_id == request_id))
    t0, pairs = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        client.status(creator, request_id)
        client.logs(creator, request_id)
        pairs += 1
    return pairs / (time.perf_counter() - t0)


# -- where the CPUs went ----------------------------------------------------------------------------


class Cpu:
    """CPU seconds (user + system, reaped children included) of each part of the set-up, read from /proc, so a
    figure can say where the machine's CPUs went. PostgreSQL counts the backends connected to the bench's
    database (not other databases' sessions, nor the server's own writers); Redis the whole server."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, roles: dict[str, list[int]], database: str):
        self.roles, self.database = roles, database

    @classmethod
    def of(cls, bench: str, workers: list[subprocess.Popen], server: subprocess.Popen, url: str) -> Cpu:
        """This process (named for what it does in the part measured), the workers and `finflow serve`."""
        return cls({bench: [os.getpid()], "workers": [p.pid for p in workers], "finflow serve": [server.pid]},
                   make_url(url).database)

    def sample(self) -> dict[str, dict[int, float]]:
        found: dict[str, list[int]] = {"PostgreSQL": [], "Redis": []}
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            comm = _comm(pid)
            if comm == "postgres" and self.database in _title(pid).split():
                found["PostgreSQL"].append(pid)
            elif comm == "redis-server":
                found["Redis"].append(pid)
        return {role: {pid: _cpu(pid) for pid in pids} for role, pids in {**self.roles, **found}.items()}

    @staticmethod
    def used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
        """Seconds per role between two samples (a process new since the first counts from its start)."""
        return {role: sum(max(0.0, t - before.get(role, {}).get(pid, 0.0)) for pid, t in pids.items())
                for role, pids in after.items()}


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _title(pid: int) -> str:
    """A PostgreSQL backend's process title: "postgres: 15/main: <user> <database> <client> <state>"."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(f) for f in fields[11:15]) / Cpu.TICK  # utime, stime, cutime, cstime


def _stolen() -> tuple[int, int]:
    """(steal, all) ticks of the machine so far (/proc/stat): a VM whose host is busy runs slower."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])  # user … steal (guest time is in user)


def cpu_line(used: dict[str, float], n: int, wall: float, what: str) -> str:
    """"CPU per <what>: role ms, …; the CPUs x % busy" for `n` items done in `wall` seconds."""
    total = sum(used.values())
    return (f"CPU per {what}: " + ", ".join(f"{role} {seconds * 1000 / n:.1f} ms" for role, seconds in used.items())
            + f" = {total * 1000 / n:.1f} ms; the {os.cpu_count()} CPUs {total / wall / os.cpu_count():.0%} busy")


# -- helpers ----------------------------------------------------------------------------------------


def wait(predicate, timeout: float, what: str) -> None:
    """Wait for `predicate`, or stop the run saying what never happened (a figure taken anyway would lie)."""
    if not common.wait_until(predicate, timeout):
        raise SystemExit(f"gave up after {timeout:.0f} s waiting for {what}; see the logs in {WORKDIR}")


def count_rows(url: str, model, *criteria) -> int:
    with transaction(url, readonly=True) as session:
        return session.scalar(select(func.count()).select_from(model).where(*criteria)) or 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
