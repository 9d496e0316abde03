"""Every open instance against its OA twin: what differs, and with `fix`, what is safely replayed.

Findings, per instance:
* `missing_request` — the instance maps onto OA but has no twin request. Fixed by sending its dead OA rows
  again (the outbox replays the create and what followed, in order).
* `node_mismatch` — both open, OA's current node is not where finflow's open tasks map to. Fixed when finflow
  has OA rows not delivered (dead or waiting): those are sent again; otherwise reported only.
* `status_mismatch` — one side ended, the other did not. finflow ended and OA open: fixed by withdrawing or
  force-archiving the request; OA ended and finflow open: reported only (a person must decide).
* `finflow_only` — a decision taken in finflow that OA never got (no sent submission). Fixed by its dead rows.
* `oa_only` — a decision in OA's log finflow never applied (a callback lost, the poller not there yet). Fixed
  by reading the log back through the poller's path (echoes of our own calls are recognised there).

A run reads OA with a few threads (the calls are I/O), stores its counts and findings (`oa_reconcile_runs`,
whose last run the metrics show), and is run by `finflow oa reconcile [--fix] [--json FILE]` or nightly on the
`sync` queue (FINFLOW_OA_RECONCILE_HOUR, Asia/Shanghai, default 3, `off` for never; one run per night
between all workers).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from adapters.oa import mapping as mappings
from adapters.oa import poller, sync
from adapters.oa.config import OAConfig
from adapters.oa.models import OADecision, OAReconcileRun, OARequest, OASubmission
from adapters.oa.system import ARCHIVED, OPEN, WITHDRAWN, OAError, system
from engine import clock
from engine.db import transaction
from engine.models import Instance, Task
from engine.outbox import admin, dispatch
from engine.outbox.models import OutboxMessage
from engine.services.deployments import model_for

log = logging.getLogger("finflow.oa.reconcile")
KINDS = ("missing_request", "node_mismatch", "status_mismatch", "finflow_only", "oa_only")
THREADS = 8
JOB = "adapters.oa.reconcile.run_job"
SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass
class Subject:
    """One instance as finflow sees it, read before OA is asked."""

    instance_id: str
    business_key: str | None
    status: str
    expected: frozenset[str]
    twin: dict[str, Any] | None
    undelivered: list[int]  # oa.sync outbox rows not done (dead or waiting)
    unsent_tasks: list[str]  # finflow decisions at mapped nodes with no sent submission
    accounted: Counter  # (node, user, action) of log lines finflow knows: our calls and decisions applied


@dataclass
class Report:
    checked: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    run_id: int | None = None

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(f["kind"] for f in self.findings)
        return {kind: counted.get(kind, 0) for kind in KINDS} | {
            "checked": self.checked, "fixed": sum(1 for f in self.findings if f["fixed"])}


def reconcile(database_url: str | None = None, *, fix: bool = False, run_id: int | None = None) -> Report:
    config = OAConfig.from_env()
    if config is None:
        raise ValueError("OA is not configured (FINFLOW_OA_BASE_URL)")
    started = time.monotonic()
    if run_id is None:
        run_id = start_run(database_url, fix)
    subjects = _subjects(database_url)
    report = Report(checked=len(subjects), run_id=run_id)
    client = system(config)
    with ThreadPoolExecutor(THREADS, thread_name_prefix="oa-reconcile") as pool:
        for found in pool.map(lambda s: _compare(client, s, database_url, fix), subjects):
            report.findings.extend(found)
    report.seconds = time.monotonic() - started
    _finish_run(database_url, run_id, report)
    return report


def _subjects(database_url: str | None) -> list[Subject]:
    with transaction(database_url, readonly=True) as session:
        open_twins = select(OARequest.instance_id).where(OARequest.state != "closed")
        instances = session.execute(select(Instance.id, Instance.business_key, Instance.status, Instance.version_id)
                                    .where(or_(Instance.status == "running", Instance.id.in_(open_twins)))).all()
        mapped = {v: mappings.of(model_for(session, v)) for v in {i.version_id for i in instances}}
        ids = [i.id for i in instances if mapped[i.version_id] is not None]
        twins = {t.instance_id: t for t in session.scalars(select(OARequest).where(OARequest.instance_id.in_(ids)))} \
            if ids else {}
        tasks = _grouped(session.scalars(select(Task).where(Task.instance_id.in_(ids))) if ids else [])
        submissions = _grouped(session.scalars(select(OASubmission).where(OASubmission.instance_id.in_(ids)))
                               if ids else [])
        decisions = _grouped(session.scalars(select(OADecision).where(
            OADecision.instance_id.in_(ids), OADecision.status.in_(("applied", "ignored")))) if ids else [])
        undelivered = _grouped(session.execute(select(OutboxMessage.instance_id, OutboxMessage.id).where(
            OutboxMessage.subscription == sync.SUBSCRIPTION, OutboxMessage.status.in_(("dead", "pending")),
            OutboxMessage.instance_id.in_(ids))) if ids else [])
        subjects = []
        for instance in instances:
            mapping = mapped[instance.version_id]
            if mapping is None:
                continue
            rows = tasks.get(instance.id, [])
            sent = {s.task_id for s in submissions.get(instance.id, []) if s.status == "sent"}
            oa_decided = {d.task_id for d in decisions.get(instance.id, [])}
            expected = frozenset({sync.CLOSED}) if instance.status != "running" else frozenset(
                n for n in (mapping.node_of(t.node_id) for t in rows if t.status in ("ready", "waiting")) if n)
            unsent = [t.id for t in rows if t.status == "completed" and mapping.node_of(t.node_id)
                      and t.id not in sent and t.id not in oa_decided]
            accounted = Counter((s.oa_node or mapping.create_node, s.oa_user,
                                 "reject" if s.kind == "reject" else "submit")
                                for s in submissions.get(instance.id, []) if s.status == "sent"
                                and s.kind in ("create", "submit", "reject"))
            accounted.update((d.oa_node, d.oa_user, d.action) for d in decisions.get(instance.id, []))
            twin = twins.get(instance.id)
            subjects.append(Subject(instance.id, instance.business_key, instance.status, expected,
                                    None if twin is None else {"request_id": twin.request_id, "creator": twin.creator},
                                    [o.id for o in undelivered.get(instance.id, [])], unsent, accounted))
        return subjects


def _grouped(rows) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for row in rows:
        grouped.setdefault(row.instance_id, []).append(row)
    return grouped


def _compare(client, subject: Subject, database_url: str | None, fix: bool) -> list[dict[str, Any]]:
    def finding(kind: str, detail: str, fixed: bool = False) -> dict[str, Any]:
        return {"instance_id": subject.instance_id, "business_key": subject.business_key, "kind": kind,
                "detail": detail, "fixed": fixed}

    if subject.twin is None or not subject.twin["request_id"]:
        fixed = fix and _replay(subject.undelivered, database_url)
        note = "" if subject.undelivered else "（无可重放的同步记录）"
        return [finding("missing_request", "实例没有 OA 请求" + note, fixed)]
    request_id, creator = subject.twin["request_id"], subject.twin["creator"]
    try:
        status = client.status(creator, request_id)
        logs = client.logs(creator, request_id)
    except OAError as exc:
        return [finding("status_mismatch", f"无法读取 OA 请求 {request_id}：{exc}")]
    found = []
    ended = sync.CLOSED in subject.expected
    if ended and status.state == OPEN:
        fixed = fix and _close(client, subject, creator, request_id)
        found.append(finding("status_mismatch", f"finflow 已结束（{subject.status}），OA 请求仍在 {status.node_id}",
                             fixed))
    elif not ended and status.state in (ARCHIVED, WITHDRAWN):
        found.append(finding("status_mismatch", f"OA 请求已{status.state}，finflow 仍在审批中"))
    elif not ended and subject.expected and status.node_id not in subject.expected:
        fixed = fix and _replay(subject.undelivered, database_url)
        found.append(finding("node_mismatch", f"OA 在 {status.node_id}（{status.node_name}），finflow 期望 "
                                              f"{'、'.join(sorted(subject.expected))}", fixed))
    if subject.unsent_tasks:
        fixed = fix and _replay(subject.undelivered, database_url)
        found.append(finding("finflow_only", f"{len(subject.unsent_tasks)} 个 finflow 决定未提交到 OA", fixed))
    unknown = _unaccounted(logs, subject.accounted)
    if unknown:
        fixed = fix and poller.read_back(client, request_id, creator, database_url, source="reconcile") > 0
        found.append(finding("oa_only", f"OA 日志中 {len(unknown)} 条决定未在 finflow 生效", fixed))
    return found


def _unaccounted(logs, accounted: Counter) -> list:
    left, unknown = Counter(accounted), []
    for entry in logs:
        if entry.action not in ("submit", "reject"):
            continue
        key = (entry.node_id, entry.operator_id, entry.action)
        if left[key] > 0:
            left[key] -= 1
        else:
            unknown.append(entry)
    return unknown


def _replay(outbox_ids: list[int], database_url: str | None) -> bool:
    """Send the instance's undelivered OA rows again (dead ones are revived; waiting ones are due now)."""
    if not outbox_ids:
        return False
    with transaction(database_url) as session:
        for outbox_id in outbox_ids:
            row = admin.get_row(session, outbox_id, lock=True)
            if row.status == "dead":
                admin.retry(session, outbox_id)
            else:
                row.next_attempt_at = clock.now()
                dispatch.dispatch_after_commit(session, [(row.id, row.queue)])
    return True


