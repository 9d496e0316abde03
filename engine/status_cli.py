"""`finflow status`: one screen on whether this deployment can work — the database (reachable, schema
revision), Redis (reachable, or embedded mode), rq's workers and queues, the outbox backlog, dead rows and
due timers.

It is what an operator runs first when approvals seem stuck, so it must answer even when things are
broken: every probe catches its own failure and says what failed in one line (exit 1 when the database
or a configured Redis cannot be reached), never a traceback. The database figures are the ones /metrics
exposes (engine/metrics.py), so both tell the same story.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from engine import clock, metrics
from engine.config import Settings
from engine.db import transaction
from engine.events import QUEUES

CONNECT_TIMEOUT = 3  # seconds: a status check must not hang on an unreachable host


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (for scripts and monitoring)")
def status(as_json: bool) -> None:
    """Database, Redis, rq workers, queue depths, outbox backlog, dead rows, due timers (exit 1 if the
    database or a configured Redis is unreachable)."""
    report = collect()
    click.echo(json.dumps(report, ensure_ascii=False, indent=2) if as_json else render(report))
    for problem in report["problems"]:
        click.echo(f"error: {problem}", err=True)
    if report["problems"]:
        sys.exit(1)


def collect() -> dict[str, Any]:
    """The whole report as plain data (what --json prints)."""
    now = clock.now()
    settings = Settings.from_env()
    database = check_database(settings.database_url)
    redis, workers, queues = check_redis(settings.redis_url, now)
    outbox, timers_due = None, None
    if database["reachable"] and database["revision"] is not None:
        try:
            outbox, timers_due = database_figures(now)
        except Exception as exc:  # a schema older than the code, a lock timeout …: say it, go on
            database["error"] = f"统计查询失败：{first_line(exc)}"
    problems = []
    if not database["reachable"]:
        problems.append(f"数据库不可达（{database['url']}）：{database['error']}")
    elif database["error"]:
        problems.append(database["error"])
    if redis["mode"] == "redis" and not redis["reachable"]:
        problems.append(f"Redis 不可达（{redis['url']}）：{redis['error']}")
    return {"checked_at": now.isoformat(), "ok": not problems, "problems": problems, "database": database,
            "redis": redis, "workers": workers, "queues": queues, "outbox": outbox, "timers_due": timers_due}


# -- probes -------------------------------------------------------------------------------------------

def check_database(url: str) -> dict[str, Any]:
    """Reachable, and at which migration revision, on a connection of its own with a short timeout."""
    info: dict[str, Any] = {"url": mask_database_url(url), "reachable": False, "revision": None,
                            "latest_revision": latest_revision(), "error": None}
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).exists():  # connecting would create an empty file
        info["error"] = f"数据库文件不存在：{parsed.database}（请先运行 finflow init）"
        return info
    connect_args = {"connect_timeout": CONNECT_TIMEOUT} if parsed.get_backend_name() == "postgresql" else {}
    engine = None
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            info["reachable"] = True
            try:
                info["revision"] = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                info["error"] = "数据库尚未初始化：请运行 finflow init"
    except Exception as exc:
        info["error"] = first_line(exc)
    finally:
        if engine is not None:
            engine.dispose()
    return info


def latest_revision() -> str | None:
    """The newest migration this code ships (engine/migrations)."""
    try:
        from alembic.script import ScriptDirectory

        from engine.migrate import alembic_config

        return ScriptDirectory.from_config(alembic_config()).get_current_head()
    except Exception:  # an unreadable migrations folder must not hide the rest of the report
        return None


def check_redis(url: str | None, now: datetime) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Redis itself, rq's registered workers (Worker.all) and each queue's jobs; embedded mode has none."""
    if url is None:
        return {"mode": "embedded", "url": None, "reachable": None, "error": None}, [], []
    from redis import Redis
    from rq import Queue, Worker

    info: dict[str, Any] = {"mode": "redis", "url": mask_redis_url(url), "reachable": False, "error": None}
    workers: list[dict[str, Any]] = []
    queues: list[dict[str, Any]] = []
    try:
        connection = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT)
        connection.ping()
        info["reachable"] = True
        for worker in sorted(Worker.all(connection=connection), key=lambda w: w.name):
            heartbeat = as_utc(worker.last_heartbeat)
            workers.append({"name": worker.name, "state": str(worker.get_state()), "queues": worker.queue_names(),
                            "hostname": worker.hostname, "pid": worker.pid,
                            "last_heartbeat": heartbeat.isoformat() if heartbeat else None,
                            "heartbeat_age_seconds": round(metrics.age_seconds(now, heartbeat), 1)
                            if heartbeat else None})
        for name in QUEUES:
            queue = Queue(name, connection=connection)
            queues.append({"name": name, "waiting": queue.count, "running": queue.started_job_registry.count,
                           "scheduled": queue.scheduled_job_registry.count,
                           "failed": queue.failed_job_registry.count})
    except Exception as exc:
        info["error"] = first_line(exc)
    return info, workers, queues


