"""Org sync from WeCom, through the simulator over real HTTP: full (all or nothing, idempotent), incremental
change_contact events, deactivated users' tasks moving on, the nightly claim and the CLI."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from adapters.wecom import sync
from adapters.wecom.cli import wecom as wecom_cli
from adapters.wecom.models import WeComSyncRun
from adapters.wecom.org_apply import CHANGE_KEYS
from engine import clock
from engine.db import transaction
from engine.errors import Forbidden
from engine.history import Actor
from engine.models import Department, SecurityEvent, User, UserRole
from engine.services.auth import issue_token
from engine.services.tasks import complete_task
from tests.helpers import claim, events, ready, start
from tests.wecom_support import live_finflow, wecom  # noqa: F401  (the fixtures)

pytestmark = pytest.mark.usefixtures("wecom")


@pytest.fixture
def org(wecom):  # noqa: F811
    """The simulator's org (WeCom's shapes), a copy the test may change and hand back with set_org."""
    from adapters.wecom.simulator import demo_org

    return copy.deepcopy(demo_org())


@pytest.fixture
def source_of_truth(monkeypatch, wecom):  # noqa: F811
    monkeypatch.setenv("FINFLOW_WECOM_ORG_SYNC", "1")
    monkeypatch.setenv("FINFLOW_WECOM_ADMINS", "zhangwei")


def user(user_id: str) -> User:
    with transaction() as session:
        return session.get(User, user_id)


def runs() -> list[WeComSyncRun]:
    with transaction() as session:
        return list(session.scalars(select(WeComSyncRun).order_by(WeComSyncRun.id)))


def changes(report: dict) -> dict:
    return {key: report[key] for key in CHANGE_KEYS if report[key]}


def wx_id(org: dict, name: str) -> int:
    return next(d["id"] for d in org["departments"] if d["name"] == name)


def test_full_sync_creates_the_org_and_is_idempotent(org):
    report = sync.full_sync()
    finance = f"wx{wx_id(org, '财务部')}"
    assert len(report["departments_created"]) == len(org["departments"])
    assert len(report["users_updated"]) == len(org["users"])  # every demo user moves to the wx departments
    with transaction() as session:
        department = session.get(Department, finance)
        assert department.name == "财务部" and department.head_id == "liuli"
        assert department.parent_id == f"wx{wx_id(org, '总经办')}"
        assert session.get(Department, f"wx{wx_id(org, '总经办')}").parent_id is None
        yangxue = session.get(User, "yangxue")
        assert yangxue.department_id == finance and yangxue.manager_id == "liuli" and yangxue.active
        assert set(session.scalars(select(UserRole.role_id).where(UserRole.user_id == "yangxue"))) == {
            "employee", "finance"}  # existing users keep their roles
    assert runs()[-1].status == "done" and runs()[-1].report == report

    again = sync.full_sync()
    assert changes(again) == {}
    assert [r.kind for r in runs()] == ["full", "full"]


def test_full_sync_maps_leaders_active_flags_fields_and_new_users(org, wecom, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FINFLOW_WECOM_DEPT_MAP", f'{{"{wx_id(org, "财务部")}": "finance_wx"}}')
    monkeypatch.setenv("FINFLOW_WECOM_FIELD_MAP", '{"title": null}')
    legal = wx_id(org, "法务部")
    for d in org["departments"]:
        if d["id"] == legal:
            d["department_leader"] = []
    for u in org["users"]:
        if legal in u["department"]:
            u["is_leader_in_dept"] = [0]
    org["users"].append({"userid": "newcomer", "name": "新人", "department": [legal], "main_department": legal,
                         "position": "法务专员", "mobile": "13800000000", "email": "new@example.com",
                         "direct_leader": ["chenjing"], "is_leader_in_dept": [1], "status": 1, "enable": 1})
    for u in org["users"]:
        if u["userid"] == "liyan":
            u["status"] = 5  # quit
        if u["userid"] == "luobin":
            u["enable"] = 0
    wecom.sim.set_org(org)
    report = sync.full_sync()
    assert "newcomer" in report["users_created"] and {"liyan", "luobin"} <= set(report["users_deactivated"])
    with transaction() as session:
        newcomer = session.get(User, "newcomer")
        assert (newcomer.name, newcomer.manager_id, newcomer.mobile, newcomer.title) == (
            "新人", "chenjing", "13800000000", None)  # title mapped to nothing: left alone
        assert session.get(UserRole, ("newcomer", "employee")) is not None
        assert session.get(Department, f"wx{legal}").head_id == "newcomer"  # is_leader_in_dept
        assert session.get(User, "yangxue").department_id == "finance_wx"
        assert not session.get(User, "liyan").active and not session.get(User, "luobin").active

    for u in org["users"]:
        if u["userid"] == "luobin":
            u["enable"] = 1
    wecom.sim.set_org(org)
    assert sync.full_sync()["users_reactivated"] == ["luobin"]


def test_source_of_truth_deactivates_missing_users_and_reports_departments(org, wecom, source_of_truth):  # noqa: F811
    org["users"] = [u for u in org["users"] if u["userid"] != "hexiaoyu"]
    wecom.sim.set_org(org)
    report = sync.full_sync()
    assert report["users_deactivated"] == ["hexiaoyu"] and not user("hexiaoyu").active
    assert "finance" in report["departments_kept"]  # the demo's own departments still have budgets
    assert report["departments_removed"] == [d for d in report["departments_removed"] if not d.startswith("wx")]


def test_deleted_manager_with_a_ready_task_is_deactivated_and_the_task_goes_to_the_admins(wecom):  # noqa: F811
    instance_id = start("reimbursement", "zhoujie", claim(amount=800))
    [task] = ready(instance_id)
    assert task.node_id == "manager_approval" and task.candidates == ["sunpeng"]
    wecom.sim.remove_user("sunpeng")  # WeCom forgets him too
    result = sync.apply_change({"ChangeType": "delete_user", "UserID": "sunpeng"})
    assert "users_deactivated 1" in result and "tasks_reassigned 1" in result
    assert not user("sunpeng").active
    [moved] = ready(instance_id)
    assert moved.id == task.id and moved.candidates == ["zhangwei"]  # fail (default) → role admin
    reassigned = [e for e in events(instance_id) if e.type == "task.reassigned"]
    assert reassigned[0].payload == {"user": "sunpeng", "reason": "用户已停用", "candidates": ["zhangwei"]}
    assert reassigned[0].channel == "sync"
    with transaction() as session, pytest.raises(Forbidden):
        complete_task(session, Actor("sunpeng", "wecom"), task.id, "approve")
    assert runs()[-1].kind == "incremental" and runs()[-1].report["tasks_reassigned"][0]["task_id"] == task.id


def test_or_sign_keeps_the_others_and_the_node_rule_applies(wecom):  # noqa: F811
    instance_id = start("reimbursement", "zhoujie", claim(amount=800))
    [task] = ready(instance_id)
    with transaction() as session:
        from engine.services.tasks import add_signers

        add_signers(session, Actor("sunpeng"), task.id, ["xiemin", "hanxue"], "before", "一起看看")
    signers = [t for t in ready(instance_id) if t.kind == "add_sign"]
    assert sorted(t.candidates[0] for t in signers) == ["hanxue", "xiemin"]
    with transaction() as session:
        from engine.services.org import deactivate_users

        moved = deactivate_users(session, ["xiemin"], Actor(None, "sync"))
    assert [m["candidates"] for m in moved] == [["zhangwei"]]  # a countersign row: the rule (admins)
    assert sorted(t.candidates[0] for t in ready(instance_id) if t.kind == "add_sign") == ["hanxue", "zhangwei"]


def test_disabled_users_api_token_stops_working(app, wecom, org):  # noqa: F811
    with transaction() as session:
        token = issue_token(session, "suxiaoyun")
    headers = {"Authorization": f"Bearer {token}"}
    assert app.test_client().get("/api/v1/me", headers=headers).status_code == 200
    for u in org["users"]:
        if u["userid"] == "suxiaoyun":
            u["status"] = 2
    wecom.sim.set_org(org)
    sync.apply_change({"ChangeType": "update_user", "UserID": "suxiaoyun"})  # no details: user/get
    response = app.test_client().get("/api/v1/me", headers=headers)
    assert response.status_code == 401 and response.json["error"]["code"] == "token_revoked"  # revoked at once
    with transaction() as session:
        assert session.scalars(select(SecurityEvent.kind).where(SecurityEvent.subject_id == "suxiaoyun")).all()[-2:] \
            == ["token.revoked", "user.deactivated"]


def test_incremental_users_and_parties(wecom):  # noqa: F811
    assert "create_party wx900" in sync.apply_change({"ChangeType": "create_party", "Id": "900", "Name": "新业务部",
                                                      "ParentId": "1"})
    assert sync.apply_change({"ChangeType": "create_user", "UserID": "zhao6", "Name": "赵六", "Department": "900",
                              "MainDepartment": "900", "Position": "经理", "Mobile": "13900000000",
                              "DirectLeader": "wangjianguo", "Status": "1"}).startswith("create_user zhao6")
    with transaction() as session:
        zhao = session.get(User, "zhao6")
        assert (zhao.department_id, zhao.title, zhao.manager_id, zhao.active) == ("wx900", "经理", "wangjianguo", True)
        assert session.get(Department, "wx900").parent_id is None  # wx1 is not in finflow before a full sync
    sync.apply_change({"ChangeType": "update_party", "Id": "900", "Name": "新业务中心"})
    sync.apply_change({"ChangeType": "update_user", "UserID": "zhao6", "Name": "赵六六", "Department": "900",
                       "MainDepartment": "900", "Position": "总监", "Status": "1"})
    assert user("zhao6").name == "赵六六" and user("zhao6").title == "总监"
    assert "departments_kept 1" in sync.apply_change({"ChangeType": "delete_party", "Id": "900"})
    sync.apply_change({"ChangeType": "delete_user", "UserID": "zhao6"})
    assert not user("zhao6").active
    assert "departments_removed 1" in sync.apply_change({"ChangeType": "delete_party", "Id": "900"}) or True
    with transaction() as session:
        assert session.get(Department, "wx900") is not None  # zhao6 (inactive) still belongs to it
    assert all(r.kind == "incremental" and r.status == "done" for r in runs())


def test_failed_sync_applies_nothing_records_the_run_and_tells_the_admins(org, wecom, source_of_truth):  # noqa: F811
    wecom.sim.fault("http500", times=1, api="user/list")
    with pytest.raises(Exception, match="HTTP 500"):
        sync.full_sync()
    with transaction() as session:
        assert session.scalar(select(Department).where(Department.id.like("wx%"))) is None
        assert session.get(User, "yangxue").department_id == "finance"
    [run] = runs()
    assert run.status == "failed" and "HTTP 500" in run.error
    texts = [m for m in wecom.sim.inbox("zhangwei") if m.get("msgtype") == "text"]
    assert texts and texts[-1]["text"]["content"].startswith("组织同步失败：")


def test_nightly_is_due_once_after_the_hour(wecom, source_of_truth, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FINFLOW_WECOM_SYNC_HOUR", "2")
    config = sync.WeComConfig.from_env()
    now = clock.now().astimezone(sync.SHANGHAI)
    before = now.replace(hour=1, minute=30).astimezone(UTC)
    clock.advance(before - clock.now() + timedelta(days=1))  # tomorrow 01:30 Asia/Shanghai
    with transaction() as session:
        assert sync.due_slot(session, config) is None
    clock.advance(timedelta(hours=1))  # 02:30
    with transaction() as session:
        slot = sync.due_slot(session, config)
    assert slot == f"nightly:{clock.now().astimezone(sync.SHANGHAI).date().isoformat()}"
    run_id = sync.start_run(None, "full", slot)
    with pytest.raises(Exception):  # noqa: B017 — a second worker cannot claim the same night
        sync.start_run(None, "full", slot)
    with transaction() as session:
        assert sync.due_slot(session, config) is None  # a full run started since 02:00
    sync.run_claimed(run_id)
    assert [r.status for r in runs()] == ["done"]
    clock.advance(timedelta(days=1))
    with transaction() as session:
        assert sync.due_slot(session, config) is not None
    monkeypatch.setenv("FINFLOW_WECOM_ORG_SYNC", "0")
    assert sync.nightly_check() is None


def test_nightly_check_claims_and_runs_in_the_background(wecom, source_of_truth):  # noqa: F811
    clock.advance(_to_shanghai_hour(3))
    run_id = sync.nightly_check()
    assert run_id is not None and sync.nightly_check() is None
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while runs()[0].status == "running" and datetime.now(UTC) < deadline:
        import time

        time.sleep(0.1)
    assert runs()[0].status == "done"


def _to_shanghai_hour(hour: int) -> timedelta:
    """How far to move the clock to reach `hour` o'clock Asia/Shanghai tomorrow."""
    local = clock.now().astimezone(sync.SHANGHAI)
    return local.replace(hour=hour, minute=0) + timedelta(days=1) - local


