"""泛微 e-cology E9 over its REST API (the ESB-authenticated `/api/...` endpoints).

Authentication, as E9 documents it: finflow registers once (`/api/ec/dev/auth/regist`, headers `appid` and
`cpk` = finflow's RSA public key) and gets a `secret` and the server's public key `spk`; it then applies for a
token (`/api/ec/dev/auth/applytoken`, the secret RSA-encrypted with spk) and sends `appid`, `token` and the
RSA-encrypted OA `userid` it acts as on every call. RSA is PKCS#1 v1.5, keys base64 DER (what E9's Java side
uses). The registration and the token are cached in Redis, sealed (engine.crypto), shared by every API
process and worker; when E9 answers that the token is unknown or expired, it is dropped, renewed once and
the call made again.

Business answers carry `code`: SUCCESS, or PARAM_ERROR / NO_PERMISSION (refused: `OAError`), or
SYSTEM_INNER_ERROR (E9 itself failing: retried, `OATransient`, like timeouts, 5xx and HTML pages).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from redis import Redis

from adapters.oa.config import PURPOSE, OAConfig
from adapters.oa.system import (
    ARCHIVED,
    OPEN,
    WITHDRAWN,
    LogEntry,
    NewRequest,
    OAError,
    OATransient,
    OAUser,
    RequestStatus,
)
from engine import crypto

log = logging.getLogger("finflow.oa")
TOKEN_SECONDS = 1800
REFRESH_MARGIN = 120
LOCK_SECONDS = 10
NODE_TYPES = {"0": "create", "1": "approve", "2": "submit", "3": "archive"}
LOG_ACTIONS = {"0": "submit", "2": "submit", "3": "reject", "1": "save", "x": "withdraw", "e": "archive"}
TRANSIENT_CODES = {"SYSTEM_INNER_ERROR"}
PAGE_SIZE = 200
CACHE_PREFIX = "finflow:oa:weaver:"  # + base URL and appid: the Redis keys of the cached credentials


class WeaverClient:
    def __init__(self, config: OAConfig, redis: Redis, http: httpx.Client | None = None):
        self.config, self.redis = config, redis
        self.http = http or httpx.Client(follow_redirects=False)
        self.timeout = httpx.Timeout(config.timeout, connect=min(5.0, config.timeout))
        self._key = f"{CACHE_PREFIX}{config.base_url}:{config.appid}"
        self._private = serialization.load_pem_private_key(config.private_key_pem, password=None)
        self._server_key: tuple[str, Any] | None = None  # (spk, its parsed public key)

    # -- the OASystem calls ---------------------------------------------------------------------------
    def create_request(self, user: str, request: NewRequest) -> str:
        details = [{"tableDBName": table, "workflowRequestTableRecords": [
            {"recordOrder": 0, "workflowRequestTableFields": _fields(row)} for row in rows]}
            for table, rows in request.details.items()]
        form = {"workflowId": request.workflow_id, "requestName": request.name,
                "mainData": _json(_fields(request.main)),
                "otherParams": _json({"isnextflow": "1" if request.submit else "0"})}
        if details:
            form["detailData"] = _json(details)
        data = self._business("POST", "doCreateRequest", user, form=form)
        request_id = str((data or {}).get("requestid") or "")
        if not request_id or request_id.startswith("-"):  # E9 reports some failures as a negative requestid
            raise OAError("PARAM_ERROR", f"no request id in the answer: {data}", "doCreateRequest")
        return request_id

    def submit(self, user: str, request_id: str, remark: str, main: dict[str, str] | None = None) -> None:
        form = {"requestId": request_id, "remark": remark}
        if main:
            form["mainData"] = _json(_fields(main))
        self._business("POST", "submitRequest", user, form=form)

    def reject(self, user: str, request_id: str, remark: str, to_node: str | None = None) -> None:
        form = {"requestId": request_id, "remark": remark}
        if to_node:
            form["otherParams"] = _json({"RejectToNodeid": to_node})
        self._business("POST", "rejectRequest", user, form=form)

    def withdraw(self, user: str, request_id: str, remark: str) -> None:
        self._business("POST", "doForceDrawBack", user, form={"requestId": request_id, "remark": remark})

    def force_over(self, user: str, request_id: str, remark: str) -> None:
        self._business("POST", "doForceOver", user, form={"requestId": request_id, "remark": remark})

    def status(self, user: str, request_id: str) -> RequestStatus:
        data = self._business("GET", "getRequestStatus", user, params={"requestId": request_id}) or {}
        state = {"已归档": ARCHIVED, "已收回": WITHDRAWN}.get(str(data.get("status")), OPEN)
        node_type = NODE_TYPES.get(str(data.get("currentnodetype")), "approve")
        if node_type == "archive":
            state = ARCHIVED
        return RequestStatus(str(data.get("requestid") or request_id), str(data.get("currentnodeid") or ""),
                             str(data.get("currentnodename") or ""), node_type, state,
                             tuple(str(s) for s in data.get("signed") or ()))

    def logs(self, user: str, request_id: str) -> list[LogEntry]:
        rows = self._business("GET", "getWorkflowRequestLogs", user, params={"requestId": request_id}) or []
        return [LogEntry(str(r.get("logid")), str(r.get("nodeid")), str(r.get("operatorid")),
                         LOG_ACTIONS.get(str(r.get("logtype")), "other"), str(r.get("remark") or ""),
                         f"{r.get('operatedate', '')} {r.get('operatetime', '')}".strip())
                for r in rows if isinstance(r, dict)]

    def users(self) -> list[OAUser]:
        """The HRM directory, a page at a time (HRM answers code "1" for success, not "SUCCESS")."""
        found: list[OAUser] = []
        page = 1
        while True:
            answer = self._call("POST", "/api/hrm/resful/getHrmUserInfoWithPage", "getHrmUserInfoWithPage",
                                user=None, json_body={"params": {"curpage": page, "pagesize": PAGE_SIZE}})
            if str(answer.get("code")) != "1":
                raise OAError(str(answer.get("code")), str(answer.get("msg") or answer)[:300], "getHrmUserInfoWithPage")
            data = answer.get("data") or {}
            rows = data.get("dataList") or []
            found += [OAUser(str(r["id"]), str(r.get("loginid") or ""), str(r.get("lastname") or ""),
                             str(r.get("status", "1")) in ("0", "1", "2", "3")) for r in rows]
            if not rows or len(found) >= int(data.get("totalSize") or 0):
                return found
            page += 1

    # -- plumbing ------------------------------------------------------------------------------------
    def _business(self, method: str, api: str, user: str, *, form: dict[str, str] | None = None,
                  params: dict[str, str] | None = None) -> Any:
        answer = self._call(method, f"/api/workflow/paService/{api}", api, user=user, form=form, params=params)
        code = str(answer.get("code"))
        if code == "SUCCESS":
            return answer.get("data")
        reason = _reason(answer)
        if code in TRANSIENT_CODES:
            raise OATransient(code, reason, api)
        raise OAError(code, reason, api)

    def _call(self, method: str, path: str, api: str, *, user: str | None, form: dict[str, str] | None = None,
              params: dict[str, str] | None = None, json_body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One call with the shared token; renewed once when E9 says it is unknown or expired."""
        token = self.token()
        answer = self._request(method, path, api, self._headers(token, user), form, params, json_body)
        if _token_refused(answer):
            log.info("oa: %s said %s; applying for a new token", api, answer.get("msg"))
            token = self.token(stale=token)
            answer = self._request(method, path, api, self._headers(token, user), form, params, json_body)
            if _token_refused(answer):
                raise OATransient("TOKEN", str(answer.get("msg"))[:300], api)
        if answer.get("status") is False:  # the ESB refused the call itself (a userid it cannot decrypt …)
            raise OAError("AUTH", str(answer.get("msg"))[:300], api)
        return answer

    def _headers(self, token: str, user: str | None) -> dict[str, str]:
        headers = {"appid": self.config.appid, "token": token}
        if user is not None:
            headers["userid"] = self._encrypt(str(user))
        return headers

    def token(self, stale: str | None = None) -> str:
        """The cached token, or a new one; `stale` is a token E9 just refused (dropped if still cached)."""
        cached = self._cached("token")
        if cached and cached != stale:
            return cached
        lock = self.redis.lock(self._key + ":lock", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS)
        if not lock.acquire():
            raise OATransient("TOKEN", "another process is applying for the token", "applytoken")
        try:
            cached = self._cached("token")
            if cached and cached != stale:
                return cached
            for attempt in (1, 2):
                secret, _ = self._registration()
                answer = self._request("POST", "/api/ec/dev/auth/applytoken", "applytoken", {
                    "appid": self.config.appid, "secret": self._encrypt(secret), "time": str(TOKEN_SECONDS)})
                if answer.get("token"):
                    self._cache("token", answer["token"], ex=TOKEN_SECONDS - REFRESH_MARGIN)
                    return answer["token"]
                if attempt == 1 and not (self.config.secret and self.config.spk):
                    log.info("oa: applytoken refused (%s); registering again", answer.get("msg"))
                    self.redis.delete(self._key + ":registration")  # E9 was reset or re-keyed
            raise OAError("AUTH", f"applytoken refused: {answer.get('msg')}", "applytoken")
        finally:
            lock.release()

    def _registration(self) -> tuple[str, str]:
        """(secret, spk): from the configuration, else from the cache, else by registering now."""
        if self.config.secret and self.config.spk:
            return self.config.secret, self.config.spk
        cached = self._cached("registration")
        if cached:
            stored = json.loads(cached)
            return stored["secret"], stored["spk"]
        cpk = base64.b64encode(self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
        answer = self._request("POST", "/api/ec/dev/auth/regist", "regist", {"appid": self.config.appid, "cpk": cpk})
        secret, spk = answer.get("secret") or answer.get("secrit"), answer.get("spk")
        if not secret or not spk:
            raise OAError("AUTH", f"regist refused: {answer.get('msg')}", "regist")
        self._cache("registration", json.dumps({"secret": secret, "spk": spk}))
        return secret, spk

    def _encrypt(self, text: str) -> str:
        spk = self._registration()[1]
        if self._server_key is None or self._server_key[0] != spk:  # parsed once per server key, not per call
            self._server_key = (spk, serialization.load_der_public_key(base64.b64decode(spk)))
        return base64.b64encode(self._server_key[1].encrypt(text.encode(), padding.PKCS1v15())).decode()

    def _cache(self, name: str, value: str, ex: int | None = None) -> None:
        """Cached sealed (a copy of Redis is not a copy of E9's secret or of a live token)."""
        self.redis.set(f"{self._key}:{name}", crypto.seal(value, PURPOSE), ex=ex)

    def _cached(self, name: str) -> str | None:
        return crypto.unseal_cached(self.redis.get(f"{self._key}:{name}"), PURPOSE)

    def _request(self, method: str, path: str, api: str, headers: dict[str, str], form: dict[str, str] | None = None,
                 params: dict[str, str] | None = None, json_body: dict[str, Any] | None = None) -> dict[str, Any]:
        started = time.monotonic()
        try:
            response = self.http.request(method, self.config.base_url + path, headers=headers, data=form,
                                         params=params, json=json_body, timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise OATransient("HTTP", f"timeout after {time.monotonic() - started:.1f} s", api) from exc
        except httpx.TransportError as exc:
            raise OATransient("HTTP", f"connection failed: {type(exc).__name__}: {exc}", api) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise OATransient("HTTP", f"{response.status_code}: {response.text[:200]!r}", api)
        try:
            answer = response.json()
        except ValueError as exc:  # a login page or a gateway's HTML error
            raise OATransient("HTTP", f"{response.status_code}, not JSON: {response.text[:200]!r}", api) from exc
        if not isinstance(answer, dict):
            raise OAError("ANSWER", f"unexpected answer {str(answer)[:200]}", api)
        return answer


def _fields(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"fieldName": name, "fieldValue": value} for name, value in values.items()]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _token_refused(answer: dict[str, Any]) -> bool:
    return answer.get("status") is False and "token" in str(answer.get("msg", "")).lower()


def _reason(answer: dict[str, Any]) -> str:
    errors = answer.get("errMsg") or {}
    text = errors.get("msg") if isinstance(errors, dict) else errors
    return str(text or answer.get("msg") or answer.get("reqFailMsg") or answer)[:300]


def drop_cached_credentials(redis: Redis) -> int:
    """Forget every cached registration and token (`finflow secrets rotate`): they are fetched again and
    sealed with the new key. Returns how many keys were dropped; the refresh locks are left alone."""
    names = [k for pattern in (f"{CACHE_PREFIX}*:registration", f"{CACHE_PREFIX}*:token")
             for k in redis.scan_iter(match=pattern)]
    return int(redis.delete(*names)) if names else 0
