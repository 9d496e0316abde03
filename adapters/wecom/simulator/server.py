"""The simulated WeCom server: a real HTTP server on 127.0.0.1 with WeCom's endpoints, shapes and errcodes.

Server API under /cgi-bin/: gettoken (tokens expire), message/send (validates cards as WeCom does; unknown or
out-of-range users are `invaliduser`, all of them → 81013; button cards get a response_code), message/
update_template_card (a response_code works once, for 72 h; otherwise errcode 40098 — the simulator's choice,
WeCom documents no number), department/list, user/list, user/simplelist, user/get, user/list_id,
auth/getuserinfo (a code works once, 5 min). OAuth2: /connect/oauth2/authorize logs the browser in as the
user of its `sim_userid` cookie (set by the inbox page) and redirects with a code.

For tests and the demo: an inbox per user (`inbox`, `cards`, the page at `/`), `click` / `change_contact`
(an encrypted, signed callback POSTed to finflow), `fault` (http500, timeout, token_expired, rate_limit,
html, errcode:<n>) and `calls` (what finflow asked).
"""

from __future__ import annotations

import html
import json
import re
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from adapters.simulators import FaultPlan
from adapters.wecom.config import WeComConfig
from adapters.wecom.crypto import MsgCrypt
from adapters.wecom.simulator.org import subtree