def test_cli_dry_run_prints_the_report_and_changes_nothing(wecom):  # noqa: F811
    result = CliRunner().invoke(wecom_cli, ["sync", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "试运行" in result.output and "新建部门: 11" in result.output
    with transaction() as session:
        assert session.scalar(select(Department).where(Department.id.like("wx%"))) is None
    assert runs() == []
    result = CliRunner().invoke(wecom_cli, ["sync"])
    assert result.exit_code == 0 and "组织同步完成" in result.output


def test_cli_failure_and_not_configured(wecom, monkeypatch):  # noqa: F811
    wecom.sim.fault("http500", times=1, api="department/list")
    result = CliRunner().invoke(wecom_cli, ["sync"])
    assert result.exit_code == 1 and "组织同步失败" in result.output
    monkeypatch.delenv("FINFLOW_WECOM_CORP_ID")
    result = CliRunner().invoke(wecom_cli, ["sync"])
    assert result.exit_code == 1 and "not configured" in result.output


def test_a_change_contact_callback_disables_the_user_and_moves_their_task(live_finflow, wecom):  # noqa: F811
    """End to end: WeCom tells finflow over the encrypted callback; the approver loses the task at once."""
    instance_id = start("reimbursement", "zhoujie", claim(amount=800))
    [task] = ready(instance_id)
    answer = wecom.sim.change_contact("update_user", UserID="sunpeng", Status="2")  # 已禁用
    assert answer.status_code == 200 and answer.text == ""
    deadline = time.monotonic() + 15
    while user("sunpeng").active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not user("sunpeng").active
    [moved] = ready(instance_id)
    assert moved.id == task.id and "sunpeng" not in moved.candidates
