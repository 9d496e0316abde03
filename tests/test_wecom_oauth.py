"""WeCom OAuth2 login to the approver page, over real HTTP: finflow under waitress, the simulator as
WeCom (its authorize page logs in the user named by the `sim_userid` cookie)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from api.web.pages import safe_next
from engine.db import transaction
from engine.models import HistoryEvent, Task
from tests import wecom_support
from tests.helpers import claim, ready, start

wecom, live_finflow = wecom_support.wecom, wecom_support.live_finflow  # the fixtures
STARTER, MANAGER = "suxiaoyun", "guoxin"  # 市场部品牌专员 and her direct manager


WECOM_BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 wxwork/4.1.20"


def browser(userid: str | None) -> httpx.Client:
    """A phone's WeCom browser: keeps cookies; the simulator knows who it is by `sim_userid`."""
    client = httpx.Client(follow_redirects=False, timeout=10, headers={"User-Agent": WECOM_BROWSER})
    if userid:
        client.cookies.set("sim_userid", userid)
    return client


def follow(client: httpx.Client, url: str, stop_at: str | None = None) -> httpx.Response:
    """Follow redirects by hand (so a test can stop at finflow's OAuth2 callback)."""
    response = client.get(url)
    while response.status_code in (301, 302, 303) and not (stop_at and stop_at in response.headers["location"]):
        response = client.get(httpx.URL(str(response.url)).join(response.headers["location"]))
    return response


def callback_url(client: httpx.Client, start_url: str) -> str:
    """Start a login and stop before finflow's callback: the URL WeCom sends the browser back to."""
    response = follow(client, start_url, stop_at="/wecom/oauth/callback")
    assert response.status_code == 302, response.text
    return response.headers["location"]


def reimbursement_task() -> tuple[str, str]:
    iid = start("reimbursement", STARTER, claim("办公", 1200))
    return iid, ready(iid)[0].id


def test_login_from_the_detail_link_and_approve_from_the_page(live_finflow):
    iid, task_id = reimbursement_task()
    phone = browser(MANAGER)
    page = follow(phone, f"{live_finflow}/m/tasks/{task_id}")  # the card's 详情: login, then back here
    assert page.status_code == 200 and str(page.url).endswith(f"/m/tasks/{task_id}")
    assert '<meta name="viewport" content="width=device-width' in page.text
    assert "费用报销" in page.text and "同意" in page.text and "驳回" in page.text and "¥1,200.00" in page.text
    body = re.split(r"<main[^>]*>", page.text)[1]
    assert "审批记录" in page.text and "http" not in re.sub(r'action="[^"]*"', "", body)
    session_cookie = next(c for c in phone.cookies.jar if c.name == "ff_session")
    assert session_cookie.has_nonstandard_attr("HttpOnly") and not session_cookie.secure
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    forged = phone.post(f"{live_finflow}/m/tasks/{task_id}", data={"csrf": "x", "action": "approve"})
    assert forged.status_code == 403 and "页面已过期" in forged.text
    done = phone.post(f"{live_finflow}/m/tasks/{task_id}",
                      data={"csrf": csrf, "action": "approve", "comment": "同意报销"})
    assert done.status_code == 303
    after = phone.get(f"{live_finflow}/m/tasks/{task_id}")
    assert "已同意" in after.text and "同意报销" in after.text and 'name="action"' not in after.text
    with transaction() as session:
        assert session.get(Task, task_id).status == "completed"
        completed = session.scalar(select(HistoryEvent).where(HistoryEvent.instance_id == iid,
                                                              HistoryEvent.type == "task.completed"))
        assert (completed.actor_id, completed.channel) == (MANAGER, "web")
    assert phone.get(f"{live_finflow}/m/instances/{iid}").status_code == 200


