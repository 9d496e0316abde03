"""The REST API: a full walkthrough, authentication and permissions, and bad input of every kind."""

import json

import pytest
from click.testing import CliRunner

from api import create_app
from engine.cli import main as cli_main
from engine.org.directory import DEMO_ORG
from tests.helpers import claim, payment

START = "/api/v1/instances"


def start(client, process_key="reimbursement", data=None, **extra):
    return client.post(START, json={"process_key": process_key, "data": data or claim(), **extra})


def test_walkthrough_start_list_complete_history(as_user):
    applicant, manager = as_user("suxiaoyun"), as_user("guoxin")
    created = start(applicant, business_key="BX-TEST-1")
    assert created.status_code == 201, created.json
    body = created.json
    assert body["status"] == "running" and body["business_key"] == "BX-TEST-1"
    [task] = body["current_tasks"]
    assert task["node_id"] == "manager_approval" and task["candidates"] == ["guoxin"]

    mine = manager.get("/api/v1/tasks?mine=true").json
    assert [t["id"] for t in mine["items"]] == [task["id"]] and mine["meta"]["total"] == 1
    detail = manager.get(f"/api/v1/tasks/{task['id']}").json
    assert detail["form"]["type"] == "object" and detail["instance"]["data"]["amount"] == "1200.00"

    done = manager.post(f"/api/v1/tasks/{task['id']}/complete",
                        json={"action": "approve", "comment": "同意报销", "form_data": {"opinion": "金额合理"}},
                        headers={"User-Agent": "WeComTest/1.0", "X-Forwarded-For": "10.1.2.3"})
    assert done.status_code == 200, done.json
    assert done.json["task"]["status"] == "completed" and done.json["task"]["assignee_id"] == "guoxin"
    assert [t["node_id"] for t in done.json["instance"]["current_tasks"]] == ["finance_review"]

    history = applicant.get(f"/api/v1/instances/{body['id']}/history").json["events"]
    completed = next(e for e in history if e["type"] == "task.completed")
    assert completed["actor_id"] == "guoxin" and completed["channel"] == "api"
    # no proxy is configured (FINFLOW_TRUSTED_PROXY_HOPS=0): the socket's address, not the client's claim
    assert completed["client_ip"] == "127.0.0.1" and completed["user_agent"] == "WeComTest/1.0"
    assert completed["payload"]["comment"] == "同意报销"
    assert completed["payload"]["form_data"] == {"opinion": "金额合理"}
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))


def approve_and_read_ip(as_user, app, headers) -> str:
    """Approve a fresh claim through `app` from socket address 192.0.2.10; the IP its history records."""
    started = start(as_user("suxiaoyun")).json
    task_id = started["current_tasks"][0]["id"]
    app.test_client().post(f"/api/v1/tasks/{task_id}/complete", json={"action": "approve"},
                           headers={**as_user("guoxin").headers, **headers}, environ_base={"REMOTE_ADDR": "192.0.2.10"})
    history = as_user("suxiaoyun").get(f"{START}/{started['id']}/history").json["events"]
    return next(e for e in history if e["type"] == "task.completed")["client_ip"]


def test_forwarded_for_is_believed_only_from_the_configured_proxies(as_user, monkeypatch):
    spoofed = {"X-Forwarded-For": "6.6.6.6"}
    assert approve_and_read_ip(as_user, create_app({"TESTING": True}), spoofed) == "192.0.2.10"  # no proxy
    one_proxy = create_app({"TESTING": True, "TRUSTED_PROXY_HOPS": 1})
    assert approve_and_read_ip(as_user, one_proxy, {"X-Forwarded-For": "6.6.6.6, 10.1.2.3"}) == "10.1.2.3"
    monkeypatch.setenv("FINFLOW_TRUSTED_PROXY_HOPS", "2")
    two_proxies = create_app({"TESTING": True})
    assert approve_and_read_ip(as_user, two_proxies, {"X-Forwarded-For": "6.6.6.6, 10.1.2.3, 10.0.0.1"}) == "10.1.2.3"


