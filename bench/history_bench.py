"""History at scale: the reads a seeded database (bench/seed_history.py) must answer without reading the
big tables whole — one instance's timeline, searches by business key / applicant / date range / status,
per-node statistics of one version, and the list endpoints per role — each with its p50/p99 and whether
its PostgreSQL plans hold a sequential scan on instances, tasks, task_candidates or history_events.

    python bench/seed_history.py --database-url postgresql+psycopg://postgres@127.0.0.1/finflow_scale
    python bench/history_bench.py --database-url postgresql+psycopg://postgres@127.0.0.1/finflow_scale

The lists are timed twice, `GET /instances?per_page=20` and `GET /tasks?mine=true` through the Flask test
client: with the list queries of `--before` (default: the commit before they were rebuilt, loaded as a module,
so "before" is the old SQL on the same database) and with the working tree's; the ratio is before / after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if "FINFLOW_DATA_DIR" not in os.environ:
    os.environ["FINFLOW_DATA_DIR"] = tempfile.mkdtemp(prefix="finflow-history-bench-")
sys.path.insert(0, str(ROOT / "bench"))

from common import percentile  # noqa: E402
from sqlalchemy import event, func, select, text  # noqa: E402

from engine.config import normalize_database_url  # noqa: E402

BIG_TABLES = ("instances", "tasks", "task_candidates", "history_events")
ROLES = {"employee": "suxiaoyun", "manager": "sunpeng", "department head": "huangmin", "finance": "yangxue",
         "auditor": "fengli"}


def timed(call: Callable[[], Any], runs: int) -> list[float]:
    """Milliseconds of `runs` calls after two warm-up calls (the first pays for compiling the statement);
    fewer, but at least 20, for a read so slow that `runs` of them would take over 20 s."""
    call()
    t0 = time.perf_counter()
    call()
    warm = (time.perf_counter() - t0) * 1000
    samples = []
    for _ in range(min(runs, max(20, int(20_000 / max(warm, 0.01))))):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


class Plans:
    """Captures the statements a read runs and EXPLAINs them (ANALYZE, BUFFERS) on the same connection."""

    def __init__(self, engine):
        self.engine, self.statements = engine, []
        event.listen(engine, "before_cursor_execute", self._grab)
        self.on = False

    def _grab(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.on and not statement.startswith("EXPLAIN") and any(t in statement for t in BIG_TABLES):
            self.statements.append((statement, parameters))

    def explain(self, session, call: Callable[[], Any]) -> tuple[list[str], list[str]]:
        """The plans of the statements `call` runs, and the big tables they scan sequentially (--plans
        prints the plans themselves)."""
        self.statements, self.on = [], True
        try:
            call()
        finally:
            self.on = False
        plans, seq = [], []
        for statement, parameters in self.statements:
            rows = session.connection().exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = [row[0] for row in rows]
            plans.append("\n".join(plan))
            seq += [t for t in BIG_TABLES if any(f"Seq Scan on {t} " in line for line in plan)]
        return plans, seq


BEFORE = "bd6d6fa"  # the last commit before the lists were rebuilt on index ranges (issue 19)


def old_queries(ref: str) -> types.ModuleType:
    """engine/services/queries.py as of commit `ref`: the list queries to compare with."""
    source = subprocess.run(["git", "show", f"{ref}:engine/services/queries.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("queries_head")
    module.__file__ = f"{ref}:engine/services/queries.py"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 — our own committed file
    return module


def history_reads(session, url: str) -> dict[str, Callable[[], Any]]:
    """The reads of the issue's "history at scale", as the auditor (who sees everything) does them."""
    from engine.models import Instance, ProcessVersion, User
    from engine.services import deployments, queries, statistics

    auditor = session.get(User, ROLES["auditor"])
    longest = session.scalar(select(Instance).order_by(Instance.last_seq.desc()).limit(1))
    sample = session.scalar(select(Instance).where(Instance.status == "completed").offset(5000).limit(1))
    version_id = session.scalar(select(Instance.version_id).group_by(Instance.version_id)
                                .order_by(func.count().desc()).limit(1))
    version = session.get(ProcessVersion, version_id)
    model = deployments.model_for(session, version_id)
    moment = sample.started_at
    return {
        f"timeline ({longest.last_seq} events)": lambda: queries.history(session, auditor, longest.id),
        "search: business key": lambda: queries.search_instances(session, auditor, business_key=sample.business_key),
        "search: applicant": lambda: queries.search_instances(session, auditor, starter=sample.starter_id),
        "search: date range (1 week)": lambda: queries.search_instances(
            session, auditor, started_from=moment - timedelta(days=7), started_to=moment),
        "search: status running": lambda: queries.search_instances(session, auditor, status="running"),
        "search: status withdrawn": lambda: queries.search_instances(session, auditor, status="withdrawn"),
        "search: applicant + status": lambda: queries.search_instances(
            session, auditor, starter=sample.starter_id, status="completed"),
        f"per-node statistics ({version.process_key} v{version.version}, {unfolded_events(session):,} events "
        "unfolded)": lambda: statistics.version_statistics(session, version_id, model),
    }