TASK_ID = re.compile(r"^[A-Za-z0-9_\-@]{1,128}$")
CODE_TTL = 72 * 3600
MSGTYPES = {"text", "markdown", "textcard", "template_card"}
CARD_TYPES = {"text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction"}
DEMO_CREDENTIALS = {"corp_id": "wwfinflowdemo", "agent_id": 1000002, "secret": "demo-secret-finflow",
                    "token": "demotoken", "aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # finflow's own logs say what matters
        pass


def _ok(**fields: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok", **fields}


def _err(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": f"{errmsg}, hint: [simulator]"}


def click_event(corp_id: str, agent_id: int, userid: str, task_id: str, key: str, code: str) -> dict[str, str]:
    """The template_card_event WeCom sends when `userid` presses button `key` on card `task_id`."""
    return {"ToUserName": corp_id, "FromUserName": userid, "CreateTime": str(int(time.time())), "MsgType": "event",
            "Event": "template_card_event", "TaskId": task_id, "CardType": "button_interaction", "EventKey": key,
            "ResponseCode": code, "AgentID": str(agent_id)}


def sealed(crypt: MsgCrypt, event: dict[str, str]) -> tuple[str, dict[str, str]]:
    """An event as WeCom POSTs it to the callback URL: the encrypted, signed XML body and its query parameters."""
    xml = "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in event.items()) + "</xml>"
    nonce, timestamp = secrets.token_hex(8), str(int(time.time()))
    body = crypt.seal(xml, nonce, timestamp)
    signature = re.search(r"<MsgSignature><!\[CDATA\[(\w+)\]\]>", body).group(1)
    return body, {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}


class Simulator:
    def __init__(self, org: dict[str, Any] | None = None, *, corp_id: str = DEMO_CREDENTIALS["corp_id"],
                 agent_id: int = DEMO_CREDENTIALS["agent_id"], secret: str = DEMO_CREDENTIALS["secret"],
                 token: str = DEMO_CREDENTIALS["token"], aes_key: str = DEMO_CREDENTIALS["aes_key"],
                 callback_url: str | None = None, token_ttl: int = 7200, host: str = "127.0.0.1", port: int = 0,
                 rate_limit_per_second: int | None = None):
        from adapters.wecom.simulator.org import demo_org

        self.corp_id, self.agent_id, self.secret = corp_id, agent_id, secret
        self.crypt = MsgCrypt(token, aes_key, corp_id)
        self.token, self.aes_key, self.callback_url, self.token_ttl = token, aes_key, callback_url, token_ttl
        self.org = org if org is not None else demo_org()
        self.visible: set[str] | None = None  # the app's visible range; None: everyone
        self.rate_limit = rate_limit_per_second
        self.lock = threading.RLock()
        self.clear()
        self._stopping = threading.Event()
        self.server = make_server(host, port, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://{host}:{self.server.server_port}"
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> str:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="wecom-simulator")
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self.lock:
            self.tokens: dict[str, float] = {}
            self.task_ids: set[str] = set()
            self.response_codes: dict[str, dict[str, Any]] = {}
            self.inboxes: dict[str, list[dict[str, Any]]] = {}
            self.oauth_codes: dict[str, dict[str, Any]] = {}
            self.calls: list[tuple[str, dict[str, Any], Any]] = []
            self.faults = FaultPlan()
            self.sent_at: list[float] = []
            self.clock_offset = 0.0  # seconds added to the simulator's clock (expire codes without waiting)

    def config(self, public_url: str) -> WeComConfig:
        return WeComConfig(corp_id=self.corp_id, agent_id=self.agent_id, secret=self.secret, token=self.token,
                           aes_key=self.aes_key, api_base=self.url, oauth_base=self.url, public_url=public_url)

    def now(self) -> float:
        return time.time() + self.clock_offset

    # -- what tests and the demo read ---------------------------------------------------------------
    def inbox(self, userid: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry) for entry in self.inboxes.get(userid, [])]

    def cards(self, userid: str) -> list[dict[str, Any]]:
        return [e for e in self.inbox(userid) if e["msgtype"] == "template_card"]

    def card(self, userid: str, task_id: str) -> dict[str, Any] | None:
        return next((c for c in self.cards(userid) if c["task_id"] == task_id), None)

    def calls_to(self, api: str) -> int:
        with self.lock:
            return sum(1 for name, _, _ in self.calls if name == api)

    # -- the org ------------------------------------------------------------------------------------
    def set_org(self, org: dict[str, Any]) -> None:
        with self.lock:
            self.org = org

    def user(self, userid: str) -> dict[str, Any] | None:
        return next((u for u in self.org["users"] if u["userid"] == userid), None)

    def add_user(self, **user: Any) -> None:
        with self.lock:
            self.remove_user(user["userid"])
            self.org["users"].append({"status": 1, "enable": 1, "direct_leader": [], "is_leader_in_dept": [0],
                                      "position": "", "mobile": "", "email": "", **user})

    def remove_user(self, userid: str) -> None:
        with self.lock:
            self.org["users"] = [u for u in self.org["users"] if u["userid"] != userid]

    # -- faults -------------------------------------------------------------------------------------
    def fault(self, kind: str, times: int = 1, api: str | None = None) -> None:
        """The next `times` calls (to `api`, or any) fail as `kind`: http500, timeout, token_expired,
        rate_limit, html or errcode:<n>."""
        self.faults.add(kind, times, api)

    def fault_for(self, kind: str, seconds: float, api: str | None = None) -> None:
        self.faults.add_for(kind, seconds, api)

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- callbacks to finflow -------------------------------------------------------------------------
    def click(self, userid: str, task_id: str, key: str, *, force: bool = False) -> httpx.Response:
        """The user presses the button `key` on their card `task_id`: WeCom's template_card_event."""
        with self.lock:
            if not force and self.card(userid, task_id) is None:
                raise ValueError(f"{userid} has no card {task_id}")
            code = self._issue_code([userid], task_id)
        return self.send_event(click_event(self.corp_id, self.agent_id, userid, task_id, key, code))

    def change_contact(self, change_type: str, **fields: str) -> httpx.Response:
        """A contact change, applied to the simulated org first (a later full sync sees it too), then told."""
        with self.lock:
            self._apply_change(change_type, fields)
        return self.send_event({"ToUserName": self.corp_id, "FromUserName": "sys", "CreateTime": str(int(time.time())),
                                "MsgType": "event", "Event": "change_contact", "ChangeType": change_type, **fields})

    def send_event(self, event: dict[str, str]) -> httpx.Response:
        body, params = sealed(self.crypt, event)
        return self.post_raw(body.encode(), params)

    def post_raw(self, body: bytes, params: dict[str, str]) -> httpx.Response:
        if not self.callback_url:
            raise RuntimeError("the simulator has no callback_url")
        response = httpx.post(self.callback_url, params=params, content=body, timeout=10,
                              headers={"Content-Type": "text/xml"})
        response.sent = (body, params)  # type: ignore[attr-defined]  (for replay)
        return response

    def replay(self, response: httpx.Response) -> httpx.Response:
        """WeCom retrying a callback: the very same bytes again."""
        body, params = response.sent  # type: ignore[attr-defined]
        return self.post_raw(body, params)

    def verify_url(self) -> httpx.Response:
        echo = secrets.token_hex(8)
        encrypted, nonce, timestamp = self.crypt.encrypt(echo), secrets.token_hex(4), str(int(time.time()))
        from adapters.wecom.crypto import signature

        return httpx.get(self.callback_url, timeout=10, params={
            "msg_signature": signature(self.token, timestamp, nonce, encrypted), "timestamp": timestamp,
            "nonce": nonce, "echostr": encrypted})

    def _apply_change(self, change_type: str, fields: dict[str, str]) -> None:
        if change_type == "delete_user":
            self.remove_user(fields["UserID"])
        elif change_type in ("create_user", "update_user"):
            user = self.user(fields["UserID"]) or {"userid": fields["UserID"], "name": fields.get("Name", ""),
                                                   "department": [], "status": 1, "enable": 1}
            if fields.get("Department"):
                user["department"] = [int(d) for d in fields["Department"].split(",")]
                user["main_department"] = int(fields.get("MainDepartment") or user["department"][0])
            for key, attr in (("Name", "name"), ("Position", "position"), ("Mobile", "mobile"), ("Email", "email")):
                if key in fields:
                    user[attr] = fields[key]
            if "Status" in fields:
                user["status"] = int(fields["Status"])
            if "DirectLeader" in fields:
                user["direct_leader"] = [u for u in fields["DirectLeader"].split(",") if u]
            self.remove_user(user["userid"])
            self.org["users"].append(user)
        elif change_type == "delete_party":
            self.org["departments"] = [d for d in self.org["departments"] if d["id"] != int(fields["Id"])]
        elif change_type in ("create_party", "update_party"):
            party = next((d for d in self.org["departments"] if d["id"] == int(fields["Id"])), None)
            if party is None:
                party = {"id": int(fields["Id"]), "name": "", "parentid": 1, "order": 0, "department_leader": []}
                self.org["departments"].append(party)
            if "Name" in fields:
                party["name"] = fields["Name"]
            if "ParentId" in fields:
                party["parentid"] = int(fields["ParentId"])

    # -- HTTP ---------------------------------------------------------------------------------------
    def _wsgi(self, environ, start_response):
        request = Request(environ)
        return self._respond(request)(environ, start_response)

    def _respond(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/cgi-bin/"):
            return self._api(path.removeprefix("/cgi-bin/"), request)
        if path == "/connect/oauth2/authorize":
            return self._authorize(request)
        if path == "/":
            return self._page(request)
        if path.startswith("/_sim/inbox/"):
            return _json(self.inbox(path.removeprefix("/_sim/inbox/")))
        if path == "/_sim/click" and request.method == "POST":
            return self._sim_click(request)
        if path == "/_sim/faults" and request.method == "POST":
            body = request.get_json(silent=True) or {}
            self.fault(body.get("kind", "http500"), int(body.get("times", 1)), body.get("api"))
            return _json({"ok": True})
        return Response("not found", 404)

    def _api(self, api: str, request: Request) -> Response:
        body = request.get_json(silent=True) if request.method == "POST" else None
        params = request.args.to_dict()
        with self.lock:
            self.calls.append((api, params, body))
        fault = self.faults.take(api)
        if fault is not None and (faulty := self._faulty(fault)) is not None:
            return faulty
        if api == "gettoken":
            return _json(self._gettoken(params))
        if (error := self._check_token(params.get("access_token"))) is not None:
            return _json(error)
        handler = {"message/send": self._send, "message/update_template_card": self._update,
                   "department/list": self._departments, "user/list": self._users,
                   "user/simplelist": self._simple_users, "user/get": self._user_get, "user/list_id": self._list_id,
                   "auth/getuserinfo": self._getuserinfo}.get(api)
        if handler is None:
            return _json(_err(48001, f"api forbidden: {api}"))
        with self.lock:
            return _json(handler(params, body if isinstance(body, dict) else {}))

    def _faulty(self, kind: str) -> Response | None:
        if kind == "http500":
            return Response("Internal Server Error", 500)
        if kind == "html":
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", 502, content_type="text/html")
        if kind == "timeout":
            self._stopping.wait(15)  # longer than the client's read timeout
            return Response("too late", 504)
        if kind == "token_expired":
            return _json(_err(42001, "access_token expired"))
        if kind == "rate_limit":
            return _json(_err(45009, "api freq out of limit"))
        if kind.startswith("errcode:"):
            return _json(_err(int(kind.split(":", 1)[1]), "simulated error"))
        return None

    def _gettoken(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("corpid") != self.corp_id:
            return _err(40013, "invalid corpid")
        if params.get("corpsecret") != self.secret:
            return _err(40001, "invalid credential")
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.time() + self.token_ttl
        return _ok(access_token=token, expires_in=self.token_ttl)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on (WeCom answers 42001)."""
        with self.lock:
            self.tokens = {t: 0.0 for t in self.tokens}

    def _check_token(self, token: str | None) -> dict[str, Any] | None:
        with self.lock:
            expires = self.tokens.get(token or "")
        if expires is None:
            return _err(40014, "invalid access_token")
        if expires < time.time():
            return _err(42001, "access_token expired")
        return None

    def _valid_recipient(self, userid: str) -> bool:
        user = self.user(userid)
        return (user is not None and user.get("status") == 1 and user.get("enable", 1) != 0
                and (self.visible is None or userid in self.visible))

    def _send(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if body.get("agentid") != self.agent_id:
            return _err(40056, "invalid agentid")
        msgtype = body.get("msgtype")
        if msgtype not in MSGTYPES:
            return _err(40008, "invalid message type")
        if (problem := _message_problem(msgtype, body.get(msgtype))) is not None:
            return problem
        card = body.get("template_card") or {}
        task_id = card.get("task_id")
        bad_task_id = not isinstance(task_id, str) or not TASK_ID.match(task_id) or task_id in self.task_ids
        if card.get("card_type") == "button_interaction" and bad_task_id:
            return _err(42014, "taskid has existed or empty or exceed max len")
        if self.rate_limit is not None:
            now = time.monotonic()
            self.sent_at = [t for t in self.sent_at if t > now - 1]
            if len(self.sent_at) >= self.rate_limit:
                return _err(45009, "api freq out of limit")
            self.sent_at.append(now)
        users = [u for u in str(body.get("touser", "")).split("|") if u]
        valid = [u for u in users if self._valid_recipient(u)]
        invalid = [u for u in users if u not in valid]
        if not valid:
            return _err(81013, "user & party & tag all invalid")
        msgid = secrets.token_urlsafe(16)
        code = None
        if card.get("card_type") == "button_interaction":
            self.task_ids.add(task_id)
            code = self._issue_code(valid, task_id)
        for userid in valid:
            self.inboxes.setdefault(userid, []).append({
                "msgid": msgid, "msgtype": msgtype, msgtype: body[msgtype], "at": time.time(),
                "task_id": task_id, "response_code": code, "state": "open"})
        answer = _ok(invaliduser="|".join(invalid), invalidparty="", invalidtag="", unlicenseduser="", msgid=msgid)
        return {**answer, "response_code": code} if code else answer

    def _issue_code(self, userids: list[str], task_id: str) -> str:
        code = secrets.token_urlsafe(24)
        self.response_codes[code] = {"userids": list(userids), "task_id": task_id, "issued": self.now(), "used": False}
        return code

    def _update(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if body.get("agentid") != self.agent_id:
            return _err(40056, "invalid agentid")
        issued = self.response_codes.get(body.get("response_code") or "")
        if issued is None or issued["used"] or self.now() - issued["issued"] > CODE_TTL:
            return _err(40098, "invalid response_code")
        replace = (body.get("button") or {}).get("replace_name")
        if not replace and not body.get("template_card"):
            return _err(40058, "button.replace_name or template_card is required")
        issued["used"] = True
        wanted = set(body.get("userids") or issued["userids"]) if not body.get("atall") else set(issued["userids"])
        invalid = sorted(wanted - set(issued["userids"]))
        for userid in wanted & set(issued["userids"]):
            for entry in self.inboxes.get(userid, []):
                if entry["task_id"] == issued["task_id"]:
                    entry["state"] = replace or "updated"
                    if body.get("template_card"):
                        entry["template_card"] = body["template_card"]
        return _ok(invaliduser=invalid)

    def _departments(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        root = int(params["id"]) if params.get("id", "").isdigit() else None
        return _ok(department=subtree(self.org["departments"], root))

    def _members(self, params: dict[str, str]) -> list[dict[str, Any]] | None:
        if not params.get("department_id", "").isdigit():
            return None
        department = int(params["department_id"])
        return [u for u in self.org["users"] if department in u.get("department", [])]

    def _users(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        members = self._members(params)
        return _err(60003, "department not found") if members is None else _ok(userlist=members)

    def _simple_users(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        members = self._members(params)
        if members is None:
            return _err(60003, "department not found")
        return _ok(userlist=[{"userid": u["userid"], "name": u["name"], "department": u["department"]}
                             for u in members])

    def _user_get(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        user = self.user(params.get("userid", ""))
        return _ok(**user) if user else _err(60111, "userid not found")

    def _list_id(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        start = int(body.get("cursor") or 0)
        limit = max(1, min(int(body.get("limit") or 1000), 10000))
        users = self.org["users"][start:start + limit]
        rows = [{"userid": u["userid"], "department": d} for u in users for d in u.get("department", [])]
        more = start + limit < len(self.org["users"])
        return _ok(next_cursor=str(start + limit) if more else "", dept_user=rows)

    def _getuserinfo(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        issued = self.oauth_codes.get(params.get("code") or "")
        if issued is None or issued["used"] or time.time() - issued["issued"] > 300:
            return _err(40029, "invalid code")
        issued["used"] = True
        return _ok(userid=issued["userid"], user_ticket=secrets.token_urlsafe(16), expires_in=1800)

    def _authorize(self, request: Request) -> Response:
        args = request.args
        if args.get("appid") != self.corp_id or not args.get("redirect_uri") or args.get("response_type") != "code":
            return Response("参数错误：appid / redirect_uri / response_type", 400,
                            content_type="text/plain; charset=utf-8")
        userid = args.get("sim_userid") or request.cookies.get("sim_userid")
        if not userid or self.user(userid) is None:
            return Response(_page_html("请先在模拟器首页选择一位用户（模拟企业微信的登录身份）", ""), 403,
                            content_type="text/html; charset=utf-8")
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.oauth_codes[code] = {"userid": userid, "issued": time.time(), "used": False}
        separator = "&" if "?" in args["redirect_uri"] else "?"
        target = args["redirect_uri"] + separator + urlencode({"code": code, "state": args.get("state", "")})
        return Response("", 302, headers={"Location": target})

    def _sim_click(self, request: Request) -> Response:
        data = request.get_json(silent=True) or request.form.to_dict()
        try:
            answer = self.click(data["userid"], data["task_id"], data["key"])
            result = {"status": answer.status_code, "body": answer.text}
        except (KeyError, ValueError, RuntimeError, httpx.HTTPError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        if request.is_json:
            return _json(result)
        return Response("", 303, headers={"Location": f"/?u={data.get('userid', '')}"})

    def _page(self, request: Request) -> Response:
        from adapters.wecom.simulator.page import render

        userid = request.args.get("u") or request.cookies.get("sim_userid")
        user = self.user(userid) if userid else None
        response = Response(render(self, user), content_type="text/html; charset=utf-8")
        if user is not None:
            response.set_cookie("sim_userid", user["userid"], httponly=True, samesite="Lax")
        return response


def _message_problem(msgtype: str, content: Any) -> dict[str, Any] | None:
    """What WeCom would refuse in the message body, or None."""
    if not isinstance(content, dict):
        return _err(40058, f"{msgtype} is required")
    if msgtype in ("text", "markdown"):
        text = content.get("content")
        if not text:
            return _err(44004, "empty content")
        return _err(45002, "content size out of limit") if len(str(text).encode()) > 2048 else None
    if msgtype == "textcard":
        missing = [k for k in ("title", "description", "url") if not content.get(k)]
        return _err(40058, f"textcard.{missing[0]} is required") if missing else None
    return _card_problem(content)


def _card_problem(card: dict[str, Any]) -> dict[str, Any] | None:
    card_type = card.get("card_type")
    if card_type not in CARD_TYPES:
        return _err(40058, "invalid card_type")
    if not (card.get("main_title") or {}).get("title") and not card.get("sub_title_text"):
        return _err(40058, "main_title.title or sub_title_text is required")
    if len(card.get("horizontal_content_list") or []) > 6:
        return _err(40058, "horizontal_content_list has more than 6 items")
    action = card.get("card_action")
    if card_type == "text_notice" and not action:
        return _err(40058, "card_action is required")
    if action and action.get("type") == 1 and not action.get("url"):
        return _err(40058, "card_action.url is required")
    if card_type == "button_interaction":
        buttons = card.get("button_list") or []
        if not 1 <= len(buttons) <= 6:
            return _err(40058, "button_list must have 1 to 6 buttons")
        if any(not b.get("text") or not b.get("key") or len(str(b["key"]).encode()) > 1024 for b in buttons):
            return _err(40058, "every button needs text and a key of at most 1024 bytes")
    return None


def _json(body: Any) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), content_type="application/json; charset=utf-8")


def _page_html(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=zh-CN><head><meta charset=utf-8><meta name=viewport "
            f"content='width=device-width,initial-scale=1'><title>企业微信模拟器</title></head>"
            f"<body><h3>{html.escape(title)}</h3>{body}</body></html>")
