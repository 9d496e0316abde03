"""GET /metrics: instances per process, open tasks per node, command latencies per operation, the outbox
backlog, dead rows and delivery latency, read back with prometheus_client's own parser; who may scrape;
no business data in names or labels; multiprocess mode merges several processes' observations."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from engine import clock, metrics
from engine.db import transaction
from engine.outbox.models import OutboxMessage
from tests import outbox_support
from tests.helpers import claim, payment

embedded = outbox_support.embedded

ADMIN, APPLICANT, MANAGER = "zhangwei", "suxiaoyun", "guoxin"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED_LABELS = {"process", "node", "status", "operation", "outcome", "queue", "subscription", "target", "le"}


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one scrape (only finflow's own metrics)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            if sample.name.startswith("finflow_"):
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def start_via_api(client, process_key: str, data: dict) -> dict:
    response = client.post("/api/v1/instances", json={"process_key": process_key, "data": data})
    assert response.status_code == 201, response.json
    return response.json


def decide(as_user, task: dict, action: str = "approve") -> dict:
    response = as_user(task["candidates"][0]).post(f"/api/v1/tasks/{task['id']}/complete",
                                                   json={"action": action, "comment": "ok"})
    assert response.status_code == 200, response.json
    return response.json["instance"]


def test_counts_tasks_latencies_and_outbox(embedded, as_user):
    admin, applicant = as_user(ADMIN), as_user(APPLICANT)
    before = scrape(admin)

    finished = start_via_api(applicant, "reimbursement", claim(reason="采购办公用品"))
    approvals = 0
    current = finished
    while current["current_tasks"]:  # every approver approves: the claim runs to its end
        current = decide(as_user, current["current_tasks"][0])
        approvals += 1
    returned = start_via_api(applicant, "reimbursement", claim(amount=800))
    decide(as_user, returned["current_tasks"][0], "reject")  # back to the applicant (applicant_revise)
    waiting = start_via_api(applicant, "payment", payment(30000, "MKT-ADS-2026"))
    used = finished["current_tasks"][0]["id"]  # a decision on a task already decided: refused (409)
    assert as_user(MANAGER).post(f"/api/v1/tasks/{used}/complete", json={"action": "approve"}).status_code == 409

    with transaction() as session:  # one notification row dead, one still waiting, the rest delivered 42 s after
        ids = list(session.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)))
        dead_id, pending_id, old_id, *recent = ids
        now = clock.now()
        session.execute(update(OutboxMessage).where(OutboxMessage.id == dead_id).values(
            status="dead", attempts=8, last_error="ConnectionError: 短信网关拒绝连接"))
        session.execute(update(OutboxMessage).where(OutboxMessage.id == pending_id).values(
            status="pending", done_at=None, created_at=now - timedelta(seconds=90)))
        session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(recent)).values(
            created_at=now - timedelta(seconds=50), next_attempt_at=now - timedelta(seconds=50),
            done_at=now - timedelta(seconds=8)))
        session.execute(update(OutboxMessage).where(OutboxMessage.id == old_id).values(  # outside the hour
            created_at=now - timedelta(hours=3), next_attempt_at=now - timedelta(hours=3),
            done_at=now - timedelta(hours=2)))
        [(queue, subscription)] = session.execute(select(OutboxMessage.queue, OutboxMessage.subscription).distinct())
    assert (queue, subscription) == ("channels", "inbox.notify")  # create_app loaded the inbox adapter

    after = scrape(admin)
    assert value(after, "finflow_metrics_database_up") == 1
    assert value(after, "finflow_instances_started_total", process="reimbursement") == 2
    assert value(after, "finflow_instances_started_total", process="payment") == 1
    assert value(after, "finflow_instances_completed_total", process="reimbursement") == 1
    assert value(after, "finflow_instances_completed_total", process="payment") == 0
    assert value(after, "finflow_instances", process="reimbursement", status="running") == 1
    assert after["finflow_open_tasks"] == {
        (("node", "applicant_revise"), ("process", "reimbursement"), ("status", "ready")): 1,
        (("node", "dept_head_approval"), ("process", "payment"), ("status", "ready")): 1}
    for process, node in (("reimbursement", "applicant_revise"), ("payment", "dept_head_approval")):
        assert value(after, "finflow_open_tasks_overdue", process=process, node=node) == 0
        assert (("node", node), ("process", process)) in after["finflow_open_task_oldest_age_seconds"]

    def commands(operation, outcome="ok"):
        name = "finflow_command_duration_seconds_count"
        return value(after, name, operation=operation, outcome=outcome) - value(
            before, name, operation=operation, outcome=outcome)

    assert commands("start") == 3 and commands("approve") == approvals and commands("reject") == 1
    assert commands("approve", "refused") == 1 and commands("return") == 0
    infinite = value(after, "finflow_command_duration_seconds_bucket", operation="start", outcome="ok", le="+Inf")
    assert infinite == value(after, "finflow_command_duration_seconds_count", operation="start", outcome="ok")

    where = {"queue": "channels", "subscription": "inbox.notify", "target": ""}
    assert value(after, "finflow_outbox_pending", **where) == 1
    assert value(after, "finflow_outbox_dead", **where) == 1
    assert value(after, "finflow_outbox_oldest_pending_age_seconds", **where) >= 90
    latency = "finflow_outbox_delivery_latency_seconds"
    assert value(after, f"{latency}_gcount", **where) == len(recent)  # the row done 2 h ago is not counted
    assert value(after, f"{latency}_bucket", le="30", **where) == 0
    assert value(after, f"{latency}_bucket", le="60", **where) == len(recent)
    assert abs(value(after, f"{latency}_gsum", **where) - 42 * len(recent)) < 1
    assert value(after, "finflow_timers_due") == 0

    clock.advance(timedelta(hours=2))  # the open tasks grow older; nothing else changes
    later = scrape(admin)
    assert value(later, "finflow_open_task_oldest_age_seconds", process="payment",
                 node="dept_head_approval") >= 7200
    assert value(later, "finflow_instances_started_total", process="reimbursement") == 2
    assert waiting["status"] == "running"


def test_no_business_data_in_names_or_labels(embedded, as_user):
    applicant = as_user(APPLICANT)
    started = start_via_api(applicant, "payment", payment(31234.56, "MKT-ADS-2026"))
    decide(as_user, started["current_tasks"][0])
    body = as_user(ADMIN).get("/metrics").get_data(as_text=True)
    for secret in ("杭州印象广告有限公司", "6222020200112233445", "品牌推广服务费", "31234", "MKT-ADS-2026",
                   APPLICANT, MANAGER, started["business_key"], started["id"]):
        assert secret not in body, secret
    labels = {key for family in text_string_to_metric_families(body) if family.name.startswith("finflow_")
              for sample in family.samples for key in sample.labels}
    assert labels <= ALLOWED_LABELS, labels - ALLOWED_LABELS


def test_only_administrators_or_the_metrics_secret(embedded, as_user, monkeypatch):
    anonymous = as_user(ADMIN).client
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        refused = anonymous.get("/metrics", headers=headers)
        assert refused.status_code == 401, refused.data
        assert set(refused.json["error"]) == {"code", "message", "details"}
        assert refused.json["error"]["code"] == "unauthorized"
    employee = as_user(APPLICANT).get("/metrics")
    assert employee.status_code == 403 and employee.json["error"]["code"] == "forbidden"
    assert as_user(ADMIN).get("/metrics").status_code == 200

    monkeypatch.setenv("FINFLOW_METRICS_TOKEN", "prometheus-scrape-secret-0123456789")
    allowed = anonymous.get("/metrics", headers={"Authorization": "Bearer prometheus-scrape-secret-0123456789"})
    assert allowed.status_code == 200 and "finflow_instances_started" in allowed.get_data(as_text=True)
    wrong = anonymous.get("/metrics", headers={"Authorization": "Bearer prometheus-scrape-secret-wrong"})
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "unauthorized"
    assert anonymous.get("/metrics").status_code == 401


def test_database_down_still_answers_with_command_latencies(embedded, as_user, monkeypatch):
    start_via_api(as_user(APPLICANT), "reimbursement", claim())

    def refuse(session):
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(metrics, "instance_counts", refuse)
    samples = scrape(as_user(ADMIN))
    assert value(samples, "finflow_metrics_database_up") == 0
    assert "finflow_instances_started_total" not in samples
    assert value(samples, "finflow_command_duration_seconds_count", operation="start", outcome="ok") >= 1


def test_multiprocess_mode_merges_every_process(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR (gunicorn, workers on the host), what two processes observed is in
    the scrape a third process serves."""
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": ROOT}
    observe = textwrap.dedent("""
        from engine import metrics
        metrics.timed("transfer")(lambda: None)()
    """)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", observe], env=environment, cwd=ROOT, check=True, timeout=60)
    serve = "import sys; from engine import metrics; sys.stdout.write(metrics.exposition()[0].decode())"
    out = subprocess.run([sys.executable, "-c", serve], env=environment, cwd=ROOT, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(out) for s in family.samples}
    assert samples[("finflow_command_duration_seconds_count", (("operation", "transfer"), ("outcome", "ok")))] == 2
    assert samples[("finflow_metrics_database_up", ())] == 1
