"""The password login of the web pages, and the REST API called with the session it creates: the cookie's
flags, CSRF on the login form, on page posts and on API commands, rate limiting, the record of failed
logins, logout, and a deactivated user's sessions ending at once."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from engine import clock
from engine.db import transaction
from engine.models import LoginAttempt, User
from engine.services import passwords
from tests.helpers import claim, ready, start

PASSWORD = "correct-horse-9"
MANAGER = "guoxin"


@pytest.fixture
def with_password():
    with transaction() as session:
        passwords.set_password(session, MANAGER, PASSWORD)


def form_token(client, next_url: str = "/m/") -> str:
    page = client.get(f"/login?next={next_url}")
    assert page.status_code == 200 and "登录 finflow" in page.text
    return re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)


def log_in(client, login: str = MANAGER, password: str = PASSWORD, next_url: str = "/m/"):
    return client.post("/login", data={"login": login, "password": password, "next": next_url,
                                       "form_token": form_token(client, next_url)})


def page_csrf(client) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/m/").text).group(1)


def attempts() -> list[tuple[str, bool, str | None]]:
    with transaction() as session:
        return [(a.login, a.succeeded, a.reason)
                for a in session.scalars(select(LoginAttempt).order_by(LoginAttempt.id))]


def test_a_login_sets_a_safe_cookie_and_lands_on_the_page_asked_for(app, with_password):
    client = app.test_client()
    answer = log_in(client, next_url="/m/tasks/abc")
    assert answer.status_code == 303 and answer.headers["Location"] == "/m/tasks/abc"
    cookie = next(h for h in answer.headers.getlist("Set-Cookie") if h.startswith("ff_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "我的待办" in client.get("/m/").text
    assert attempts() == [(MANAGER, True, None)]


def test_next_never_leaves_the_site(app, with_password):
    answer = log_in(app.test_client(), next_url="https://evil.example/m/")
    assert answer.status_code == 303 and answer.headers["Location"] == "/m/"


def test_a_wrong_password_and_an_unknown_user_get_the_same_refusal_and_are_recorded(app, with_password):
    client = app.test_client()
    wrong, unknown = log_in(client, password="not-it-at-all"), log_in(client, login="nobody")
    assert wrong.status_code == unknown.status_code == 401
    assert "账号或密码错误" in wrong.text and "账号或密码错误" in unknown.text
    assert "ff_session=" not in " ".join(wrong.headers.getlist("Set-Cookie"))
    assert attempts() == [(MANAGER, False, "wrong_password"), ("nobody", False, "unknown_user")]


def test_repeated_failures_are_rate_limited_even_with_the_right_password(app, with_password):
    client = app.test_client()
    for _ in range(passwords.MAX_FAILURES_PER_LOGIN):
        assert log_in(client, password="guess-guess").status_code == 401
    limited = log_in(client)
    assert limited.status_code == 429 and "15 分钟后再试" in limited.text
    assert attempts()[-1] == (MANAGER, False, "limited")
    clock.advance(passwords.WINDOW)
    assert log_in(client).status_code == 303  # the window has passed


def test_the_login_form_needs_its_own_token(app, with_password):
    client = app.test_client()
    forged = client.post("/login", data={"login": MANAGER, "password": PASSWORD, "next": "/m/"})
    assert forged.status_code == 403 and "页面已过期" in forged.text
    assert attempts() == []


def test_the_api_accepts_the_session_and_wants_the_csrf_token_on_commands(app, with_password):
    client = app.test_client()
    log_in(client)
    iid = start("reimbursement", "suxiaoyun", claim("办公", 800))
    task = ready(iid)[0]
    assert client.get("/api/v1/tasks?mine=true").status_code == 200  # reads need no CSRF token
    body = {"action": "approve", "comment": "同意"}
    refused = client.post(f"/api/v1/tasks/{task.id}/complete", json=body)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "csrf_failed"
    done = client.post(f"/api/v1/tasks/{task.id}/complete", json=body, headers={"X-CSRF-Token": page_csrf(client)})
    assert done.status_code == 200, done.json
    assert app.test_client().get("/api/v1/tasks").status_code == 401  # no cookie, no token


def test_logout_ends_the_session(app, with_password):
    client = app.test_client()
    log_in(client)
    csrf = page_csrf(client)
    assert client.post("/logout", data={"csrf": "wrong"}).status_code == 403
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/m/").status_code == 302
    assert client.get("/api/v1/tasks").status_code == 401


def test_a_deactivated_users_sessions_end_at_once(app, with_password):
    client = app.test_client()
    log_in(client)
    with transaction() as session:
        session.get(User, MANAGER).active = False
    answer = client.get("/m/")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login")
    assert client.get("/api/v1/tasks").status_code == 401
    assert log_in(client).status_code == 401 and attempts()[-1] == (MANAGER, False, "inactive")


def test_a_short_password_is_refused():
    with transaction() as session, pytest.raises(ValueError, match="at least 8"):
        passwords.set_password(session, MANAGER, "short")


def test_the_approver_lists_todo_done_started_and_cc(app, with_password):
    from engine.history import Actor
    from engine.services.tasks import complete_task

    with transaction() as session:
        passwords.set_password(session, "suxiaoyun", PASSWORD)
    iid = start("reimbursement", "suxiaoyun", claim("办公", 800))
    manager = app.test_client()
    log_in(manager)
    task_page = manager.get(f"/m/tasks/{ready(iid)[0].id}")
    assert "发票明细（1）" in task_page.text and "¥800.00" in task_page.text  # the invoices behind the claim
    todo = manager.get("/m/?tab=todo")
    assert "我的待办" in todo.text and "¥800.00" in todo.text and "直属上级审批" in todo.text
    with transaction() as session:
        complete_task(session, Actor(MANAGER, "web"), ready(iid)[0].id, "approve", "同意")
    assert "暂无待处理的任务" in manager.get("/m/?tab=todo").text
    done = manager.get("/m/?tab=done")
    assert "我已处理" in done.text and "¥800.00" in done.text
    applicant = app.test_client()
    log_in(applicant, login="suxiaoyun")
    assert f"/m/instances/{iid}" in applicant.get("/m/?tab=started").text
    assert "暂无抄送给您的申请" in applicant.get("/m/?tab=cc").text
    assert "我的待办" in applicant.get("/m/?tab=nonsense").text  # an unknown tab is the to-do list


def test_the_task_page_transfers_and_returns_with_a_comment(app, with_password):
    iid = start("reimbursement", "suxiaoyun", claim("办公", 700))
    task = ready(iid)[0]
    client = app.test_client()
    log_in(client)
    csrf = page_csrf(client)
    unknown = client.post(f"/m/tasks/{task.id}", data={"csrf": csrf, "action": "transfer", "to": "nobody"})
    assert unknown.status_code in (404, 422) and "nobody" in unknown.text  # shown on the page, no 5xx
    moved = client.post(f"/m/tasks/{task.id}", data={"csrf": csrf, "action": "transfer", "to": "huangmin",
                                                     "comment": "请黄总处理"})
    assert moved.status_code == 303
    assert "huangmin" in ready(iid)[0].candidates
    second = start("reimbursement", "suxiaoyun", claim("办公", 600))
    first_task = ready(second)[0]
    client.post(f"/m/tasks/{first_task.id}", data={"csrf": csrf, "action": "approve"})
    reviewer = ready(second)[0].candidates[0]
    with transaction() as session:
        passwords.set_password(session, reviewer, PASSWORD)
    other = app.test_client()
    log_in(other, login=reviewer)
    returned = other.post(f"/m/tasks/{ready(second)[0].id}", data={"csrf": page_csrf(other), "action": "return",
                                                                   "comment": "请补充发票"})
    assert returned.status_code == 303
    back = ready(second)
    assert len(back) == 1 and back[0].candidates == ["suxiaoyun"]  # the applicant revises (申请人修改)
