"""The simulated 泛微 e-cology E9: a real HTTP server on 127.0.0.1 with E9's REST endpoints, shapes and codes.

ESB authentication: POST /api/ec/dev/auth/regist (headers appid, cpk → secret and the server's public key spk)
and /api/ec/dev/auth/applytoken (the secret RSA-encrypted with spk → a token that expires); every other call
carries appid, token and the RSA-encrypted OA userid (PKCS#1 v1.5, keys base64 DER, as E9's Java side uses).
Workflow, under /api/workflow/paService/: doCreateRequest, submitRequest, rejectRequest, doForceDrawBack,
doForceOver (POST, form-encoded, JSON-valued fields as JSON strings), getRequestStatus and
getWorkflowRequestLogs (GET). HRM: POST /api/hrm/resful/getHrmUserInfoWithPage.

Behind them an OA in memory: workflows of nodes with conditional exits and countersign nodes (see demo.py),
requests and their logs. A decision — through the API, or by a person in OA (`act`, or the page at `/`) —
runs the node Action: a JSON callback to finflow signed with HMAC-SHA256 (`sign`). For tests and the demo:
`fault` (http500, html, timeout, token_expired, param_error, no_permission, applied_timeout, down), `calls`
(what finflow asked), `expire_tokens`, `send_callback` / `replay` (forged or repeated callbacks), and
GET /_sim/requests, POST /_sim/act, POST /_sim/faults for scripts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import operator
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from adapters.simulators import FaultPlan

OPEN, ARCHIVED, WITHDRAWN = "审批中", "已归档", "已收回"
NODE_TYPES = {"create": "0", "approve": "1", "submit": "2", "archive": "3"}
LOG_TYPES = {"0": "批准", "1": "保存", "2": "提交", "3": "退回", "x": "强制收回", "e": "强制归档"}
PARAM, NO_PERMISSION = "PARAM_ERROR", "NO_PERMISSION"
UNREGISTERED = "许可证号码未注册"
BAD_USERID = "userid 解密失败或用户不存在"
BUSINESS_PREFIX = "/api/workflow/paService/"
HRM_USERS = "/api/hrm/resful/getHrmUserInfoWithPage"
TOKEN_TTL = 1800
FIRST_REQUEST_ID = 1000  # the first request is 1001
HANG_SECONDS = 15  # longer than any client's read timeout
OPS = {"==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt,
       "<=": operator.le}


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # finflow's own logs say what matters
        pass


class _Refused(Exception):
    """A business refusal (PARAM_ERROR, NO_PERMISSION …), raised deep in the rules and answered at the top."""

    def __init__(self, code: str, msg: str):
        super().__init__(msg)
        self.code, self.msg = code, msg


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """The node Action's signature: hex HMAC-SHA256 with the shared secret over "<timestamp>\\n<body>"."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"\n" + body, hashlib.sha256).hexdigest()


def _success(data: Any) -> dict[str, Any]:
    return {"code": "SUCCESS", "data": data, "errMsg": {}}


def _failure(code: str, msg: str) -> dict[str, Any]:
    return {"code": code, "errMsg": {"msg": msg}, "reqFailMsg": {"keyParameters": {}, "msgInfo": {}, "otherParams": {}}}


def _esb_error(msg: str) -> dict[str, Any]:
    """The ESB gateway refusing a call before any business code runs."""
    return {"status": False, "code": -1, "msg": msg}


def _token_refused(token: str) -> dict[str, Any]:
    return {"status": False, "code": -1, "msgShowType": "none", "msg": f"token不存在或者超时：{token}"}


@dataclass
class _Request:
    id: int
    workflow: dict[str, Any]
    name: str
    creator: str
    main: dict[str, str]
    details: dict[str, list[dict[str, str]]]
    node: str
    signed: list[str] = field(default_factory=list)  # distinct, in signing order, this node visit only
    status: str = OPEN
    logs: list[dict[str, str]] = field(default_factory=list)
    updated: float = field(default_factory=time.time)


