"""finflow web pages benchmark: server time of the auditor's instance page (diagram + timeline) for an
instance with 200 history events, and of the per-version statistics for a version with 10,000 instances,
with the query plans behind them.

    python bench/web_bench.py [--instances 10000] [--events 200] [--runs 20]

Real parts: PostgreSQL, the Flask app (its test client: server time, no network), a logged-in auditor's
session. The instances are 200 real ones driven through the engine (approved, rejected, waiting), then
copied row for row (instance, tasks, history) up to --instances. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PG_URL = os.environ.get("FINFLOW_WEB_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/finflow_web_bench")
os.environ.setdefault("FINFLOW_DATA_DIR", tempfile.mkdtemp(prefix="finflow-web-bench-"))

import common  # noqa: E402
from sqlalchemy import insert, select, text  # noqa: E402

import adapters  # noqa: E402  (every model, so the schema is dropped whole)
from engine.audit import chain  # noqa: E402
from engine.db import get_engine, transaction  # noqa: E402
from engine.history import Actor  # noqa: E402
from engine.models import HistoryEvent, Instance, Task, TaskCandidate  # noqa: E402
from engine.services.statistics import _GATEWAY_FLOWS  # noqa: E402
from engine.services.tasks import complete_task  # noqa: E402

PASSWORD = "bench-password-1"
AUDITOR = "fengli"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200, help="history events of the instance page measured")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    adapters.load_all()
    url, _ = common.use_services(PG_URL, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/7"))
    os.environ.pop("REDIS_URL")  # embedded: nothing here needs workers
    common.fresh_database(url, "web pages")
    print(common.header("finflow web pages benchmark", [("PostgreSQL", common.postgres_version(url))]))
    t0 = time.perf_counter()
    seeds = drive_real_instances(200)
    copy_instances(url, seeds, args.instances)
    with get_engine(url).begin() as connection:
        connection.execute(text("ANALYZE"))
    print(f"data: {args.instances} reimbursement instances ({len(seeds)} driven, the rest copied) "
          f"in {time.perf_counter() - t0:.0f} s")
    busy = grow_history(seeds[0], args.events)

    from api import create_app
    from engine.services import passwords

    with transaction() as session:
        passwords.set_password(session, AUDITOR, PASSWORD)
    client = logged_in(create_app({"TESTING": True}).test_client())
    page = timed(client, f"/audit/instances/{busy}", args.runs)
    print(f"auditor's instance page, {args.events} history events: median {page['median']:.0f} ms, "
          f"p90 {page['p90']:.0f} ms server time ({args.runs} runs; goal < 300 ms)")
    stats = timed(client, "/audit/processes/reimbursement/1", max(5, args.runs // 2))
    print(f"statistics of a version with {args.instances} instances: median {stats['median']:.0f} ms, "
          f"p90 {stats['p90']:.0f} ms server time (goal < 1 s)")
    explain(url)


def drive_real_instances(count: int) -> list[str]:
    from tests.helpers import claim, ready, start

    ids = []
    for i in range(count):
        iid = start("reimbursement", "suxiaoyun", claim("办公", 300 + i))
        task = ready(iid)[0]
        if i % 10 < 7:  # most approved by the manager, some rejected, the rest still waiting
            action = "reject" if i % 10 == 6 else "approve"
            with transaction() as session:
                complete_task(session, Actor(task.candidates[0], "web", "10.0.0.1"), task.id, action, "ok")
        ids.append(iid)
    return ids


def copy_instances(url: str, seeds: list[str], total: int) -> None:
    """Copy the seeds' instance, task, candidate and history rows under new ids until `total` instances."""
    with transaction(url, readonly=True) as session:
        instances = [row._asdict() for row in session.execute(select(Instance.__table__).where(Instance.id.in_(seeds)))]
        tasks = [row._asdict() for row in session.execute(select(Task.__table__).where(Task.instance_id.in_(seeds)))]
        task_ids = [t["id"] for t in tasks]
        candidates = [row._asdict() for row in session.execute(
            select(TaskCandidate.__table__).where(TaskCandidate.task_id.in_(task_ids)))]
        events = [row._asdict() for row in session.execute(
            select(HistoryEvent.__table__).where(HistoryEvent.instance_id.in_(seeds)))]
    copies = total - len(seeds)
    engine = get_engine(url)
    made = 0
    while made < copies:
        batch = min(len(seeds), copies - made)
        new_instance = {i["id"]: str(uuid.uuid4()) for i in instances[:batch]}
        new_task = {t["id"]: str(uuid.uuid4()) for t in tasks if t["instance_id"] in new_instance}
        copied = [{**{k: v for k, v in e.items() if k != "id"}, "instance_id": new_instance[e["instance_id"]],
                   "task_id": new_task.get(e["task_id"], e["task_id"])}
                  for e in events if e["instance_id"] in new_instance]
        heads = chain.link_instances(copied)  # a copy is a new instance: its own chain
        with engine.begin() as connection:
            connection.execute(insert(Instance.__table__), [
                {**i, "id": new_instance[i["id"]], "business_key": None, "chain_head": heads.get(new_instance[i["id"]])}
                for i in instances[:batch]])
            connection.execute(insert(Task.__table__), [
                {**t, "id": new_task[t["id"]], "instance_id": new_instance[t["instance_id"]]}
                for t in tasks if t["instance_id"] in new_instance])
            connection.execute(insert(TaskCandidate.__table__), [
                {**c, "task_id": new_task[c["task_id"]]} for c in candidates if c["task_id"] in new_task])
            connection.execute(insert(HistoryEvent.__table__), copied)
        made += batch