def test_search_instances_with_filters_and_pagination(as_user):
    applicant = as_user("suxiaoyun")
    for amount in (100, 200, 300):
        start(applicant, data=claim(amount=amount))
    start(applicant, "payment", payment())
    page = applicant.get("/api/v1/instances?process_key=reimbursement&per_page=2").json
    assert page["meta"]["total"] == 3 and len(page["items"]) == 2
    second = applicant.get("/api/v1/instances?process_key=reimbursement&per_page=2&page=2").json
    assert len(second["items"]) == 1
    assert applicant.get("/api/v1/instances?starter=suxiaoyun&status=running").json["meta"]["total"] == 4
    assert applicant.get("/api/v1/instances?started_from=2100-01-01T00:00:00").json["meta"]["total"] == 0
    assert applicant.get("/api/v1/instances?started_from=2000-01-01T00:00:00%2B08:00").json["meta"]["total"] == 4
    assert applicant.get("/api/v1/instances?started_to=2000-01-01").json["meta"]["total"] == 0
    bad = applicant.get("/api/v1/instances?started_from=yesterday")
    assert bad.status_code == 422 and "started_from" in bad.json["error"]["details"]["fields"]
    assert applicant.get("/api/v1/instances?page=0").status_code == 422
    assert applicant.get("/api/v1/instances?per_page=1000").status_code == 422
    bk = page["items"][0]["business_key"]
    assert [i["business_key"] for i in applicant.get(f"/api/v1/instances?business_key={bk}").json["items"]] == [bk]


def test_data_scope_other_employees_cannot_see_an_instance(as_user):
    iid = start(as_user("suxiaoyun")).json["id"]
    outsider = as_user("tangjie")  # 法务专员, not involved
    hidden = outsider.get(f"/api/v1/instances/{iid}")
    missing = outsider.get(f"/api/v1/instances/{iid[:-4]}0000")
    assert hidden.status_code == missing.status_code == 404  # the same answer: ids cannot be probed
    assert hidden.json["error"]["message"].replace(iid, "?") == missing.json["error"]["message"].replace(
        iid[:-4] + "0000", "?")
    assert outsider.get("/api/v1/instances").json["meta"]["total"] == 0
    assert as_user("fengli").get(f"/api/v1/instances/{iid}").status_code == 200  # auditor
    assert as_user("guoxin").get(f"/api/v1/instances/{iid}").status_code == 200  # approver


def test_withdraw_by_starter_cancels_open_tasks(as_user):
    applicant = as_user("suxiaoyun")
    iid = start(applicant).json["id"]
    assert as_user("guoxin").post(f"{START}/{iid}/withdraw", json={}).status_code == 403
    response = applicant.post(f"{START}/{iid}/withdraw", json={"reason": "填错了"})
    assert response.status_code == 200 and response.json["status"] == "withdrawn"
    assert response.json["current_tasks"] == []
    tasks = applicant.get(f"/api/v1/tasks?instance_id={iid}").json["items"]
    assert [t["status"] for t in tasks] == ["cancelled"]
    again = applicant.post(f"{START}/{iid}/withdraw", json={})
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"
    events = [e["type"] for e in applicant.get(f"{START}/{iid}/history").json["events"]]
    assert events[-2:] == ["task.cancelled", "instance.withdrawn"]


def test_cancel_is_for_admins(as_user):
    iid = start(as_user("suxiaoyun")).json["id"]
    assert as_user("suxiaoyun").post(f"{START}/{iid}/cancel", json={}).status_code == 403
    response = as_user("zhangwei").post(f"{START}/{iid}/cancel", json={"reason": "重复提交"})
    assert response.status_code == 200 and response.json["status"] == "cancelled"


