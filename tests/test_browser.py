"""The web pages in a real browser: Playwright driving Debian's chromium headless (scripts/browser.sh
installs it; nothing is downloaded here) against finflow under waitress. Screenshots of every page go to
test-artifacts/ (not committed) for a reviewer to look at."""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.db import transaction
from engine.history import Actor
from engine.services import passwords
from engine.services.deployments import get_version
from engine.services.tasks import complete_task
from tests.helpers import claim, ready, start
from tests.live_server import serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "browser-pass-2026"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is installed by scripts/browser.sh")


@pytest.fixture
def site() -> Iterator[str]:
    with transaction() as session:
        for user in ("fengli", "guoxin", "suxiaoyun"):
            passwords.set_password(session, user, PASSWORD)
    with serving(threads=8) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


def log_in(browser, site: str, user: str, next_url: str, **context):
    page = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", accept_downloads=True,
                               **context).new_page()
    page.goto(f"{site}{next_url}")
    assert page.url.startswith(f"{site}/login")
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{site}{next_url}")
    return page


def test_login_refuses_a_wrong_password_then_limits_the_attempts(browser, site):
    page = browser.new_context(locale="zh-CN").new_page()
    for attempt in range(passwords.MAX_FAILURES_PER_LOGIN + 1):
        page.goto(f"{site}/login")
        page.fill("input[name=login]", "guoxin")
        page.fill("input[name=password]", "wrong-password" if attempt < passwords.MAX_FAILURES_PER_LOGIN else PASSWORD)
        page.click("form[action='/login'] button[type=submit]")
        if attempt == 0:
            assert "账号或密码错误" in page.text_content("[role=alert]")
            page.screenshot(path=ARTIFACTS / "login-refused.png", full_page=True)
    assert "登录失败次数过多" in page.text_content("[role=alert]")  # even the right password, for now


def test_approver_on_a_phone_approves_with_a_comment(browser, site):
    iid = start("reimbursement", "suxiaoyun", claim("办公", 1200))
    task = ready(iid)[0]
    page = log_in(browser, site, task.candidates[0], f"/m/tasks/{task.id}",
                  viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    assert "¥1,200.00" in page.content()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no horizontal scrolling
    page.screenshot(path=ARTIFACTS / "approver-task.png", full_page=True)
    page.fill("textarea[name=comment]", "同意报销")
    page.click("button[value=approve]")
    page.wait_for_load_state()
    assert "处理结果：已同意" in page.content() and "同意报销" in page.content()
    page.goto(f"{site}/m/?tab=done")
    assert "¥1,200.00" in page.text_content("#items")  # it moved to 已办
    page.screenshot(path=ARTIFACTS / "approver-done.png", full_page=True)


def test_auditor_searches_opens_the_diagram_and_exports(browser, site):
    iid = start("reimbursement", "suxiaoyun", claim("办公", 1500))
    task = ready(iid)[0]
    with transaction() as session:
        complete_task(session, Actor(task.candidates[0], "web", "10.0.0.8"), task.id, "approve", "票据齐全")
    page = log_in(browser, site, "fengli", "/audit", viewport={"width": 1280, "height": 900})
    page.select_option("select[name=process_key]", "reimbursement")
    page.click("form[action='/audit'] button[type=submit]")
    assert "共 1 条" in page.content() and "¥1,500.00" in page.content()
    page.screenshot(path=ARTIFACTS / "audit-search.png", full_page=True)
    with page.expect_download() as download:
        page.click("#export")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text("utf-8-sig"))))
    assert [r["实例ID"] for r in rows] == [iid]
    page.click("#results a")
    page.wait_for_selector("body[data-diagram=ready]")
    marked = page.evaluate("""() => Object.fromEntries(['ff-done', 'ff-current', 'ff-taken', 'ff-untaken'].map(
        m => [m, [...document.querySelectorAll('.djs-element.' + m)].map(e => e.dataset.elementId)]))""")
    assert task.node_id in marked["ff-done"] and marked["ff-current"] and marked["ff-taken"] and marked["ff-untaken"]
    assert "票据齐全" in page.text_content("#timeline") and "10.0.0.8" in page.text_content("#timeline")
    page.select_option("#kind-filter", "审批")
    hidden = page.evaluate("[...document.querySelectorAll('#timeline tbody tr')].filter(r => r.hidden).length")
    assert hidden > 0
    page.screenshot(path=ARTIFACTS / "audit-instance.png", full_page=True)
    page.goto(f"{site}/audit/processes/reimbursement/1")
    page.wait_for_selector("body[data-diagram=ready]")
    assert page.locator(".djs-element.ff-heat-5").count() > 0 and "瓶颈节点" in page.content()
    page.screenshot(path=ARTIFACTS / "audit-statistics.png", full_page=True)


