"""The TOTP second factor for sensitive actions: approving a payment above the threshold and changing the
payee's bank account need a code (X-Finflow-OTP), once per code, 5 wrong ones lock for 15 minutes; a
WeCom click cannot carry one and does not complete the task; the seed is stored sealed."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from engine import clock
from engine.cli import main as cli_main
from engine.db import transaction
from engine.history import Actor
from engine.models import SecondFactorAttempt, SecurityEvent, Task, User
from engine.outbox import dispatch
from engine.services import second_factor, sessions
from engine.services.tasks import return_task
from tests import oa_support, wecom_support
from tests.helpers import act, events, instance, payment, ready, start

wecom, live_finflow = wecom_support.wecom, wecom_support.live_finflow  # the fixtures
oa, oa_key_file = oa_support.oa, oa_support.oa_key_file
STARTER = "suxiaoyun"
LARGE, SMALL = 80000, 30000  # the default threshold is 50,000.00 for payments


def code(secret: str) -> str:
    """The code an authenticator app shows now (finflow's clock, which tests move)."""
    return pyotp.TOTP(secret).at(clock.now())


def next_step() -> None:
    """Wait for the next code (a code works once)."""
    clock.advance(timedelta(seconds=30))


def enrolled(as_user, user_id: str) -> str:
    """Enrol `user_id` through the API, confirm with a first code; the base32 secret."""
    client = as_user(user_id)
    started = client.post("/api/v1/me/second-factor")
    assert started.status_code == 201, started.json
    secret = started.json["secret"]
    uri = started.json["otpauth_uri"]
    assert uri.startswith("otpauth://totp/") and "issuer=finflow" in uri and f"secret={secret}" in uri
    confirmed = client.post("/api/v1/me/second-factor/confirm", json={"code": code(secret)})
    assert confirmed.status_code == 200 and confirmed.json["enabled"] is True, confirmed.json
    next_step()
    return secret


def approve(as_user, task: Task, otp: str | None = None, **body):
    headers = {"X-Finflow-OTP": otp} if otp is not None else {}
    return as_user(task.candidates[0]).post(f"/api/v1/tasks/{task.id}/complete", headers=headers,
                                            json={"action": "approve", **body})


def status_of(task_id: str) -> str:
    with transaction() as session:
        return session.get(Task, task_id).status


def security(kind: str, user_id: str) -> list[SecurityEvent]:
    with transaction() as session:
        return list(session.scalars(select(SecurityEvent).where(SecurityEvent.kind == kind,
                                                                SecurityEvent.subject_id == user_id)
                                    .order_by(SecurityEvent.id)))


def decisions(iid: str) -> list:
    return [e for e in events(iid) if e.type == "task.completed"]


def test_a_large_payment_needs_a_code_and_a_valid_one_approves(as_user):
    iid = start("payment", STARTER, payment(LARGE))
    task = ready(iid)[0]
    approver = task.candidates[0]
    detail = as_user(approver).get(f"/api/v1/tasks/{task.id}").json
    assert detail["requires_second_factor"] is True

    not_enrolled = approve(as_user, task)
    assert not_enrolled.status_code == 403
    assert not_enrolled.json["error"]["code"] == "second_factor_not_enrolled"
    secret = enrolled(as_user, approver)

    missing = approve(as_user, task)
    assert missing.status_code == 403 and missing.json["error"]["code"] == "second_factor_required"
    details = missing.json["error"]["details"]
    assert (details["purpose"], details["amount"], details["threshold"]) == ("approve", "80000.00", "50000.00")
    assert status_of(task.id) == "ready" and not decisions(iid)

    wrong = approve(as_user, task, "000000" if code(secret) != "000000" else "111111")
    assert wrong.status_code == 403 and wrong.json["error"]["code"] == "second_factor_invalid"
    assert status_of(task.id) == "ready" and not decisions(iid)
    [failed] = security("second_factor.failed", approver)
    assert failed.details["purpose"] == "approve" and failed.details["reason"] == "wrong_code"
    assert failed.channel == "api" and failed.actor_id == approver

    done = approve(as_user, task, code(secret), comment="同意付款")
    assert done.status_code == 200, done.json
    assert status_of(task.id) == "completed"
    assert [(e.actor_id, e.payload["action"]) for e in decisions(iid)] == [(approver, "approve")]
    assert [e.details["purpose"] for e in security("second_factor.passed", approver)] == ["confirm", "approve"]


def test_the_same_code_is_refused_the_second_time(as_user):
    first, second = start("payment", STARTER, payment(LARGE)), start("payment", STARTER, payment(LARGE + 1))
    one, two = ready(first)[0], ready(second)[0]
    assert one.candidates == two.candidates
    secret = enrolled(as_user, one.candidates[0])
    used = code(secret)
    assert approve(as_user, one, used).status_code == 200
    again = approve(as_user, two, used)
    assert again.status_code == 403 and again.json["error"]["code"] == "second_factor_invalid"
    assert again.json["error"]["details"]["reason"] == "reused_code"
    assert status_of(two.id) == "ready"
    next_step()
    assert approve(as_user, two, code(secret)).status_code == 200


def test_five_wrong_codes_lock_until_the_window_has_passed(as_user):
    iid = start("payment", STARTER, payment(LARGE))
    task = ready(iid)[0]
    approver = task.candidates[0]
    secret = enrolled(as_user, approver)
    wrong = next(c for c in ("123456", "654321", "111111") if c != code(secret))
    for _ in range(second_factor.MAX_FAILURES):
        refused = approve(as_user, task, wrong)
        assert refused.status_code == 403 and refused.json["error"]["code"] == "second_factor_invalid"
    limited = approve(as_user, task, code(secret))  # even the right code, while limited
    assert limited.status_code == 429 and limited.json["error"]["code"] == "too_many_second_factor_attempts"
    assert 1 <= int(limited.headers["Retry-After"]) <= 15 * 60
    assert status_of(task.id) == "ready"
    with transaction() as session:
        counted = session.scalars(select(SecondFactorAttempt.succeeded).where(
            SecondFactorAttempt.user_id == approver, SecondFactorAttempt.purpose == "approve")).all()
    assert counted == [False] * 5  # the limited attempt is logged, not counted (it checked nothing)
    reasons = [e.details["reason"] for e in security("second_factor.failed", approver)]
    assert reasons == ["wrong_code"] * 5 + ["rate_limited"]
    clock.advance(timedelta(minutes=10))
    assert approve(as_user, task, code(secret)).status_code == 429
    clock.advance(timedelta(minutes=5, seconds=1))
    done = approve(as_user, task, code(secret))
    assert done.status_code == 200, done.json


def test_below_the_threshold_or_when_turned_off_no_code_is_needed(as_user, monkeypatch):
    small = start("payment", STARTER, payment(SMALL))
    task = ready(small)[0]
    assert as_user(task.candidates[0]).get(f"/api/v1/tasks/{task.id}").json["requires_second_factor"] is False
    assert approve(as_user, task).status_code == 200
    boundary = start("payment", STARTER, payment(50000))  # above, not at
    assert approve(as_user, ready(boundary)[0]).status_code == 200
    large = start("payment", STARTER, payment(LARGE))
    monkeypatch.setenv("FINFLOW_SECOND_FACTOR_AMOUNT", "off")
    assert approve(as_user, ready(large)[0]).status_code == 200
    monkeypatch.setenv("FINFLOW_SECOND_FACTOR_AMOUNT", "10000")
    monkeypatch.setenv("FINFLOW_SECOND_FACTOR_PROCESSES", "contract")
    other = start("payment", STARTER, payment(SMALL))
    assert approve(as_user, ready(other)[0]).status_code == 200


def test_a_rejection_needs_no_code(as_user):
    iid = start("payment", STARTER, payment(LARGE))
    task = ready(iid)[0]
    rejected = as_user(task.candidates[0]).post(f"/api/v1/tasks/{task.id}/complete", json={"action": "reject"})
    assert rejected.status_code == 200, rejected.json


def returned_to_applicant(amount: float = SMALL) -> Task:
    """A payment back with the applicant after the department head approved it: the resubmit task."""
    iid = start("payment", STARTER, payment(amount))
    act(iid, "dept_head_approval")
    finance = ready(iid)[0]
    with transaction() as session:
        return_task(session, Actor(finance.candidates[0]), finance.id, "applicant", "请核对收款信息")
    [resubmit] = ready(iid)
    assert resubmit.kind == "resubmit" and resubmit.candidates == [STARTER]
    return resubmit


def resubmit(as_user, task: Task, data: dict, otp: str | None = None):
    headers = {"X-Finflow-OTP": otp} if otp is not None else {}
    return as_user(STARTER).post(f"/api/v1/tasks/{task.id}/complete", headers=headers,
                                 json={"action": "submit", "form_data": data})


def test_changing_the_payee_bank_account_needs_a_code(as_user):
    task = returned_to_applicant()
    changed = {**payment(SMALL), "bank_account": "6222020200999988887"}
    secret = enrolled(as_user, STARTER)
    missing = resubmit(as_user, task, changed)
    assert missing.status_code == 403 and missing.json["error"]["code"] == "second_factor_required"
    assert missing.json["error"]["details"] == {"purpose": "field_change", "fields": ["bank_account"],
                                                "header": "X-Finflow-OTP"}
    assert "收款账号" in missing.json["error"]["message"]
    assert status_of(task.id) == "ready"
    done = resubmit(as_user, task, changed, code(secret))
    assert done.status_code == 200, done.json
    act(task.instance_id, "dept_head_approval")  # the reopened node decided: the new account is the data now
    assert instance(task.instance_id).data["bank_account"] == "6222020200999988887"


def test_resubmitting_the_same_bank_account_needs_no_code(as_user):
    task = returned_to_applicant()
    same = {**payment(SMALL), "bank_account": "6222 0202 0011 2233 445", "purpose": "品牌推广服务费（补充说明）"}
    done = resubmit(as_user, task, same)
    assert done.status_code == 200, done.json


def test_the_seed_is_stored_sealed_and_a_reset_removes_it(as_user):
    secret = enrolled(as_user, "guoxin")
    with transaction() as session:
        stored = session.execute(text("SELECT totp_secret FROM users WHERE id = 'guoxin'")).scalar()
    assert stored.startswith("enc:v1:") and secret not in stored
    assert as_user("guoxin").get("/api/v1/me/second-factor").json["enabled"] is True
    again = as_user("guoxin").post("/api/v1/me/second-factor")
    assert again.status_code == 409 and again.json["error"]["code"] == "second_factor_enabled"
    result = CliRunner().invoke(cli_main, ["user", "second-factor", "reset", "guoxin"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with transaction() as session:
        user = session.get(User, "guoxin")
        assert (user.totp_secret, user.totp_confirmed_at) == (None, None)
    [reset] = security("second_factor.reset", "guoxin")
    assert reset.channel == "cli" and reset.details == {"had_second_factor": True}


def test_disabling_needs_a_valid_current_code(as_user):
    secret = enrolled(as_user, "guoxin")
    client = as_user("guoxin")
    assert client.delete("/api/v1/me/second-factor").json["error"]["code"] == "second_factor_required"
    wrong = client.delete("/api/v1/me/second-factor", headers={"X-Finflow-OTP": "12345"})
    assert wrong.status_code == 403 and wrong.json["error"]["details"]["reason"] == "malformed_code"
    done = client.delete("/api/v1/me/second-factor", headers={"X-Finflow-OTP": code(secret)})
    assert done.status_code == 200 and done.json["enabled"] is False
    assert [e.kind for e in security("second_factor.disabled", "guoxin")] == ["second_factor.disabled"]


def test_enrolment_refuses_an_idempotency_key_so_the_secret_is_never_stored_for_a_replay(as_user):
    refused = as_user("guoxin").post("/api/v1/me/second-factor", headers={"Idempotency-Key": "enrol-1"})
    assert refused.status_code == 422 and "Idempotency-Key" in refused.json["error"]["details"]["fields"]


def test_a_wrong_first_code_does_not_confirm(as_user):
    client = as_user("guoxin")
    secret = client.post("/api/v1/me/second-factor").json["secret"]
    wrong = next(c for c in ("123456", "654321") if c != code(secret))
    refused = client.post("/api/v1/me/second-factor/confirm", json={"code": wrong})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "second_factor_invalid"
    assert client.get("/api/v1/me/second-factor").json == {"enabled": False, "pending": True, "confirmed_at": None}
    assert [e.details["purpose"] for e in security("second_factor.failed", "guoxin")] == ["confirm"]


def test_the_approver_page_asks_for_the_code(app, as_user):
    iid = start("payment", STARTER, payment(LARGE))
    task = ready(iid)[0]
    approver = task.candidates[0]
    secret = enrolled(as_user, approver)
    client = app.test_client()
    with transaction() as session:
        client.set_cookie(sessions.COOKIE, sessions.create_session(session, approver, "password", None, None))
    page = client.get(f"/m/tasks/{task.id}")
    assert page.status_code == 200 and 'name="otp"' in page.text and "动态验证码" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    missing = client.post(f"/m/tasks/{task.id}", data={"csrf": csrf, "action": "approve"})
    assert missing.status_code == 403 and "需要动态验证码" in missing.text
    wrong = client.post(f"/m/tasks/{task.id}", data={"csrf": csrf, "action": "approve", "otp": "000 000"
                                                     if code(secret) != "000000" else "111 111"})
    assert wrong.status_code == 403 and "动态验证码错误" in wrong.text
    assert [e.channel for e in security("second_factor.failed", approver)] == ["web"]
    typed = code(secret)
    done = client.post(f"/m/tasks/{task.id}", data={"csrf": csrf, "action": "approve",
                                                    "otp": f"{typed[:3]} {typed[3:]}"})
    assert done.status_code == 303 and status_of(task.id) == "completed"
    small = ready(start("payment", STARTER, payment(SMALL)))[0]
    assert 'name="otp"' not in client.get(f"/m/tasks/{small.id}").text


@pytest.mark.usefixtures("live_finflow")
def test_a_wecom_click_on_a_large_payment_does_not_complete_it(wecom, as_user):
    iid = start("payment", STARTER, payment(LARGE))
    task = ready(iid)[0]
    approver = task.candidates[0]
    enrolled(as_user, approver)
    dispatch.drain_background()
    with transaction() as session:
        from adapters.wecom.models import WeComCallback, WeComCard

        key = session.scalar(select(WeComCard.card_key).where(WeComCard.task_id == task.id,
                                                               WeComCard.user_id == approver))
    assert key
    answer = wecom.click(approver, key, f"approve:{task.id}")
    assert answer.status_code == 200
    dispatch.drain_background()
    assert status_of(task.id) == "ready" and not decisions(iid)
    with transaction() as session:
        [callback] = session.scalars(select(WeComCallback)).all()
        assert callback.status == "refused" and "second_factor_required" in callback.result
    assert wecom.sim.card(approver, key)["state"] == "需动态验证码，请在审批页处理"
    links = [m for m in wecom.sim.inbox(approver) if m["msgtype"] == "textcard"]
    assert links and links[-1]["textcard"]["url"].endswith(f"/m/tasks/{task.id}")
    assert "动态验证码" in links[-1]["textcard"]["description"]
    refused = [e for e in events(iid) if e.type == "task.action_refused"]
    assert len(refused) == 1 and refused[0].channel == "wecom" and refused[0].payload["user"] == approver


def test_a_decision_in_oa_on_a_large_payment_is_refused_and_recorded(oa, as_user):
    """OA cannot carry a code either: the approval waits in finflow, the refusal is on the task's history."""
    iid = start("payment", STARTER, payment(LARGE))
    task = ready(iid)[0]
    approver = task.candidates[0]
    secret = enrolled(as_user, approver)
    answer = oa.sim.act(oa.twin(iid).request_id, oa.oa_user(approver), "submit", "OA 中同意")
    assert answer["code"] == "SUCCESS", answer
    assert status_of(task.id) == "ready" and not decisions(iid)
    [decision] = oa.decisions(iid)
    assert decision.status == "refused" and "SecondFactor" in decision.result
    refused = [e for e in events(iid) if e.type == "task.action_refused"]
    assert len(refused) == 1 and refused[0].channel == "oa" and refused[0].payload["user"] == approver
    assert approve(as_user, task, code(secret)).status_code == 200
    assert status_of(task.id) == "completed"


def test_a_second_resubmission_is_compared_with_the_first_not_with_the_start(as_user):
    task = returned_to_applicant()
    secret = enrolled(as_user, STARTER)
    changed = {**payment(SMALL), "bank_account": "6222020200999988887"}
    assert resubmit(as_user, task, changed, code(secret)).status_code == 200
    act(task.instance_id, "dept_head_approval")
    finance = ready(task.instance_id)[0]
    with transaction() as session:
        return_task(session, Actor(finance.candidates[0]), finance.id, "applicant", "账号再确认")
    [again] = ready(task.instance_id)
    assert instance(task.instance_id).data["bank_account"] == changed["bank_account"]  # not undone by the return
    back = resubmit(as_user, again, payment(SMALL))  # the original account: a change from the current one
    assert back.status_code == 403 and back.json["error"]["code"] == "second_factor_required"
    next_step()
    assert resubmit(as_user, again, payment(SMALL), code(secret)).status_code == 200