def test_missing_or_bad_token_is_401(app):
    client = app.test_client()
    response = client.get("/api/v1/tasks")
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"
    assert client.get("/api/v1/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/v1/tasks", headers={"Authorization": "Basic abc"}).status_code == 401


def test_only_candidates_may_complete(as_user):
    task = start(as_user("suxiaoyun")).json["current_tasks"][0]
    response = as_user("huangmin").post(f"/api/v1/tasks/{task['id']}/complete", json={"action": "approve"})
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"


def test_completing_twice_is_409_and_unknown_is_404(as_user):
    task = start(as_user("suxiaoyun")).json["current_tasks"][0]
    manager = as_user("guoxin")
    assert manager.post(f"/api/v1/tasks/{task['id']}/complete", json={"action": "approve"}).status_code == 200
    again = manager.post(f"/api/v1/tasks/{task['id']}/complete", json={"action": "approve"})
    assert again.status_code == 409 and again.json["error"]["details"]["status"] == "completed"
    missing = manager.post("/api/v1/tasks/does-not-exist/complete", json={"action": "approve"})
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    assert manager.get("/api/v1/instances/does-not-exist").status_code == 404


@pytest.mark.parametrize(("data", "field"), [
    ({**claim(), "amount": 0}, "amount"),
    ({**claim(), "amount": -5}, "amount"),
    ({**claim(), "amount": "abc"}, "amount"),
    ({**claim(), "amount": None}, "amount"),
    ({**claim(), "category": "旅游"}, "category"),
    ({k: v for k, v in claim().items() if k != "reason"}, "reason"),
    ({**claim(), "invoices": []}, "invoices"),
    ({**claim(), "unexpected": 1}, ""),
])
def test_invalid_start_data_is_422_naming_the_field(as_user, data, field):
    response = start(as_user("suxiaoyun"), data=data)
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "invalid_input" and field in error["details"]["fields"]
    assert as_user("fengli").get("/api/v1/instances").json["meta"]["total"] == 0  # nothing half-written


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"data": {}}, 422, "process_key"),
    ({"process_key": "reimbursement"}, 422, "data"),
    ({"process_key": "reimbursement", "data": "x"}, 422, "data"),
    ({"process_key": 42, "data": {}}, 422, "process_key"),
    ({"process_key": "reimbursement", "data": {}, "extra": True}, 422, "extra"),
])
def test_malformed_start_bodies(as_user, body, status, field):
    response = as_user("suxiaoyun").post(START, json=body)
    assert response.status_code == status and field in response.json["error"]["details"]["fields"]


def test_unknown_process_is_404(as_user):
    response = start(as_user("suxiaoyun"), "no_such_process")
    assert response.status_code == 404 and response.json["error"]["details"]["process_key"] == "no_such_process"


def test_invalid_json_is_400(as_user):
    client = as_user("suxiaoyun")
    for raw in ("{not json", "[1, 2]", '"text"'):
        response = client.post(START, data=raw, content_type="application/json")
        assert response.status_code in (400, 422), raw
        assert response.json["error"]["code"] in ("invalid_json", "invalid_input")
    assert client.post(START, data="{not json", content_type="application/json").status_code == 400


@pytest.mark.parametrize(("body", "field"), [
    ({}, "action"),
    ({"action": "maybe"}, "action"),
    ({"action": "approve", "form_data": {"opinion": 5}}, "opinion"),
    ({"action": "approve", "form_data": {"amount": 1}}, ""),  # approvers cannot rewrite the claim
    ({"action": "approve", "comment": 12}, "comment"),
])
def test_invalid_completion_is_422_and_task_stays_open(as_user, body, field):
    task = start(as_user("suxiaoyun")).json["current_tasks"][0]
    manager = as_user("guoxin")
    response = manager.post(f"/api/v1/tasks/{task['id']}/complete", json=body)
    assert response.status_code == 422 and field in response.json["error"]["details"]["fields"]
    assert manager.get(f"/api/v1/tasks/{task['id']}").json["status"] == "ready"