def test_designer_edits_validates_deploys_and_the_new_version_runs(browser, site):
    with transaction() as session:
        passwords.set_password(session, "luyao", PASSWORD)  # the demo's process designer
    page = log_in(browser, site, "luyao", "/designer", viewport={"width": 1440, "height": 900})
    assert "费用报销" in page.content()
    page.screenshot(path=ARTIFACTS / "designer-list.png", full_page=True)
    page.click("section.process[data-key=reimbursement] a")
    page.wait_for_selector("body[data-modeler=ready]")
    page.click('.djs-element[data-element-id="manager_approval"]')
    assignee = page.locator('#properties input[name="finflow.assignee"]')
    assert assignee.input_value() == "manager(starter)"
    assignee.fill("")
    assignee.press("Tab")
    page.click("#validate")
    page.wait_for_selector("body[data-validated=failed]")
    assert "finflow.assignee" in page.text_content("#status")
    assert "ff-invalid" in page.get_attribute('.djs-element[data-element-id="manager_approval"]', "class")
    page.screenshot(path=ARTIFACTS / "designer-invalid.png", full_page=True)
    assignee.fill("role(finance)")
    assignee.press("Tab")
    page.click("#validate")
    page.wait_for_selector("#status:not(:text('校验中'))")
    page.wait_for_timeout(300)
    assert page.text_content("#status").startswith("校验通过"), page.text_content("#status")
    page.click("#diff")
    assert "修改 1 个" in page.text_content("[data-diff=changed]") and "直属上级审批" in page.text_content("#report")
    page.click("#deploy")
    page.wait_for_selector("body[data-deployed]")
    assert page.get_attribute("body", "data-deployed") == "2" and "已部署为 v2" in page.text_content("#status")
    page.screenshot(path=ARTIFACTS / "designer-deployed.png", full_page=True)
    with transaction() as session:
        v1, v2 = (get_version(session, "reimbursement", n) for n in (1, 2))
        before, after = v1.files[v1.bpmn_file], v2.files[v2.bpmn_file]
    for element in ("spiffworkflow:property ", "spiffworkflow:parameter ", "spiffworkflow:serviceTaskOperator "):
        assert before.count(f"<{element}") == after.count(f"<{element}"), element  # extensions kept on save
    assert 'value="role(finance)"' in after and 'value="manager(starter)"' not in after.split("director_approval")[0]
    iid = start("reimbursement", "suxiaoyun", claim("办公", 900))
    first = ready(iid)[0]
    assert first.node_id == "manager_approval" and first.assignment == "role(finance)"


def test_an_employee_cannot_deploy_or_export(browser, site):
    page = log_in(browser, site, "suxiaoyun", "/designer", viewport={"width": 1280, "height": 800})
    assert "只读" in page.content()
    page.click("section.process[data-key=reimbursement] a")
    page.wait_for_selector("body[data-modeler=ready]")
    assert page.locator("#deploy").count() == 0
    answer = page.evaluate("""async () => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const form = new FormData();
        form.append('files', new Blob(['<x/>']), 'x.bpmn');
        const headers = {'X-CSRF-Token': csrf};
        const withToken = await fetch('/api/v1/definitions', {method: 'POST', body: form, headers: headers});
        const without = await fetch('/api/v1/definitions', {method: 'POST', body: form});
        return [withToken.status, (await without.json()).error.code];
    }""")
    assert answer == [403, "csrf_failed"]
    assert page.goto(f"{site}/audit/export.csv").status == 403


def test_designer_edits_a_decision_table_in_dmn_js(browser, site):
    with transaction() as session:
        passwords.set_password(session, "luyao", PASSWORD)
    page = log_in(browser, site, "luyao", "/designer/reimbursement/1", viewport={"width": 1440, "height": 900})
    page.wait_for_selector("body[data-modeler=ready]")
    page.select_option("#file", "reimbursement_routing.dmn")
    page.wait_for_selector("body[data-dmn=ready]")
    cell = page.locator("td", has_text="> 50000").first
    cell.click()
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    page.keyboard.type("1")  # > 50001
    page.click("#validate")
    page.wait_for_selector("#status:not(:text('校验中'))")
    page.wait_for_timeout(300)
    assert page.text_content("#status").startswith("校验通过"), page.text_content("#status")
    page.screenshot(path=ARTIFACTS / "designer-dmn.png", full_page=True)
    page.click("#deploy")
    page.wait_for_selector("body[data-deployed]")
    with transaction() as session:
        deployed = get_version(session, "reimbursement", 2).files["reimbursement_routing.dmn"]
    assert "&gt; 50001" in deployed and "&gt; 50000<" not in deployed