def test_a_code_works_once(live_finflow):
    _, task_id = reimbursement_task()
    phone = browser(MANAGER)
    first = callback_url(phone, f"{live_finflow}/wecom/oauth/start?next=/m/tasks/{task_id}")
    assert phone.get(first).status_code == 302
    code = parse_qs(urlsplit(first).query)["code"][0]
    second = callback_url(phone, f"{live_finflow}/wecom/oauth/start?next=/m/tasks/{task_id}")
    state = parse_qs(urlsplit(second).query)["state"][0]
    reused = phone.get(f"{live_finflow}/wecom/oauth/callback", params={"code": code, "state": state})
    assert reused.status_code == 403 and "登录" in reused.text
    assert "ff_session" not in reused.headers.get("set-cookie", "")
    assert phone.get(first).status_code == 403  # the same callback again: its state is used


def test_a_state_from_another_browser_is_refused(live_finflow):
    _, task_id = reimbursement_task()
    url = callback_url(browser(MANAGER), f"{live_finflow}/wecom/oauth/start?next=/m/tasks/{task_id}")
    thief = browser(None)
    answer = thief.get(url)
    assert answer.status_code == 403 and "不属于此浏览器" in answer.text
    assert "ff_session" not in thief.cookies


@pytest.mark.parametrize("target", ["https://evil.example/m/x", "//evil.example/m/", "/api/v1/tasks", "/m/../api",
                                    "/\\evil.example", "javascript:alert(1)", ""])
def test_no_open_redirect(target):
    assert safe_next(target) == "/m/"


def test_an_open_redirect_is_refused_end_to_end(live_finflow):
    phone = browser(MANAGER)
    url = callback_url(phone, f"{live_finflow}/wecom/oauth/start?next=https://evil.example/m/x")
    answer = phone.get(url)
    assert answer.status_code == 302 and answer.headers["location"] == "/m/"
    landing = phone.get(f"{live_finflow}/m/")
    assert landing.status_code == 200 and "我的待办" in landing.text


def test_without_a_session_the_page_sends_to_the_login(live_finflow):
    _, task_id = reimbursement_task()
    answer = httpx.get(f"{live_finflow}/m/tasks/{task_id}", headers={"User-Agent": WECOM_BROWSER})
    assert answer.status_code == 302 and answer.headers["location"].startswith("/wecom/oauth/start?next=/m/tasks/")
    elsewhere = httpx.get(f"{live_finflow}/m/tasks/{task_id}")  # not inside WeCom: the password login
    assert elsewhere.status_code == 302 and elsewhere.headers["location"] == f"/login?next=/m/tasks/{task_id}"
    unknown = httpx.get(f"{live_finflow}/wecom/oauth/callback", params={"code": "x", "state": "y"})
    assert unknown.status_code == 403 and "登录失败" in unknown.text
    assert httpx.get(f"{live_finflow}/wecom/oauth/callback").status_code == 400


def test_a_user_unknown_to_finflow_is_not_logged_in(live_finflow, wecom):
    wecom.sim.add_user(userid="stranger", name="陌生人", department=[1], main_department=1, status=1, enable=1)
    phone = browser("stranger")
    answer = phone.get(callback_url(phone, f"{live_finflow}/wecom/oauth/start?next=/m/"))
    assert answer.status_code == 403 and "未开通或已停用" in answer.text


def test_a_non_candidate_sees_the_page_read_only(live_finflow):
    _, task_id = reimbursement_task()
    page = follow(browser(STARTER), f"{live_finflow}/m/tasks/{task_id}")
    assert page.status_code == 200 and "您不是该任务的审批人" in page.text and 'name="action"' not in page.text
    outsider = follow(browser("qianfang"), f"{live_finflow}/m/tasks/{task_id}")
    assert outsider.status_code in (200, 403)


def test_without_wecom_the_page_sends_to_the_password_login(app, monkeypatch):
    monkeypatch.delenv("FINFLOW_WECOM_CORP_ID", raising=False)
    answer = app.test_client().get("/m/tasks/whatever", headers={"User-Agent": WECOM_BROWSER})
    assert answer.status_code == 302 and answer.headers["location"] == "/login?next=/m/tasks/whatever"