def test_idempotent_retry_returns_first_result_and_changes_nothing(as_user):
    applicant = as_user("suxiaoyun")
    headers = {"Idempotency-Key": "start-123"}
    body = {"process_key": "reimbursement", "data": claim()}
    first = applicant.post(START, json=body, headers=headers)
    second = applicant.post(START, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json == second.json and second.headers["Idempotent-Replay"] == "true"
    assert applicant.get("/api/v1/instances").json["meta"]["total"] == 1
    reused = applicant.post(START, json={"process_key": "reimbursement", "data": claim(amount=9)}, headers=headers)
    assert reused.status_code == 422 and reused.json["error"]["code"] == "idempotency_key_reused"

    task = first.json["current_tasks"][0]
    manager = as_user("guoxin")
    key = {"Idempotency-Key": "approve-1"}
    one = manager.post(f"/api/v1/tasks/{task['id']}/complete", json={"action": "approve"}, headers=key)
    two = manager.post(f"/api/v1/tasks/{task['id']}/complete", json={"action": "approve"}, headers=key)
    assert one.status_code == two.status_code == 200 and one.json == two.json
    history = applicant.get(f"{START}/{first.json['id']}/history").json["events"]
    assert sum(e["type"] == "task.completed" for e in history) == 1


def test_definitions_list_get_and_download(as_user):
    client = as_user("luyao")
    keys = {d["key"]: d for d in client.get("/api/v1/definitions").json}
    assert set(keys) == {"reimbursement", "payment", "contract"} and keys["payment"]["name"] == "付款申请"
    detail = client.get("/api/v1/definitions/contract").json
    assert [v["version"] for v in detail["versions"]] == [1]
    xml = client.get("/api/v1/definitions/contract/versions/1/bpmn")
    assert xml.status_code == 200 and xml.mimetype == "application/xml" and b"bpmndi:BPMNDiagram" in xml.data
    assert client.get("/api/v1/definitions/contract/versions/9/bpmn").status_code == 404
    assert client.get("/api/v1/definitions/nope").status_code == 404


def test_openapi_document_and_health(app):
    client = app.test_client()
    assert client.get("/api/v1/health").json == {"status": "ok", "database": "ok"}
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.") and "/api/v1/tasks/{task_id}/complete" in spec["paths"]
    configuration = ("/api/v1/event-subscriptions", "/api/v1/tokens", "/api/v1/admin/roles", "/api/v1/admin/users",
                     "/api/v1/me/second-factor")  # settings, each change in the security log
    methods = {m for name, path in spec["paths"].items() for m in path if not name.startswith(configuration)}
    assert not methods & {"put", "patch", "delete"}  # nothing in the API rewrites or deletes history


def test_unknown_route_and_method_are_json_errors(as_user):
    client = as_user("suxiaoyun")
    assert client.get("/api/v1/nothing").json["error"]["code"] == "not_found"
    response = client.client.delete("/api/v1/instances", headers=client.headers)
    assert response.status_code == 405 and response.json["error"]["code"] == "method_not_allowed"


def test_up_writes_a_working_token_for_every_demo_user(app, tmp_path, monkeypatch):
    monkeypatch.setenv("FINFLOW_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli_main, ["up", "--no-serve"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tokens = dict(line.split(" ") for line in (tmp_path / "demo-tokens.txt").read_text(encoding="utf-8").splitlines())
    users = {u["id"]: u.get("active", True) for u in json.loads(DEMO_ORG.read_text(encoding="utf-8"))["users"]}
    assert set(tokens) == {user for user, active in users.items() if active} and len(users) == 38
    client = app.test_client()
    for user, token in tokens.items():  # inactive users get none: a token is never issued to them
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert (me.status_code, me.json.get("id")) == (200, user), user