def database_figures(now: datetime) -> tuple[dict[str, Any], int]:
    """Outbox backlog and dead rows per queue, dead rows per subscription, and due timers."""
    with transaction(readonly=True) as session:
        groups = metrics.outbox_groups(session)
        due = metrics.timers_due(session, now)
    per_queue = {name: {"queue": name, "pending": 0, "oldest_pending_age_seconds": None, "dead": 0}
                 for name in QUEUES}
    dead: dict[tuple[str, str], int] = {}
    for group in groups:
        row = per_queue.setdefault(group.queue, {"queue": group.queue, "pending": 0,
                                                 "oldest_pending_age_seconds": None, "dead": 0})
        if group.status == "pending":
            row["pending"] += group.count
            age = round(metrics.age_seconds(now, group.oldest), 1)
            row["oldest_pending_age_seconds"] = max(age, row["oldest_pending_age_seconds"] or 0.0)
        else:
            row["dead"] += group.count
            dead[(group.subscription, group.target)] = dead.get((group.subscription, group.target), 0) + group.count
    return ({"queues": list(per_queue.values()),
             "dead": [{"subscription": s, "target": t, "count": c} for (s, t), c in sorted(dead.items())]}, due)


# -- rendering ----------------------------------------------------------------------------------------

def render(report: dict[str, Any]) -> str:
    """The report as one screen of plain text."""
    db, redis = report["database"], report["redis"]
    lines = [f"finflow status  {report['checked_at'][:19].replace('T', ' ')} UTC", ""]
    if db["reachable"]:
        revision = db["revision"] or "-"
        state = "latest" if db["revision"] and db["revision"] == db["latest_revision"] else \
            f"latest is {db['latest_revision']}: run finflow init"
        lines.append(f"database   ok           {db['url']}  (revision {revision}, {state})")
    else:
        lines.append(f"database   UNREACHABLE  {db['url']}")
    if db["error"]:
        lines.append(f"           {db['error']}")
    if redis["mode"] == "embedded":
        lines.append("redis      embedded     REDIS_URL is not set: side-effect jobs run inside the API process")
    elif redis["reachable"]:
        lines.append(f"redis      ok           {redis['url']}")
    else:
        lines.append(f"redis      UNREACHABLE  {redis['url']}")
        lines.append(f"           {redis['error']}")
    lines.append("")
    lines.extend(_worker_lines(report))
    lines.append("")
    lines.extend(_queue_lines(report))
    outbox = report["outbox"]
    if outbox is not None:
        lines.append("")
        if outbox["dead"]:
            lines.append("dead outbox rows by subscription (finflow outbox list --status dead):")
            lines.extend(f"  {d['subscription']}{'/' + d['target'] if d['target'] else ''}  {d['count']}"
                         for d in outbox["dead"])
        else:
            lines.append("dead outbox rows: none")
    lines.append(f"timers due now: {'-' if report['timers_due'] is None else report['timers_due']}")
    return "\n".join(lines)


def _worker_lines(report: dict[str, Any]) -> list[str]:
    redis = report["redis"]
    if redis["mode"] == "embedded":
        return ["rq workers: none needed (embedded mode)"]
    if not redis["reachable"]:
        return ["rq workers: unknown (Redis unreachable)"]
    workers = report["workers"]
    if not workers:
        return ["rq workers: NONE — no finflow worker is running; side effects wait in the queues"]
    lines = [f"rq workers: {len(workers)}", f"  {'NAME':<34} {'STATE':<10} {'QUEUES':<30} LAST HEARTBEAT"]
    for w in workers:
        beat = f"{w['last_heartbeat'][:19].replace('T', ' ')} ({format_age(w['heartbeat_age_seconds'])} ago)" \
            if w["last_heartbeat"] else "-"
        lines.append(f"  {w['name']:<34} {w['state']:<10} {','.join(w['queues']):<30} {beat}")
    return lines


def _queue_lines(report: dict[str, Any]) -> list[str]:
    rq_queues = {q["name"]: q for q in report["queues"]}
    outbox = {q["queue"]: q for q in (report["outbox"] or {}).get("queues", [])}
    names = list(dict.fromkeys([*QUEUES, *rq_queues, *outbox]))
    lines = [f"  {'QUEUE':<10} {'WAITING':>8} {'RUNNING':>8} {'SCHEDULED':>10} {'FAILED':>7}   "
             f"{'OUTBOX PENDING':>14} {'OLDEST':>8} {'DEAD':>6}"]
    for name in names:
        q, o = rq_queues.get(name), outbox.get(name)
        rq_part = (f"{q['waiting']:>8} {q['running']:>8} {q['scheduled']:>10} {q['failed']:>7}" if q else
                   f"{'-':>8} {'-':>8} {'-':>10} {'-':>7}")
        outbox_part = (f"{o['pending']:>14} {format_age(o['oldest_pending_age_seconds']):>8} {o['dead']:>6}" if o
                       else f"{'-':>14} {'-':>8} {'-':>6}")
        lines.append(f"  {name:<10} {rq_part}   {outbox_part}")
    return ["queues (rq jobs | outbox rows):", *lines]


# -- small helpers ------------------------------------------------------------------------------------

def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def mask_database_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable DATABASE_URL>"


def mask_redis_url(url: str) -> str:
    """The Redis URL without its password (redis://:secret@host or redis://user:secret@host)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a port that is not a number …
        return "<unparsable REDIS_URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def first_line(exc: BaseException) -> str:
    """An exception as one line for the operator: its type and the first line of its message."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
