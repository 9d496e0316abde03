"""The E9 simulator speaks E9's protocol: a small client in this file plays finflow over real HTTP (RSA
registration, tokens, encrypted userid) against the ESB gateway, the workflow API, its routing, countersigns,
rejections and withdrawals, the faults, the signed node Action callback and the HRM list."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from adapters.oa.simulator import OASimulator, demo_users, demo_workflows
from adapters.oa.simulator.server import sign

CLIENT_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # once: RSA keys take a while
APPLICANT, MANAGER, DIRECTOR, OTHER = "32", "31", "30", "5"  # 苏晓云, 郭鑫, 黄敏, 刘丽


class E9Client:
    """finflow's side of the protocol, just enough of it: regist, applytoken, then business calls."""

    def __init__(self, sim: OASimulator, appid: str = "finflow-demo", timeout: float = 5.0):
        self.sim, self.appid = sim, appid
        self.http = httpx.Client(base_url=sim.url, timeout=timeout)
        self.secret = self.spk = self.token = ""

    def regist(self, cpk: str | None = None) -> dict[str, Any]:
        if cpk is None:
            cpk = base64.b64encode(CLIENT_KEY.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
        answer = self.http.post("/api/ec/dev/auth/regist", headers={"appid": self.appid, "cpk": cpk}).json()
        self.secret, self.spk = answer.get("secret", ""), answer.get("spk", "")
        return answer

    def encrypt(self, text: str) -> str:
        key = serialization.load_der_public_key(base64.b64decode(self.spk))
        return base64.b64encode(key.encrypt(text.encode(), padding.PKCS1v15())).decode()

    def applytoken(self, secret: str | None = None, seconds: int = 1800) -> dict[str, Any]:
        answer = self.http.post("/api/ec/dev/auth/applytoken", headers={
            "appid": self.appid, "secret": self.encrypt(self.secret if secret is None else secret),
            "time": str(seconds)}).json()
        self.token = answer.get("token", "")
        return answer

    def login(self) -> E9Client:
        assert self.regist()["status"] is True and self.applytoken()["status"] is True
        return self

    def headers(self, user: str | None) -> dict[str, str]:
        headers = {"appid": self.appid, "token": self.token}
        return headers if user is None else {**headers, "userid": self.encrypt(user)}

    def post(self, api: str, user: str, **form: Any) -> dict[str, Any]:
        data = {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in form.items()}
        return self.http.post(f"/api/workflow/paService/{api}", headers=self.headers(user), data=data).json()

    def get(self, api: str, user: str, **params: str) -> dict[str, Any]:
        return self.http.get(f"/api/workflow/paService/{api}", headers=self.headers(user), params=params).json()

    def create(self, workflow: str = "101", user: str = APPLICANT, submit: bool = True, **main: str) -> str:
        answer = self.post("doCreateRequest", user, workflowId=workflow, requestName="报销-苏晓云-800",
                           mainData=fields(main), otherParams={"isnextflow": "1" if submit else "0"})
        assert answer["code"] == "SUCCESS", answer
        return str(answer["data"]["requestid"])

    def status(self, request_id: str) -> dict[str, Any]:
        answer = self.get("getRequestStatus", APPLICANT, requestId=request_id)
        assert answer["code"] == "SUCCESS", answer
        return answer["data"]

    def submit(self, request_id: str, user: str, **main: str) -> dict[str, Any]:
        form: dict[str, Any] = {"requestId": request_id, "remark": "同意"}
        return self.post("submitRequest", user, **form, **({"mainData": fields(main)} if main else {}))

    def reject(self, request_id: str, user: str, to_node: str | None = None) -> dict[str, Any]:
        other = {"otherParams": {"RejectToNodeid": to_node}} if to_node else {}
        return self.post("rejectRequest", user, requestId=request_id, remark="退回", **other)


def fields(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"fieldName": k, "fieldValue": v} for k, v in values.items()]