def test_designer_edits_the_oa_mapping_next_to_the_diagram(browser, site):
    with transaction() as session:
        passwords.set_password(session, "luyao", PASSWORD)
    page = log_in(browser, site, "luyao", "/designer/reimbursement/1", viewport={"width": 1440, "height": 900})
    page.wait_for_selector("body[data-modeler=ready]")
    page.select_option("#file", "reimbursement.oa.json")
    text = page.input_value("#mapping-text")
    assert '"manager_approval": "1011"' in text
    page.fill("#mapping-text", text.replace('"manager_approval": "1011"', '"manager_aproval": "1011"'))
    page.click("#validate")
    page.wait_for_selector("#status:not(:text('校验中'))")
    page.wait_for_timeout(300)
    assert "no user task 'manager_aproval'" in page.text_content("#status"), page.text_content("#status")
    page.fill("#mapping-text", text.replace('"manager_approval": "1011"', '"manager_approval": "1111"'))
    page.click("#validate")
    page.wait_for_selector("#status:not(:text('校验中'))")
    page.wait_for_timeout(300)
    assert page.text_content("#status").startswith("校验通过"), page.text_content("#status")
    page.screenshot(path=ARTIFACTS / "designer-oa-mapping.png", full_page=True)
    page.click("#deploy")
    page.wait_for_selector("body[data-deployed]")
    with transaction() as session:
        deployed = get_version(session, "reimbursement", 2).files["reimbursement.oa.json"]
    assert '"manager_approval": "1111"' in deployed


REMINDER = """
    <bpmn:boundaryEvent id="remind_manager" name="催办提醒" attachedToRef="manager_approval" cancelActivity="false">
      <bpmn:outgoing>flow_remind_manager</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeCycle>"R/PT24H"</bpmn:timeCycle></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:endEvent id="manager_reminded"><bpmn:incoming>flow_remind_manager</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="flow_remind_manager" sourceRef="remind_manager" targetRef="manager_reminded" />
  </bpmn:process>"""
REMINDER_DI = """
      <bpmndi:BPMNShape id="remind_manager_di" bpmnElement="remind_manager">
        <dc:Bounds x="572" y="242" width="36" height="36" /></bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="manager_reminded_di" bpmnElement="manager_reminded">
        <dc:Bounds x="572" y="330" width="36" height="36" /></bpmndi:BPMNShape>
      <bpmndi:BPMNEdge id="flow_remind_manager_di" bpmnElement="flow_remind_manager">
        <di:waypoint x="590" y="278" /><di:waypoint x="590" y="330" /></bpmndi:BPMNEdge>
    </bpmndi:BPMNPlane>"""


def test_designer_edits_a_reminders_period(browser, site):
    from engine.services.deployments import deploy

    with transaction() as session:
        passwords.set_password(session, "luyao", PASSWORD)
        v1 = get_version(session, "reimbursement", 1)
        files = dict(v1.files)
        bpmn = files[v1.bpmn_file].replace("</bpmn:process>", REMINDER, 1)
        files[v1.bpmn_file] = bpmn.replace("</bpmndi:BPMNPlane>", REMINDER_DI, 1)
        deploy(session, files, Actor("luyao"))  # v2: with a reminder every 24 h on the manager's task
    page = log_in(browser, site, "luyao", "/designer/reimbursement/2", viewport={"width": 1440, "height": 900})
    page.wait_for_selector("body[data-modeler=ready]")
    page.click('.djs-element[data-element-id="remind_manager"]')
    period = page.locator('#properties input[name="timer.duration"]')
    assert period.input_value() == "R/PT24H"
    assert page.locator('#properties select[name="timer.interrupting"]').input_value() == "false"
    period.fill("every day")
    period.press("Tab")
    assert "时长格式不正确" in page.text_content("#status")
    period.fill("R/PT12H")
    period.press("Tab")
    page.click("#deploy")
    page.wait_for_selector("body[data-deployed]")
    with transaction() as session:
        v3 = get_version(session, "reimbursement", 3)
        assert '"R/PT12H"' in v3.files[v3.bpmn_file] and '"R/PT24H"' not in v3.files[v3.bpmn_file]