def grow_history(instance_id: str, events: int) -> str:
    """Reminders (催办) appended to one instance until its history has `events` rows."""
    with transaction() as session:
        instance = session.get(Instance, instance_id)
        task = session.scalars(select(Task).where(Task.instance_id == instance_id)).first()
        existing = instance.last_seq
        rows = [dict(instance_id=instance_id, seq=seq, type="task.urged", at=instance.started_at,
                     actor_id="suxiaoyun", channel="web", client_ip="10.0.0.2",
                     user_agent="Mozilla/5.0 (iPhone) wxwork/4.1", task_id=task.id,
                     node_id=task.node_id, payload={"comment": f"催办 {seq}"})
                for seq in range(existing + 1, events + 1)]
        instance.chain_head = chain.link(instance.chain_head, rows)  # appended rows continue the chain
        session.add_all(HistoryEvent(**row) for row in rows)
        instance.last_seq = max(existing, events)
    return instance_id


def logged_in(client):
    form = client.get("/login").text
    token = re.search(r'name="form_token" value="([^"]+)"', form).group(1)
    answer = client.post("/login", data={"login": AUDITOR, "password": PASSWORD, "next": "/audit",
                                         "form_token": token})
    assert answer.status_code == 303, answer.status_code
    return client


def timed(client, path: str, runs: int) -> dict[str, float]:
    client.get(path)  # warm: the model cache, the first connection
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    samples.sort()
    return {"median": statistics.median(samples), "p90": samples[int(0.9 * (len(samples) - 1))]}


def explain(url: str) -> None:
    version = ("(SELECT id FROM instances WHERE version_id = (SELECT id FROM process_versions "
               "WHERE process_key = 'reimbursement' AND version = 1))")
    queries = {
        "tasks of the version": f"SELECT node_id, status, action, created_at, completed_at, due_at FROM tasks "
                                f"WHERE instance_id IN {version}",
        "instances and passes per node": f"SELECT node_id, count(*), sum(p) FROM (SELECT node_id, instance_id, "
                                         f"count(*) FILTER (WHERE type <> 'task.assigned') p FROM history_events "
                                         f"WHERE instance_id IN {version} AND node_id IS NOT NULL "
                                         f"GROUP BY node_id, instance_id) v GROUP BY node_id",
        "flows taken at gateways": _GATEWAY_FLOWS["postgresql"].replace(
            ":version", "(SELECT id FROM process_versions WHERE process_key = 'reimbursement' AND version = 1)"),
        "one instance's timeline": "SELECT * FROM history_events WHERE instance_id = "
                                   "(SELECT id FROM instances LIMIT 1) ORDER BY seq",
    }
    with get_engine(url).connect() as connection:
        for name, sql in queries.items():
            plan = connection.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {sql}")).scalars()
            print(f"\nplan — {name}:")
            for line in plan:
                print("  " + line)


if __name__ == "__main__":
    main()