def unfolded_events(session) -> int:
    """History rows the statistics rollups have not folded yet (engine.services.rollups.fold): the live tail
    the per-node statistics read beside the rollups (all of the history if the fold never ran)."""
    from engine.models import HistoryEvent, StatisticsWatermark
    from engine.services import rollups

    folded = session.scalar(select(StatisticsWatermark.folded_to).where(StatisticsWatermark.name == rollups.STATE))
    top = session.scalar(select(func.max(HistoryEvent.id))) or 0
    return max(0, top - (folded or 0))


def bench_history(url: str, runs: int, show_plans: bool) -> list[str]:
    from engine.db import get_engine, transaction

    plans = Plans(get_engine(url))
    lines = ["| read | rows | p50 ms | p99 ms | max ms | seq scan on a big table |", "|---|---:|---:|---:|---:|---|"]
    with transaction(url, readonly=True) as session:
        for name, call in history_reads(session, url).items():
            result = call()
            rows = len(result) if isinstance(result, list) else getattr(result, "total", None)
            rows = rows if rows is not None else getattr(result, "instances", "")
            samples = timed(call, runs)
            explained, seq = plans.explain(session, call)
            lines.append(f"| {name} | {rows} | {percentile(samples, 50):.1f} | {percentile(samples, 99):.1f} | "
                         f"{max(samples):.1f} | {'; '.join(sorted(set(seq))) or 'none'} |")
            if show_plans:
                print(f"\n### {name}\n" + "\n\n".join(explained), file=sys.stderr)
    return lines


def bench_lists(url: str, runs: int, before_ref: str) -> list[str]:
    """GET /instances?per_page=20 and GET /tasks?mine=true per role, old queries vs new."""
    import api.routes.instances as instance_routes
    import api.routes.tasks as task_routes
    from api import create_app
    from engine.db import transaction
    from engine.services import queries
    from engine.services.auth import issue_token

    client = create_app({"TESTING": True}).test_client()
    with transaction(url) as session:
        tokens = {role: issue_token(session, user, "history bench") for role, user in ROLES.items()}
    old = old_queries(before_ref)
    lines = ["| list | role | before p50 / p99 ms | after p50 / p99 ms | p50 ratio | p99 ratio "
             "| total before → after |",
             "|---|---|---:|---:|---:|---:|---|"]
    for path in ("/api/v1/instances?per_page=20", "/api/v1/tasks?mine=true"):
        for role, token in tokens.items():
            figures = {}
            for label, module in (("before", old), ("after", queries)):
                instance_routes.queries = task_routes.queries = module

                def get(path=path, token=token):
                    answer = client.get(path, headers={"Authorization": f"Bearer {token}"})
                    assert answer.status_code == 200, answer.json
                    return answer.json["meta"]

                meta = get()
                figures[label] = (timed(get, runs), meta)
            instance_routes.queries = task_routes.queries = queries
            (before, old_meta), (after, new_meta) = figures["before"], figures["after"]
            b50, b99, a50, a99 = (percentile(before, 50), percentile(before, 99), percentile(after, 50),
                                  percentile(after, 99))
            flag = " (estimated)" if new_meta.get("total_estimated") else ""
            lines.append(f"| `GET {path.removeprefix('/api/v1')}` | {role} ({ROLES[role]}) | {b50:.1f} / {b99:.1f} "
                         f"| {a50:.1f} / {a99:.1f} | {b50 / a50:.1f}× | {b99 / a99:.1f}× | "
                         f"{old_meta['total']} → {new_meta['total']}{flag} |")
    return lines


def sizes(url: str) -> str:
    from engine.db import get_engine

    with get_engine(url).connect() as connection:
        counts = {t: connection.scalar(text(f"SELECT count(*) FROM {t}")) for t in BIG_TABLES}
    return ", ".join(f"{n:,} {t}" for t, n in counts.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a database seeded by bench/seed_history.py")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per read (fewer for slow ones)")
    parser.add_argument("--before", default=BEFORE, help=f"the commit whose list queries are 'before' (default "
                        f"{BEFORE}, the last one before the lists were rebuilt)")
    parser.add_argument("--plans", action="store_true", help="print every EXPLAIN (ANALYZE, BUFFERS) to stderr")
    args = parser.parse_args(argv)
    url = normalize_database_url(args.database_url)
    os.environ["DATABASE_URL"] = url
    from common import header, postgres_version

    print(header("History at scale", [("PostgreSQL", postgres_version(url))]))
    print(f"database: {sizes(url)}; {args.runs} timed calls each\n")
    print("\n".join(bench_history(url, args.runs, args.plans)))
    print()
    print("\n".join(bench_lists(url, args.runs, args.before)))


if __name__ == "__main__":
    main()