class OASimulator:
    def __init__(self, workflows: list[dict[str, Any]] | None = None, users: list[dict[str, Any]] | None = None, *,
                 appid: str = "finflow-demo", callback_url: str | None = None,
                 callback_secret: str = "demo-oa-callback-secret", notify_api_decisions: bool = True,
                 token_ttl: int = TOKEN_TTL, host: str = "127.0.0.1", port: int = 0):
        from adapters.oa.simulator.demo import demo_users, demo_workflows

        self.workflows = workflows if workflows is not None else demo_workflows()
        self.users = users if users is not None else demo_users()
        self.appid, self.callback_url, self.callback_secret = appid, callback_url, callback_secret
        self.notify_api_decisions, self.token_ttl = notify_api_decisions, token_ttl
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.spk = base64.b64encode(self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
        self.secret = str(uuid.uuid4())  # what regist hands out for `appid`, every time
        self.cpks: dict[str, str] = {}
        self.lock = threading.RLock()
        self._last_request_id, self._last_log_id, self._in_flight = FIRST_REQUEST_ID, 0, 0
        self.clear()
        self._stopping = threading.Event()
        self.server = make_server(host, port, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://{host}:{self.server.server_port}"
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> str:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="oa-simulator")  # a short poll: stop() is quick
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Cut hanging faults short and close the port (shutdown only when start() served: it would wait)."""
        self._stopping.set()
        if self._thread is not None:
            self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        """Forget requests, tokens, calls, faults and callbacks. The registration secret and the id counters
        stay: finflow may still hold a cached secret, and a reused request id would alias an old twin."""
        with self.lock:
            self.tokens: dict[str, tuple[str, float]] = {}  # token → (appid, expires at)
            self._requests: dict[int, _Request] = {}
            self.calls: list[tuple[str, dict[str, Any], dict[str, str]]] = []
            self.faults = FaultPlan()
            self.callbacks: list[dict[str, Any]] = []  # every node Action call: payload and outcome

    # -- what tests and the demo read ---------------------------------------------------------------
    def calls_to(self, api: str) -> int:
        with self.lock:
            return sum(1 for name, _, _ in self.calls if name == api)

    def requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._view(r) for r in self._requests.values()]

    def request(self, request_id: str | int) -> dict[str, Any] | None:
        with self.lock:
            found = self._find(request_id)
            return self._view(found) if found else None

    def node_of(self, request_id: str | int) -> str:
        with self.lock:
            found = self._find(request_id)
            if found is None:
                raise KeyError(f"no OA request {request_id}")
            return found.node

    def logs(self, request_id: str | int) -> list[dict[str, str]]:
        with self.lock:
            found = self._find(request_id)
            return [dict(entry) for entry in found.logs] if found else []

    def callbacks_in_flight(self) -> int:
        """Node Action calls still running in the background (tests wait for finflow's answers)."""
        with self.lock:
            return self._in_flight

    def user(self, oa_user_id: str) -> dict[str, Any] | None:
        return next((u for u in self.users if str(u["id"]) == str(oa_user_id)), None)

    def workflow(self, workflow_id: str) -> dict[str, Any] | None:
        return next((w for w in self.workflows if str(w["id"]) == str(workflow_id)), None)

    def _view(self, request: _Request) -> dict[str, Any]:
        node = _node(request.workflow, request.node)
        return {"requestid": str(request.id), "workflowid": str(request.workflow["id"]),
                "workflowname": request.workflow["name"], "requestname": request.name,
                "creatorid": request.creator, "creatorname": self._name(request.creator),
                "currentnodeid": request.node, "currentnodename": node["name"],
                "currentnodetype": NODE_TYPES[node["type"]], "status": request.status, "signed": list(request.signed),
                "signers_needed": _needed(node, request.main), "main": dict(request.main),
                "details": {table: [dict(row) for row in rows] for table, rows in request.details.items()},
                "lastoperatedatetime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(request.updated))}

    def _name(self, oa_user_id: str) -> str:
        found = self.user(oa_user_id)
        return found["lastname"] if found else ""

    def _find(self, request_id: str | int | None) -> _Request | None:
        text = str(request_id or "").strip()
        return self._requests.get(int(text)) if text.isdigit() else None

    # -- faults -------------------------------------------------------------------------------------
    def fault(self, kind: str, times: int = 1, api: str | None = None) -> None:
        """The next `times` calls (to `api`, the last path segment, or any) fail as `kind`: http500, html,
        timeout, token_expired, param_error, no_permission, applied_timeout or down."""
        self.faults.add(kind, times, api)

    def fault_for(self, kind: str, seconds: float, api: str | None = None) -> None:
        self.faults.add_for(kind, seconds, api)

    def clear_faults(self) -> None:
        self.faults.clear()

    def _faulty(self, kind: str, headers: dict[str, str]) -> Response | None:
        if kind == "http500":
            return Response("Internal Server Error", 500, content_type="text/plain; charset=utf-8")
        if kind == "html":
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", 502, content_type="text/html")
        if kind == "timeout":
            return self._hang()
        if kind == "token_expired":
            return _json(_token_refused(headers.get("token", "")))
        if kind == "param_error":
            return _json(_failure(PARAM, "模拟故障：参数错误"))
        if kind == "no_permission":
            return _json(_failure(NO_PERMISSION, "模拟故障：没有权限"))
        return None

    def _hang(self) -> Response:
        self._stopping.wait(HANG_SECONDS)  # stop() cuts it short
        return Response("Gateway Timeout", 504, content_type="text/plain; charset=utf-8")

    # -- ESB authentication -------------------------------------------------------------------------
    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on (E9 answers "token不存在或者超时")."""
        with self.lock:
            self.tokens = {t: (appid, 0.0) for t, (appid, _) in self.tokens.items()}

    def _regist(self, headers: dict[str, str]) -> dict[str, Any]:
        if headers.get("appid") != self.appid:
            return _esb_error(UNREGISTERED)
        cpk = headers.get("cpk", "")
        try:
            serialization.load_der_public_key(base64.b64decode(cpk, validate=True))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return _esb_error("cpk 不能为空或格式错误")
        self.cpks[self.appid] = cpk
        return {"status": True, "code": 0, "msg": "ok", "msgShowType": "none", "secrit": self.secret,
                "secret": self.secret, "spk": self.spk}

    def _applytoken(self, headers: dict[str, str]) -> dict[str, Any]:
        if headers.get("appid") != self.appid:
            return _esb_error(UNREGISTERED)
        if self._decrypt(headers.get("secret", "")) != self.secret:
            return _esb_error("认证信息错误！")
        asked = headers.get("time", "")
        seconds = min(int(asked) if asked.isdigit() and int(asked) > 0 else TOKEN_TTL, self.token_ttl)
        token = str(uuid.uuid4())
        self.tokens[token] = (self.appid, time.time() + seconds)
        return {"status": True, "code": 0, "msg": "获取成功!", "msgShowType": "none", "token": token}

    def _decrypt(self, text: str) -> str | None:
        """A header the client RSA-encrypted with spk, or None when it is not (E9 cannot tell why either)."""
        try:
            return self._key.decrypt(base64.b64decode(text, validate=True), padding.PKCS1v15()).decode()
        except (ValueError, TypeError):  # bad base64, bad padding, not UTF-8
            return None

    def _caller(self, headers: dict[str, str], *, need_user: bool = True) -> tuple[str, dict[str, Any] | None]:
        """The acting OA user of a call, or the ESB's refusal (unknown/expired token, bad userid)."""
        token = headers.get("token", "")
        issued = self.tokens.get(token)
        if issued is None or issued[0] != headers.get("appid") or issued[1] < time.time():
            return "", _token_refused(token)
        if "userid" not in headers and not need_user:
            return "", None
        user = self._decrypt(headers.get("userid", ""))
        if user is None or self.user(user) is None:
            return "", _esb_error(BAD_USERID)
        return user, None

    # -- the workflow rules (called with the lock held) ---------------------------------------------
    def _create(self, user: str, params: dict[str, str]) -> dict[str, Any]:
        workflow = self.workflow(params.get("workflowId", ""))
        if workflow is None:
            raise _Refused(PARAM, f"流程不存在：workflowId={params.get('workflowId', '')}")
        name = (params.get("requestName") or "").strip()
        if not name:
            raise _Refused(PARAM, "requestName 不能为空")
        main = _main_data(params.get("mainData"), workflow, required=True)
        details = _detail_data(params.get("detailData"), workflow)
        submit = str(_json_object(params.get("otherParams")).get("isnextflow", "1")) == "1"
        if workflow.get("creators") is not None and user not in [str(c) for c in workflow["creators"]]:
            raise _Refused(NO_PERMISSION, "当前用户没有创建该流程的权限")
        self._last_request_id += 1
        create = _create_node(workflow)
        request = _Request(self._last_request_id, workflow, name, user, main, details, create["id"])
        self._requests[request.id] = request
        self._log(request, create, user, "2" if submit else "1", params.get("remark", ""))
        if submit:
            self._route_on(request, create)
        return {"requestid": request.id}

    def _decide(self, user: str, request_id: str | int, action: str, remark: str, *, main: str | None = None,
                other: str | None = None, to_node: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """submit or reject, from the API or from a person in OA: the business answer and the payload of the
        node Action callback (None when refused)."""
        with self.lock:
            try:
                request = self._open(request_id)
                node = _node(request.workflow, request.node)
                if action == "submit":
                    entry = self._approve(request, node, user, _main_data(main, request.workflow), remark)
                else:
                    target = to_node or _json_object(other).get("RejectToNodeid")
                    entry = self._send_back(request, node, user, str(target or ""), remark)
            except _Refused as refused:
                return _failure(refused.code, refused.msg), None
            payload = {"requestid": str(request.id), "workflowid": str(request.workflow["id"]), "nodeid": node["id"],
                       "nodename": node["name"], "operator": user, "action": action, "remark": remark,
                       "logid": entry["logid"], "currentnodeid": request.node}
            return _success({}), payload

    def _approve(self, request: _Request, node: dict[str, Any], user: str, main: dict[str, str],
                 remark: str) -> dict[str, str]:
        self._may_act(request, node, user)
        request.main.update(main)  # before the exits are evaluated: finflow writes the flags it routes by
        entry = self._log(request, node, user, "2" if node["type"] == "create" else "0", remark)
        request.signed.append(user)
        if len(request.signed) >= _needed(node, request.main):
            self._route_on(request, node)
        return entry

    def _send_back(self, request: _Request, node: dict[str, Any], user: str, target_id: str,
                   remark: str) -> dict[str, str]:
        target = _node(request.workflow, target_id) if target_id else _create_node(request.workflow)
        if target is None or target["type"] == "archive":
            raise _Refused(PARAM, f"退回的目标节点不存在：{target_id}")
        if node["type"] == "create":
            raise _Refused(NO_PERMISSION, "创建节点不能退回")
        self._may_act(request, node, user)
        entry = self._log(request, node, user, "3", remark)
        self._enter(request, target)
        return entry

    def _drawback(self, user: str, params: dict[str, str]) -> dict[str, Any]:
        request = self._existing(params.get("requestId"))
        if request.status == ARCHIVED:
            raise _Refused(PARAM, "流程已归档，不能收回")
        if user != request.creator:
            raise _Refused(NO_PERMISSION, "只有创建人可以强制收回")
        if request.status == OPEN:  # 收回 twice: the first one stands
            self._log(request, _node(request.workflow, request.node), user, "x", params.get("remark", ""))
            self._enter(request, _create_node(request.workflow))
            request.status = WITHDRAWN
        return {}

    def _force_over(self, user: str, params: dict[str, str]) -> dict[str, Any]:
        request = self._existing(params.get("requestId"))
        if request.status != ARCHIVED:
            self._log(request, _node(request.workflow, request.node), user, "e", params.get("remark", ""))
            self._enter(request, _archive_node(request.workflow))
            request.status = ARCHIVED
        return {}

    def _status(self, user: str, params: dict[str, str]) -> dict[str, Any]:
        view = self._view(self._existing(params.get("requestId")))
        keys = ("requestid", "workflowid", "requestname", "creatorid", "currentnodeid", "currentnodename",
                "currentnodetype", "status", "signed", "lastoperatedatetime")
        return {k: view[k] for k in keys}

    def _request_logs(self, user: str, params: dict[str, str]) -> list[dict[str, str]]:
        return [dict(entry) for entry in self._existing(params.get("requestId")).logs]

    def _existing(self, request_id: str | int | None) -> _Request:
        request = self._find(request_id)
        if request is None:
            raise _Refused(PARAM, f"请求不存在：requestId={request_id or ''}")
        return request

    def _open(self, request_id: str | int | None) -> _Request:
        request = self._existing(request_id)
        if request.status != OPEN:
            raise _Refused(PARAM, f"流程{request.status}，不能再处理")
        return request

    def _may_act(self, request: _Request, node: dict[str, Any], user: str) -> None:
        if node["type"] == "create":
            if user != request.creator:
                raise _Refused(NO_PERMISSION, "只有创建人可以在创建节点提交")
            return
        operators = node.get("operators")
        if operators is not None and user not in [str(o) for o in operators]:
            raise _Refused(NO_PERMISSION, f"当前用户不是节点「{node['name']}」的操作者")
        if user in request.signed:
            raise _Refused(NO_PERMISSION, f"当前用户已在节点「{node['name']}」会签过")

    def _route_on(self, request: _Request, node: dict[str, Any]) -> None:
        """Leave a completed node: the first exit that holds, on through countersigns that need nobody, and
        archive on reaching an archive node (or falling off the end of the list)."""
        for _ in range(len(request.workflow["nodes"])):  # a bound, should exits form a loop of empty nodes
            target = _next_node(request.workflow, node, request.main)
            if target is None:
                request.status = ARCHIVED
                return
            self._enter(request, target)
            if target["type"] == "archive":
                request.status = ARCHIVED
                return
            if target["type"] == "create" or _needed(target, request.main) > 0:
                return
            node = target

    def _enter(self, request: _Request, node: dict[str, Any]) -> None:
        request.node, request.signed, request.updated = node["id"], [], time.time()

    def _log(self, request: _Request, node: dict[str, Any], user: str, logtype: str, remark: str) -> dict[str, str]:
        self._last_log_id += 1
        now = time.localtime()
        entry = {"logid": str(self._last_log_id), "requestid": str(request.id), "nodeid": node["id"],
                 "nodename": node["name"], "operatorid": user, "operatorname": self._name(user), "logtype": logtype,
                 "logtypename": LOG_TYPES[logtype], "remark": remark or "",
                 "operatedate": time.strftime("%Y-%m-%d", now), "operatetime": time.strftime("%H:%M:%S", now),
                 "receivedpersons": ""}
        request.logs.append(entry)
        request.updated = time.time()
        return entry

    # -- decisions taken in OA, and the node Action callback ------------------------------------------
    def act(self, request_id: str | int, oa_user_id: str, action: str, remark: str = "", *, notify: bool = True,
            to_node: str | None = None) -> dict[str, Any]:
        """A person approving ("submit") or rejecting in OA's own UI, under the API's rules; with `notify` the
        node Action tells finflow, and answer["callback"] says how that went (status, text, response)."""
        if action not in ("submit", "reject"):
            raise ValueError(f"action must be submit or reject, not {action!r}")
        if self.user(str(oa_user_id)) is None:
            return _esb_error(BAD_USERID)
        answer, payload = self._decide(str(oa_user_id), request_id, action, remark, to_node=to_node)
        if payload is not None and notify and self.callback_url:
            answer["callback"] = self._deliver(payload)
        return answer

    def send_callback(self, payload: dict[str, Any], *, timestamp: str | int | None = None,
                      secret: str | None = None) -> httpx.Response:
        """POST `payload` to finflow as the node Action does; `timestamp` and `secret` forge stale or badly
        signed calls."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        key = self.callback_secret if secret is None else secret
        headers = {"Content-Type": "application/json", "X-OA-Timestamp": stamp,
                   "X-OA-Signature": sign(key, stamp, body)}
        return self._post(body, headers)

    def replay(self, response: httpx.Response) -> httpx.Response:
        """OA retrying a callback: the very same bytes and headers again."""
        body, headers = response.sent  # type: ignore[attr-defined]
        return self._post(body, dict(headers))

    def _post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        if not self.callback_url:
            raise RuntimeError("the simulator has no callback_url")
        response = httpx.post(self.callback_url, content=body, headers=headers, timeout=10)
        response.sent = (body, headers)  # type: ignore[attr-defined]  (for replay)
        return response

    def _deliver(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One node Action call; finflow unreachable is recorded, never raised (OA's user is not blocked)."""
        try:
            response = self.send_callback(payload)
            outcome: dict[str, Any] = {"status": response.status_code, "text": response.text, "response": response}
        except (httpx.HTTPError, RuntimeError) as exc:
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
        with self.lock:
            self.callbacks.append({"payload": payload, **{k: v for k, v in outcome.items() if k != "response"}})
        return outcome

    def _deliver_later(self, payload: dict[str, Any]) -> None:
        """API decisions: the callback in the background, so the API answer does not wait on finflow (which
        is usually the caller, waiting for this very answer)."""
        with self.lock:
            self._in_flight += 1

        def run() -> None:
            try:
                self._deliver(payload)
            finally:
                with self.lock:
                    self._in_flight -= 1

        threading.Thread(target=run, daemon=True, name="oa-node-action").start()

    # -- HTTP ---------------------------------------------------------------------------------------
    def _wsgi(self, environ, start_response):
        request = Request(environ)
        return self._respond(request)(environ, start_response)

    def _respond(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/api/"):
            return self._api(request)
        if path == "/":
            from adapters.oa.simulator.page import render

            return Response(render(self, request.args.get("msg", "")), content_type="text/html; charset=utf-8")
        if path == "/_sim/requests":
            return _json(self.requests())
        if path == "/_sim/act" and request.method == "POST":
            return self._sim_act(request)
        if path == "/_sim/faults" and request.method == "POST":
            body = request.get_json(silent=True) or {}
            self.fault(body.get("kind", "http500"), int(body.get("times", 1)), body.get("api"))
            return _json({"ok": True})
        return Response("not found", 404)

    def _api(self, request: Request) -> Response:
        api = request.path.rstrip("/").rsplit("/", 1)[-1]
        params: dict[str, Any] = {**request.args.to_dict(), **request.form.to_dict()}
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            params.update(body)
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self.lock:
            self.calls.append((api, dict(params), headers))
        fault = self.faults.take(api)
        if fault == "down":
            _drop(request.environ)
        if fault not in (None, "applied_timeout") and (faulty := self._faulty(fault, headers)) is not None:
            return faulty
        response = self._answer(request, api, params, headers)
        return self._hang() if fault == "applied_timeout" else response  # done, and the caller never hears

    def _answer(self, request: Request, api: str, params: dict[str, Any], headers: dict[str, str]) -> Response:
        path = request.path.rstrip("/")
        if path in ("/api/ec/dev/auth/regist", "/api/ec/dev/auth/applytoken"):
            if request.method != "POST":
                return Response("Method Not Allowed", 405)
            with self.lock:
                return _json(self._regist(headers) if api == "regist" else self._applytoken(headers))
        if path == HRM_USERS:
            with self.lock:
                _, refusal = self._caller(headers, need_user=False)
                return _json(refusal or self._hrm_users(params))
        if path.startswith(BUSINESS_PREFIX):
            return self._business(request.method, api, params, headers)
        return Response("not found", 404)

    def _business(self, method: str, api: str, params: dict[str, Any], headers: dict[str, str]) -> Response:
        handlers = {"doCreateRequest": ("POST", self._create), "doForceDrawBack": ("POST", self._drawback),
                    "doForceOver": ("POST", self._force_over), "getRequestStatus": ("GET", self._status),
                    "getWorkflowRequestLogs": ("GET", self._request_logs), "submitRequest": ("POST", None),
                    "rejectRequest": ("POST", None)}
        if api not in handlers:
            return Response("not found", 404)
        wanted, handler = handlers[api]
        if method != wanted:
            return Response("Method Not Allowed", 405)
        params = {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in params.items()}
        with self.lock:
            user, refusal = self._caller(headers)
            if refusal is not None:
                return _json(refusal)
            if handler is not None:
                try:
                    return _json(_success(handler(user, params)))
                except _Refused as refused:
                    return _json(_failure(refused.code, refused.msg))
        action = "submit" if api == "submitRequest" else "reject"
        answer, payload = self._decide(user, params.get("requestId", ""), action, params.get("remark", ""),
                                       main=params.get("mainData"), other=params.get("otherParams"))
        if payload is not None and self.notify_api_decisions and self.callback_url:
            self._deliver_later(payload)
        return _json(answer)

    def _hrm_users(self, params: dict[str, Any]) -> dict[str, Any]:
        """HRM's own shape (code "1", not "SUCCESS"), a page at a time, pages counted from 1."""
        paging = params.get("params") if isinstance(params.get("params"), dict) else {}
        page, size = max(1, _int(paging.get("curpage"), 1)), max(1, min(_int(paging.get("pagesize"), 100), 1000))
        rows = self.users[(page - 1) * size:page * size]
        return {"code": "1", "data": {"totalSize": len(self.users), "dataList": [dict(u) for u in rows],
                                      "page": page, "pageSize": size}}

    def _sim_act(self, request: Request) -> Response:
        data = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        data = data if isinstance(data, dict) else {}
        try:
            answer = self.act(data.get("request_id", ""), str(data.get("operator", "")), data.get("action", ""),
                              str(data.get("remark", "")))
        except ValueError as exc:
            answer = _failure(PARAM, str(exc))
        if request.is_json:
            callback = {k: v for k, v in (answer.get("callback") or {}).items() if k != "response"}
            return _json({**answer, **({"callback": callback} if callback else {})})
        return Response("", 303, headers={"Location": "/?" + urlencode({"msg": _outcome(data, answer)})})


def _outcome(data: dict[str, Any], answer: dict[str, Any]) -> str:
    """One line for the page about what a press of 批准 / 退回 did."""
    if answer.get("code") != "SUCCESS":
        reason = (answer.get("errMsg") or {}).get("msg") or answer.get("msg") or "失败"
        return f"请求 {data.get('request_id', '')}：{reason}"
    done = "已批准" if data.get("action") == "submit" else "已退回"
    callback = answer.get("callback") or {}
    told = f"，finflow 回调 HTTP {callback['status']}" if "status" in callback else (
        f"，finflow 回调失败：{callback['error']}" if "error" in callback else "")
    return f"请求 {data.get('request_id', '')}：{done}{told}"


def _drop(environ: dict[str, Any]) -> None:
    """The `down` fault: close the connection without a byte of answer. werkzeug treats a ConnectionError
    from the app as a dropped connection and writes nothing; without its socket in the environ (another WSGI
    server) the raise becomes that server's 500."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("simulated fault: OA is down")


def _node(workflow: dict[str, Any], node_id: str) -> dict[str, Any] | None:
    return next((n for n in workflow["nodes"] if str(n["id"]) == str(node_id)), None)


def _create_node(workflow: dict[str, Any]) -> dict[str, Any]:
    return next((n for n in workflow["nodes"] if n["type"] == "create"), workflow["nodes"][0])


def _archive_node(workflow: dict[str, Any]) -> dict[str, Any]:
    return next((n for n in workflow["nodes"] if n["type"] == "archive"), workflow["nodes"][-1])


def _next_node(workflow: dict[str, Any], node: dict[str, Any], main: dict[str, str]) -> dict[str, Any] | None:
    """Where a completed node goes: its first exit that holds, else (no exits) the next node in the list."""
    exits = node.get("exits") or []
    if not exits:
        index = workflow["nodes"].index(node)
        return workflow["nodes"][index + 1] if index + 1 < len(workflow["nodes"]) else None
    chosen = next((e for e in exits if _holds(e, main)), None)
    if chosen is None:
        raise _Refused("SYSTEM_INNER_ERROR", f"节点「{node['name']}」没有满足条件的出口")
    target = _node(workflow, chosen["to"])
    if target is None:
        raise _Refused("SYSTEM_INNER_ERROR", f"节点「{node['name']}」的出口指向不存在的节点 {chosen['to']}")
    return target


def _holds(exit_: dict[str, Any], main: dict[str, str]) -> bool:
    """An exit's condition on a main field: as numbers when both sides are numbers, else as text."""
    if not exit_.get("field"):
        return True
    left, right = str(main.get(exit_["field"], "")).strip(), str(exit_.get("value", "")).strip()
    compare = OPS[exit_.get("op", "==")]
    try:
        a, b = Decimal(left), Decimal(right)
        if a.is_finite() and b.is_finite():
            return compare(a, b)
    except InvalidOperation:
        pass
    return compare(left, right)


def _needed(node: dict[str, Any], main: dict[str, str]) -> int:
    """How many distinct signers complete a node: 1, a fixed count, or the count in a main field."""
    signers = node.get("signers")
    if signers is None:
        return 1
    if isinstance(signers, int):
        return max(0, signers)
    value = str(main.get(signers, "")).strip()
    try:
        return max(0, int(Decimal(value)))
    except (InvalidOperation, ValueError):
        return 1  # an unset or non-numeric count: an ordinary node


def _main_data(raw: str | None, workflow: dict[str, Any], *, required: bool = False) -> dict[str, str]:
    if raw in (None, ""):
        if required:
            raise _Refused(PARAM, "mainData 不能为空")
        return {}
    values = _field_list(_loads(raw, "mainData"), "mainData")
    unknown = [name for name in values if name not in workflow["fields"]]
    if unknown:
        raise _Refused(PARAM, f"主表字段不存在：{', '.join(unknown)}")
    return values


def _detail_data(raw: str | None, workflow: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    if raw in (None, ""):
        return {}
    tables = _loads(raw, "detailData")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _Refused(PARAM, "detailData 必须是明细表的 JSON 列表")
    found: dict[str, list[dict[str, str]]] = {}
    for table in tables:
        name = str(table.get("tableDBName") or "")
        if name not in workflow.get("detail_tables", []):
            raise _Refused(PARAM, f"明细表不存在：{name}")
        records = table.get("workflowRequestTableRecords") or []
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise _Refused(PARAM, f"明细表 {name} 的 workflowRequestTableRecords 必须是列表")
        found[name] = [_field_list(r.get("workflowRequestTableFields"), name) for r in records]
    return found


def _field_list(rows: Any, what: str) -> dict[str, str]:
    """[{"fieldName", "fieldValue"}, …] as a dict; anything else is E9's PARAM_ERROR."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) and r.get("fieldName") for r in rows):
        raise _Refused(PARAM, f"{what} 必须是 [{{fieldName, fieldValue}}] 列表")
    return {str(r["fieldName"]): "" if r.get("fieldValue") is None else str(r["fieldValue"]) for r in rows}


def _json_object(raw: str | None) -> dict[str, Any]:
    if raw in (None, ""):
        return {}
    value = _loads(raw, "otherParams")
    if not isinstance(value, dict):
        raise _Refused(PARAM, "otherParams 必须是 JSON 对象")
    return value


def _loads(raw: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _Refused(PARAM, f"{what} 不是合法的 JSON：{exc}") from exc


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _json(body: Any) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), content_type="application/json; charset=utf-8")