def _close(client, subject: Subject, creator: str | None, request_id: str) -> bool:
    try:
        if subject.status == "withdrawn":
            client.withdraw(creator, request_id, "对账：finflow 已撤回")
        else:
            client.force_over(creator, request_id, "对账：finflow 流程已结束")
    except OAError as exc:
        log.warning("oa reconcile: could not close request %s: %s", request_id, exc)
        return False
    return True


# -- runs, nightly, metrics --------------------------------------------------------------------------------
def start_run(database_url: str | None, fix: bool, slot: str | None = None) -> int:
    with transaction(database_url) as session:
        run = OAReconcileRun(fix=fix, status="running", counts={}, findings=[], started_at=clock.now(), slot=slot)
        session.add(run)
        session.flush()
        return run.id


def _finish_run(database_url: str | None, run_id: int, report: Report) -> None:
    with transaction(database_url) as session:
        run = session.get(OAReconcileRun, run_id)
        run.status, run.finished_at = "done", clock.now()
        run.counts = {**report.counts, "seconds": round(report.seconds, 3)}
        run.findings = report.findings[:5000]


def run_job(run_id: int, database_url: str | None = None) -> dict[str, int]:
    """The nightly run, on the `sync` queue."""
    try:
        return reconcile(database_url, fix=True, run_id=run_id).counts
    except Exception as exc:
        with transaction(database_url) as session:
            run = session.get(OAReconcileRun, run_id)
            run.status, run.error, run.finished_at = "failed", f"{type(exc).__name__}: {exc}"[:2000], clock.now()
        raise