@pytest.fixture
def sim() -> Iterator[OASimulator]:
    simulator = OASimulator()
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def e9(sim) -> E9Client:
    return E9Client(sim).login()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[bytes, dict[str, str]]]]]:
    """A tiny finflow: records what the node Action POSTs and answers 200."""
    received: list[tuple[bytes, dict[str, str]]] = []

    def app(environ, start_response):
        request = Request(environ)
        received.append((request.get_data(), dict(request.headers)))
        return Response('{"code":"SUCCESS"}', content_type="application/json")(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/oa/callback", received
    server.shutdown()
    server.server_close()


# -- ESB authentication --------------------------------------------------------------------------------
def test_regist_and_applytoken_hand_out_a_stable_secret_and_a_token(sim):
    client = E9Client(sim)
    first = client.regist()
    assert first["status"] is True and first["code"] == 0 and first["secret"] == first["secrit"]
    assert client.regist()["secret"] == first["secret"]  # the same secret on every regist
    serialization.load_der_public_key(base64.b64decode(first["spk"]))
    token = client.applytoken()
    assert token["status"] is True and token["msg"] == "获取成功!" and token["token"]
    assert client.get("getRequestStatus", APPLICANT, requestId="1")["code"] == "PARAM_ERROR"  # let in


def test_the_gateway_refuses_unknown_apps_bad_keys_wrong_secrets_and_users(sim):
    stranger = E9Client(sim, appid="nobody")
    assert stranger.regist() == {"status": False, "code": -1, "msg": "许可证号码未注册"}
    client = E9Client(sim)
    assert client.regist(cpk="not base64!")["msg"] == "cpk 不能为空或格式错误"
    assert client.regist(cpk="")["msg"] == "cpk 不能为空或格式错误"
    client.regist()
    assert client.applytoken(secret="wrong")["msg"] == "认证信息错误！"
    stranger.spk = client.spk
    assert stranger.applytoken(secret=client.secret)["msg"] == "许可证号码未注册"
    client.applytoken()
    assert client.get("getRequestStatus", "9999", requestId="1")["msg"] == "userid 解密失败或用户不存在"
    garbled = client.http.get("/api/workflow/paService/getRequestStatus", params={"requestId": "1"},
                              headers={**client.headers(None), "userid": base64.b64encode(b"x" * 256).decode()})
    assert garbled.json()["msg"] == "userid 解密失败或用户不存在"


def test_expired_and_unknown_tokens_are_refused(sim, e9):
    request_id = e9.create()
    sim.expire_tokens()
    answer = e9.get("getRequestStatus", APPLICANT, requestId=request_id)
    assert answer == {"status": False, "code": -1, "msgShowType": "none", "msg": f"token不存在或者超时：{e9.token}"}
    e9.applytoken()
    assert e9.status(request_id)["currentnodeid"] == "1011"
    e9.token = "made-up"
    assert e9.get("getRequestStatus", APPLICANT, requestId=request_id)["msg"] == "token不存在或者超时：made-up"


def test_a_short_lived_token_expires(sim):
    client = E9Client(sim)
    client.regist()
    client.applytoken(seconds=1)
    assert client.get("getRequestStatus", APPLICANT, requestId="1")["code"] == "PARAM_ERROR"
    time.sleep(1.1)
    assert "token不存在或者超时" in client.get("getRequestStatus", APPLICANT, requestId="1")["msg"]


# -- creating, routing, countersigning ---------------------------------------------------------------------
def test_a_created_request_is_submitted_to_the_first_approver_and_logged(sim, e9):
    request_id = e9.create(bxje="800", sqr="苏晓云")
    assert int(request_id) > 1000
    status = e9.status(request_id)
    assert (status["currentnodeid"], status["currentnodename"], status["currentnodetype"], status["status"]) == \
        ("1011", "直属上级审批", "1", "审批中")
    assert status["workflowid"] == "101" and status["creatorid"] == APPLICANT and status["signed"] == []
    logs = e9.get("getWorkflowRequestLogs", APPLICANT, requestId=request_id)["data"]
    assert [(e["nodeid"], e["logtype"], e["logtypename"], e["operatorid"], e["operatorname"]) for e in logs] == \
        [("1010", "2", "提交", APPLICANT, "苏晓云")]
    assert len(logs[0]["operatedate"]) == 10 and len(logs[0]["operatetime"]) == 8
    assert sim.request(request_id)["main"]["bxje"] == "800"


def test_a_saved_request_waits_at_the_create_node_for_its_creator(sim, e9):
    details = [{"tableDBName": "formtable_main_101_dt1", "workflowRequestTableRecords": [
        {"recordOrder": 0, "workflowRequestTableFields": [{"fieldName": "je", "fieldValue": "100"}]}]}]
    answer = e9.post("doCreateRequest", APPLICANT, workflowId="101", requestName="草稿", mainData=fields({}),
                     detailData=details, otherParams={"isnextflow": "0"})
    request_id = str(answer["data"]["requestid"])
    assert sim.node_of(request_id) == "1010" and sim.logs(request_id)[0]["logtype"] == "1"
    assert sim.request(request_id)["details"] == {"formtable_main_101_dt1": [{"je": "100"}]}
    assert e9.submit(request_id, MANAGER)["code"] == "NO_PERMISSION"  # only the creator, at the create node
    assert e9.submit(request_id, APPLICANT)["code"] == "SUCCESS"
    assert sim.node_of(request_id) == "1011" and sim.logs(request_id)[-1]["logtype"] == "2"


def test_exits_route_by_the_main_fields_updated_at_submit(sim, e9):
    short = e9.create(xyfzr="0", xycwzj="0")
    assert e9.submit(short, MANAGER)["code"] == "SUCCESS" and sim.node_of(short) == "1014"
    long = e9.create(xyfzr="0", xycwzj="0")
    e9.submit(long, MANAGER, xyfzr="1")
    assert sim.node_of(long) == "1012"
    e9.submit(long, DIRECTOR, xycwzj="1")
    assert sim.node_of(long) == "1013"
    for node in ("1014", "1015"):
        e9.submit(long, OTHER)
        assert sim.node_of(long) == node
    e9.submit(long, OTHER)
    status = e9.status(long)
    assert (status["currentnodeid"], status["currentnodetype"], status["status"]) == ("1019", "3", "已归档")
    assert [e["logtype"] for e in sim.logs(long)] == ["2", "0", "0", "0", "0", "0"]
    assert e9.submit(long, OTHER)["code"] == "PARAM_ERROR"  # archived
    logids = [int(e["logid"]) for e in sim.logs(long)]
    assert logids == sorted(set(logids))


def test_numbers_compare_as_numbers_and_operators_are_enforced(sim):
    workflow = {"id": "900", "name": "测试", "fields": ["je"], "detail_tables": [], "creators": [APPLICANT],
                "nodes": [{"id": "9000", "name": "申请人", "type": "create"},
                          {"id": "9001", "name": "审批", "type": "approve", "operators": [MANAGER],
                           "exits": [{"to": "9002", "field": "je", "op": ">", "value": "5000"}, {"to": "9003"}]},
                          {"id": "9002", "name": "大额", "type": "approve"},
                          {"id": "9003", "name": "小额", "type": "approve"},
                          {"id": "9009", "name": "归档", "type": "archive"}]}
    custom = OASimulator([workflow], demo_users())
    custom.start()
    try:
        e9 = E9Client(custom).login()
        refused = e9.post("doCreateRequest", OTHER, workflowId="900", requestName="x", mainData=fields({}))
        assert refused["code"] == "NO_PERMISSION" and refused["errMsg"]["msg"]
        assert set(refused["reqFailMsg"]) == {"keyParameters", "msgInfo", "otherParams"}
        large, small = e9.create("900", je="10000.00"), e9.create("900", je="900")  # "900" > "5000" as text
        assert e9.submit(large, OTHER)["code"] == "NO_PERMISSION"  # not an operator of 9001
        assert e9.reject(large, OTHER)["code"] == "NO_PERMISSION"
        assert e9.submit(large, MANAGER)["code"] == "SUCCESS" and custom.node_of(large) == "9002"
        assert e9.submit(small, MANAGER)["code"] == "SUCCESS" and custom.node_of(small) == "9003"
        e9.submit(small, OTHER)
        assert custom.request(small)["status"] == "已归档"  # no exits: the next node in the list
    finally:
        custom.stop()


def test_a_countersign_node_waits_for_distinct_signers(sim, e9):
    request_id = e9.create("103", hqrs="1")
    assert sim.node_of(request_id) == "1031"
    first = e9.submit(request_id, "10")
    assert first["code"] == "SUCCESS" and sim.node_of(request_id) == "1031"
    assert e9.status(request_id)["signed"] == ["10"]
    again = e9.submit(request_id, "10")
    assert again["code"] == "NO_PERMISSION" and e9.status(request_id)["signed"] == ["10"]
    assert e9.submit(request_id, "5")["code"] == "SUCCESS"
    assert sim.node_of(request_id) == "1032" and e9.status(request_id)["signed"] == []
    e9.submit(request_id, "12")  # hqrs = 1: one signer is enough
    assert sim.node_of(request_id) == "1033"


def test_a_countersign_needing_nobody_is_passed_through(sim, e9):
    request_id = e9.create("103", hqrs="0")
    e9.submit(request_id, "10")
    e9.submit(request_id, "5")
    assert sim.node_of(request_id) == "1033"
    grown = e9.create("103", hqrs="0")
    e9.submit(grown, "10")
    e9.submit(grown, "5", hqrs="2")  # the count as of the submission that leaves 1031
    assert sim.node_of(grown) == "1032" and sim.request(grown)["signers_needed"] == 2


# -- rejecting, withdrawing, archiving ------------------------------------------------------------------------
def test_reject_to_a_node_or_to_the_create_node(sim, e9):
    request_id = e9.create()
    e9.submit(request_id, MANAGER)
    assert sim.node_of(request_id) == "1014"
    assert e9.reject(request_id, OTHER, to_node="1099")["code"] == "PARAM_ERROR"
    assert e9.reject(request_id, OTHER, to_node="1011")["code"] == "SUCCESS"
    assert sim.node_of(request_id) == "1011"
    assert e9.reject(request_id, MANAGER)["code"] == "SUCCESS"
    assert sim.node_of(request_id) == "1010" and e9.status(request_id)["currentnodetype"] == "0"
    assert e9.reject(request_id, APPLICANT)["code"] == "NO_PERMISSION"  # the create node cannot be rejected
    assert [(e["nodeid"], e["logtype"], e["logtypename"]) for e in sim.logs(request_id)][-2:] == \
        [("1014", "3", "退回"), ("1011", "3", "退回")]
    e9.submit(request_id, APPLICANT)
    assert sim.node_of(request_id) == "1011"


def test_only_the_creator_draws_a_request_back_and_force_over_archives(sim, e9):
    request_id = e9.create()
    assert e9.post("doForceDrawBack", MANAGER, requestId=request_id)["code"] == "NO_PERMISSION"
    assert e9.post("doForceDrawBack", APPLICANT, requestId=request_id, remark="不报了")["code"] == "SUCCESS"
    status = e9.status(request_id)
    assert (status["currentnodeid"], status["status"]) == ("1010", "已收回")
    assert sim.logs(request_id)[-1]["logtype"] == "x" and sim.logs(request_id)[-1]["remark"] == "不报了"
    assert e9.submit(request_id, APPLICANT)["code"] == "PARAM_ERROR"
    assert e9.reject(request_id, MANAGER)["code"] == "PARAM_ERROR"
    other = e9.create()
    for _ in range(2):  # idempotent
        assert e9.post("doForceOver", OTHER, requestId=other)["code"] == "SUCCESS"
    status = e9.status(other)
    assert (status["currentnodeid"], status["status"], status["currentnodetype"]) == ("1019", "已归档", "3")
    assert [e["logtype"] for e in sim.logs(other)] == ["2", "e"]
    assert e9.post("doForceDrawBack", APPLICANT, requestId=other)["code"] == "PARAM_ERROR"


def test_bad_parameters_are_param_errors(sim, e9):
    def create(**form: Any) -> dict[str, Any]:
        return e9.post("doCreateRequest", APPLICANT, **{"workflowId": "101", "requestName": "x",
                                                        "mainData": fields({}), **form})

    assert create(workflowId="999")["code"] == "PARAM_ERROR"
    unknown = create(mainData=fields({"nosuch": "1"}))
    assert unknown["code"] == "PARAM_ERROR" and "nosuch" in unknown["errMsg"]["msg"]
    assert create(mainData="not json")["code"] == "PARAM_ERROR"
    assert create(mainData={"sqr": "x"})["code"] == "PARAM_ERROR"
    assert create(requestName="")["code"] == "PARAM_ERROR"
    assert create(detailData=[{"tableDBName": "nosuch", "workflowRequestTableRecords": []}])["code"] == "PARAM_ERROR"
    assert create()["code"] == "SUCCESS"
    assert e9.get("getRequestStatus", APPLICANT, requestId="42")["code"] == "PARAM_ERROR"
    assert e9.get("getWorkflowRequestLogs", APPLICANT, requestId="abc")["code"] == "PARAM_ERROR"
    request_id = e9.create()
    assert e9.submit(request_id, MANAGER, nosuch="1")["code"] == "PARAM_ERROR"
    assert sim.node_of(request_id) == "1011"  # a refused submit changes nothing


# -- faults ------------------------------------------------------------------------------------------------
def test_faults_answer_as_a_broken_oa_would(sim, e9):
    request_id = e9.create()
    url, headers = f"{sim.url}/api/workflow/paService/getRequestStatus", e9.headers(APPLICANT)

    def call() -> httpx.Response:
        return httpx.get(url, params={"requestId": request_id}, headers=headers, timeout=2)

    sim.fault("http500", api="getRequestStatus")
    assert call().status_code == 500
    sim.fault("html")
    broken = call()
    assert broken.status_code == 502 and "<html>" in broken.text
    sim.fault("token_expired")
    assert "token不存在或者超时" in call().json()["msg"]
    for kind, code in (("param_error", "PARAM_ERROR"), ("no_permission", "NO_PERMISSION")):
        sim.fault(kind, api="getRequestStatus")
        assert call().json()["code"] == code
    sim.fault("http500", api="submitRequest")
    assert call().json()["code"] == "SUCCESS"  # another api's fault
    sim.fault("down", api="getRequestStatus")
    with pytest.raises(httpx.RemoteProtocolError):
        call()
    sim.clear_faults()
    sim.fault_for("http500", 60)
    assert [call().status_code for _ in range(3)] == [500, 500, 500]
    sim.clear_faults()
    assert call().json()["code"] == "SUCCESS"
    assert sim.calls_to("getRequestStatus") >= 10
    api, params, sent = sim.calls[-1]
    assert api == "getRequestStatus" and params == {"requestId": request_id} and sent["appid"] == "finflow-demo"


def test_a_timeout_applies_nothing_and_an_applied_timeout_applies_the_call(sim, e9):
    request_id = e9.create()
    quick = E9Client(sim, timeout=1.0)
    quick.secret, quick.spk, quick.token = e9.secret, e9.spk, e9.token
    sim.fault("timeout", api="submitRequest")
    with pytest.raises(httpx.ReadTimeout):
        quick.submit(request_id, MANAGER)
    assert sim.node_of(request_id) == "1011"
    sim.fault("applied_timeout", api="submitRequest")
    with pytest.raises(httpx.ReadTimeout):
        quick.submit(request_id, MANAGER)
    assert sim.node_of(request_id) == "1014"  # OA did it; the caller never heard
    assert [e["logtype"] for e in sim.logs(request_id)] == ["2", "0"]


# -- the node Action callback ------------------------------------------------------------------------------
def test_a_decision_in_oa_is_a_signed_callback_and_a_replay_is_the_same_bytes(sim, e9, receiver):
    url, received = receiver
    sim.callback_url = url
    request_id = e9.create()
    answer = sim.act(request_id, MANAGER, "submit", "同意，OA 中")
    assert answer["code"] == "SUCCESS" and answer["callback"]["status"] == 200
    assert answer["callback"]["text"] == '{"code":"SUCCESS"}'
    body, headers = received[0]
    stamp = headers["X-Oa-Timestamp"]
    expected = hmac.new(b"demo-oa-callback-secret", stamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()
    assert headers["X-Oa-Signature"] == expected == sign("demo-oa-callback-secret", stamp, body)
    assert abs(int(stamp) - time.time()) < 5 and headers["Content-Type"] == "application/json"
    logid = sim.logs(request_id)[-1]["logid"]
    assert json.loads(body) == {"requestid": request_id, "workflowid": "101", "nodeid": "1011",
                                "nodename": "直属上级审批", "operator": MANAGER, "action": "submit",
                                "remark": "同意，OA 中", "logid": logid, "currentnodeid": "1014"}
    assert "OA 中".encode() in body and b", " not in body  # UTF-8, compact
    assert sim.replay(answer["callback"]["response"]).status_code == 200
    assert received[1] == received[0]
    rejected = sim.act(request_id, OTHER, "reject", to_node="1011")
    assert rejected["code"] == "SUCCESS" and json.loads(received[2][0])["currentnodeid"] == "1011"
    assert sim.act(request_id, MANAGER, "submit", notify=False)["code"] == "SUCCESS" and len(received) == 3
    anyone = sim.act(request_id, APPLICANT, "reject")  # operators None: any OA user may act at 1014
    assert anyone["code"] == "SUCCESS" and len(received) == 4 and sim.node_of(request_id) == "1010"
    assert sim.act(request_id, MANAGER, "reject")["code"] == "NO_PERMISSION" and len(received) == 4


def test_api_decisions_fire_the_callback_in_the_background(sim, e9, receiver):
    url, received = receiver
    sim.callback_url = url
    request_id = e9.create()
    assert received == []  # creating is not a node Action
    assert e9.submit(request_id, MANAGER)["code"] == "SUCCESS"
    deadline = time.monotonic() + 5
    while (sim.callbacks_in_flight() or not received) and time.monotonic() < deadline:
        time.sleep(0.02)
    payload = json.loads(received[0][0])
    assert (payload["action"], payload["operator"], payload["nodeid"], payload["currentnodeid"]) == \
        ("submit", MANAGER, "1011", "1014")
    assert sim.callbacks[0]["status"] == 200
    sim.notify_api_decisions = False
    e9.reject(request_id, OTHER)
    time.sleep(0.1)
    assert len(received) == 1


def test_forged_callbacks_and_an_unreachable_finflow(sim, e9, receiver):
    url, received = receiver
    sim.callback_url = url
    sim.send_callback({"requestid": "1"}, timestamp=1000, secret="forged")
    body, headers = received[0]
    assert headers["X-Oa-Timestamp"] == "1000" and headers["X-Oa-Signature"] == sign("forged", "1000", body)
    sim.callback_url = "http://127.0.0.1:9/oa/callback"  # nobody listens
    answer = sim.act(e9.create(), MANAGER, "submit")
    assert answer["code"] == "SUCCESS" and "ConnectError" in answer["callback"]["error"]
    assert sim.callbacks[-1]["error"] == answer["callback"]["error"]


# -- HRM and the page ----------------------------------------------------------------------------------------
def test_hrm_lists_the_users_a_page_at_a_time(sim, e9):
    users = demo_users()

    def page(number: int, size: int, user: str | None = None) -> dict[str, Any]:
        return e9.http.post("/api/hrm/resful/getHrmUserInfoWithPage", headers=e9.headers(user),
                            json={"params": {"curpage": number, "pagesize": size}}).json()

    first = page(1, 10, APPLICANT)
    assert first["code"] == "1" and first["data"]["totalSize"] == len(users)
    assert (first["data"]["page"], first["data"]["pageSize"]) == (1, 10)
    assert first["data"]["dataList"][0] == users[0] == {"id": "1", "loginid": "wangjianguo", "lastname": "王建国",
                                                        "departmentname": "总经办", "status": "1"}
    last = page(4, 10)["data"]["dataList"]  # without a userid header, as finflow's client calls it
    assert [u["id"] for u in last] == [u["id"] for u in users[30:40]]
    assert page(99, 10)["data"]["dataList"] == []
    assert any(u["status"] == "5" for u in users) and users[-1]["id"] == str(len(users))
    sim.expire_tokens()
    assert "token不存在或者超时" in page(1, 10)["msg"]


def test_the_page_lists_requests_and_approves_in_oa(sim, e9):
    request_id = e9.create()
    e9.post("doCreateRequest", APPLICANT, workflowId="102", requestName="<script>x</script>", mainData=fields({}))
    page = httpx.get(f"{sim.url}/")
    assert page.status_code == 200 and "泛微 E9 模拟器 · finflow 演示" in page.text
    assert "直属上级审批" in page.text and "苏晓云" in page.text and "http-equiv=refresh content=5" in page.text
    assert "<script>x" not in page.text and "&lt;script&gt;x" in page.text
    assert page.text.index(">报销-苏晓云-800<") > page.text.index("&lt;script&gt;")  # newest first
    pressed = httpx.post(f"{sim.url}/_sim/act", data={"request_id": request_id, "operator": MANAGER,
                                                      "action": "submit", "remark": "页面批准"})
    assert pressed.status_code == 303 and pressed.headers["Location"].startswith("/?msg=")
    assert sim.node_of(request_id) == "1014" and sim.logs(request_id)[-1]["remark"] == "页面批准"
    listed = httpx.get(f"{sim.url}/_sim/requests").json()
    assert [r["requestid"] for r in listed] == [request_id, str(int(request_id) + 1)]
    assert listed[0]["currentnodeid"] == "1014"


def test_the_demo_workflows_carry_the_ids_the_mapping_files_use():
    workflows = {w["id"]: w for w in demo_workflows()}
    assert [n["id"] for n in workflows["101"]["nodes"]] == ["1010", "1011", "1012", "1013", "1014", "1015", "1019"]
    assert [n["id"] for n in workflows["102"]["nodes"]] == ["1020", "1021", "1022", "1023", "1024", "1029"]
    assert [n["id"] for n in workflows["103"]["nodes"]] == ["1030", "1031", "1032", "1033", "1034", "1035", "1039"]
    assert workflows["101"]["detail_tables"] == ["formtable_main_101_dt1"]
