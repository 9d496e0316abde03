"""The auditor's pages over the Flask test client: search with every filter, the CSV export, the instance
page's diagram data (nodes done, current, flows taken, time per node) and full timeline, and who may
open them. The diagram's drawing in a browser is tested in tests/test_browser.py."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal

import pytest

from engine.db import transaction
from engine.history import Actor
from engine.services import passwords
from engine.services.tasks import complete_task
from tests.helpers import claim, ready, start

PASSWORD = "audit-pass-2026"
AUDITOR, EMPLOYEE, STARTER = "fengli", "suxiaoyun", "suxiaoyun"


@pytest.fixture
def logins():
    with transaction() as session:
        for user in (AUDITOR, EMPLOYEE, "zhangwei"):
            passwords.set_password(session, user, PASSWORD)


def logged_in(app, user: str):
    client = app.test_client()
    page = client.get("/login")
    token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)
    answer = client.post("/login", data={"login": user, "password": PASSWORD, "next": "/audit", "form_token": token})
    assert answer.status_code == 303
    return client


def approve(task_id: str, user: str, comment: str) -> None:
    with transaction() as session:
        complete_task(session, Actor(user, "web", "10.1.2.3", "Mozilla/5.0 (iPhone) wxwork/4.1"), task_id, "approve",
                      comment)


@pytest.fixture
def instances():
    small = start("reimbursement", STARTER, claim("办公", 1200))
    large = start("reimbursement", STARTER, claim("差旅", 6800))
    task = ready(small)[0]
    approve(task.id, task.candidates[0], "情况属实，同意")
    return small, large, task


def test_search_filters_and_pages(app, logins, instances):
    small, large, task = instances
    client = logged_in(app, AUDITOR)
    everything = client.get("/audit?process_key=reimbursement")
    assert everything.status_code == 200 and "共 2 条" in everything.text and "¥6,800.00" in everything.text
    cheap = client.get("/audit?amount_min=1000&amount_max=2000")
    assert "共 1 条" in cheap.text and small in cheap.text and large not in cheap.text
    by_approver = client.get(f"/audit?approver={task.candidates[0]}&status=running")
    assert small in by_approver.text
    nothing = client.get("/audit?business_key=NO-SUCH")
    assert "共 0 条" in nothing.text and "没有符合条件的流程实例" in nothing.text
    bad = client.get("/audit?amount_min=abc&started_from=2026-13-40")
    assert bad.status_code == 200 and "查询条件有误" in bad.text


def test_export_is_a_csv_of_the_search(app, logins, instances):
    small, large, _ = instances
    answer = logged_in(app, AUDITOR).get("/audit/export.csv?process_key=reimbursement")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert "attachment" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True).lstrip("\ufeff"))))
    assert {r["实例ID"] for r in rows} == {small, large}
    assert {Decimal(r["金额"]) for r in rows} == {Decimal("1200.00"), Decimal("6800.00")}
    assert all(r["流程"] == "费用报销" and r["申请人"] == "苏晓云" for r in rows)


def test_the_instance_page_has_the_path_taken_and_every_event(app, logins, instances):
    small, _, task = instances
    page = logged_in(app, AUDITOR).get(f"/audit/instances/{small}")
    assert page.status_code == 200
    diagram = json.loads(re.search(r'id="ff-diagram">(.*?)</script>', page.text, re.S).group(1))
    assert "<bpmn:definitions" in diagram["bpmn"] or "<definitions" in diagram["bpmn"]
    progress = diagram["progress"]
    done = {n["node_id"]: n for n in progress["completed"]}
    assert task.node_id in done and done[task.node_id]["seconds"] >= 0 and "start_event" in done
    assert progress["current"] and task.node_id not in progress["current"]
    assert progress["taken_flows"]  # at least start → first node
    assert "情况属实，同意" in page.text and "10.1.2.3" in page.text and "企业微信 iPhone" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_only_auditors_and_admins_open_the_pages(app, logins, instances):
    small, _, _ = instances
    employee = logged_in(app, EMPLOYEE)
    for path in ("/audit", "/audit/export.csv", f"/audit/instances/{small}"):
        assert employee.get(path).status_code == 403
    assert logged_in(app, "zhangwei").get("/audit").status_code == 200
    assert app.test_client().get("/audit").status_code == 302  # not logged in: to the login
    away = app.test_client().get("/audit?process_key=payment&status=running")
    assert away.headers["Location"] == "/login?next=/audit%3Fprocess_key%3Dpayment%26status%3Drunning"  # whole
    assert logged_in(app, AUDITOR).get("/audit/instances/nope").status_code == 404


def test_the_vendor_route_serves_only_dist_files(app):
    client = app.test_client()
    assert client.get("/static/vendor/bpmn-js/bpmn-navigated-viewer.production.min.js").status_code == 200
    assert client.get("/static/vendor/bpmn-js/../package.json").status_code == 404
    assert client.get("/static/vendor/left-pad/index.js").status_code == 404


def test_version_statistics_count_nodes_time_rejections_and_flows(app, logins, instances):
    small, large, task = instances
    rejected = ready(large)[0]
    with transaction() as session:
        complete_task(session, Actor(rejected.candidates[0], "web"), rejected.id, "reject", "超标")
    page = logged_in(app, AUDITOR).get("/audit/processes/reimbursement/1")
    assert page.status_code == 200 and 'id="instance-count">2<' in page.text
    heat = json.loads(re.search(r'id="ff-heat">(.*?)</script>', page.text, re.S).group(1))
    assert heat["nodes"][task.node_id]["instances"] == 2 and heat["nodes"][task.node_id]["tokens"] == 2
    assert any(count >= 2 for count in heat["flows"].values())
    row = re.search(rf'<tr data-node="{task.node_id}">(.*?)</tr>', page.text, re.S).group(1)
    assert "50.0%" in row  # one of the two decisions there was a rejection
    assert logged_in(app, EMPLOYEE).get("/audit/processes/reimbursement/1").status_code == 403
    assert logged_in(app, AUDITOR).get("/audit/processes/reimbursement/99").status_code == 404


def test_a_capped_count_is_shown_as_an_estimate_and_still_pages_on(app, logins, monkeypatch):
    from engine.services import queries

    monkeypatch.setattr(queries, "COUNT_CAP", 1)  # counts stop at the page's last row: 20 of 21 here
    for n in range(21):
        start("reimbursement", STARTER, claim("办公", 100 + n))
    client = logged_in(app, AUDITOR)
    first = client.get("/audit?process_key=reimbursement")
    assert "共 约 20 条" in first.text and "下一页" in first.text
    second = client.get("/audit?process_key=reimbursement&page=2")
    assert "共 21 条" in second.text and "下一页" not in second.text and "约" not in second.text