def run_nightly_if_due(database_url: str | None = None, now: datetime | None = None) -> int | None:
    """Claim tonight's run once the hour has passed (the unique slot makes one worker win) and queue it."""
    hour = os.environ.get("FINFLOW_OA_RECONCILE_HOUR", "3").strip()
    local = (now or clock.now()).astimezone(SHANGHAI)
    if hour.lower() == "off" or not hour.isdigit() or local.hour < int(hour):
        return None
    slot = f"nightly:{local.date().isoformat()}"
    with transaction(database_url, readonly=True) as session:
        if session.scalar(select(OAReconcileRun.id).where(OAReconcileRun.slot == slot)) is not None:
            return None
    try:
        run_id = start_run(database_url, True, slot)
    except IntegrityError:
        return None  # another worker claimed it
    dispatch.run_job("sync", JOB, run_id, db_url=database_url)
    return run_id


def metrics(session) -> dict[str, Any]:
    """Counts for dashboards: twins by sync state, OA decisions by outcome, the last reconciliation's findings."""
    twins = dict(session.execute(select(OARequest.state, func.count()).group_by(OARequest.state)).all())
    decisions = dict(session.execute(select(OADecision.status, func.count()).group_by(OADecision.status)).all())
    last = session.scalar(select(OAReconcileRun).where(OAReconcileRun.status == "done")
                          .order_by(OAReconcileRun.id.desc()).limit(1))
    return {"twins": twins, "decisions": decisions,
            "last_reconcile": None if last is None else {"id": last.id, "fix": last.fix, "counts": last.counts,
                                                         "finished_at": last.finished_at}}
