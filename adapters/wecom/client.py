"""The WeCom server API client: access token shared by every process, errcodes turned into exceptions.

The access token is cached in Redis (the one every API process and worker shares; embedded mode uses
the in-process one), sealed (engine.crypto), until 5 minutes before `expires_in`. One process refreshes
at a time: the others wait for the token it stores instead of all calling gettoken at once. A call
answered 40014/42001 (token invalid/expired) drops that token, refreshes once and is made again.

Errors: `Transient` (worth retrying: HTTP 5xx, timeouts, connection errors, a body that is not JSON,
errcode -1 系统繁忙 or 45009 频率超限) and `WeComError` for everything else (bad secret, IP not allowed,
a user outside the app's visible range …), each with WeCom's errcode and errmsg for the log and the task.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from redis import Redis

from adapters.wecom.config import PURPOSE, WeComConfig
from engine import crypto

log = logging.getLogger("finflow.wecom")
TOKEN_EXPIRED = {40014, 42001}  # invalid / expired access_token: refresh once and retry
TRANSIENT = {-1, 45009, 45033}  # 系统繁忙, api freq out of limit, concurrent call limit
REFRESH_MARGIN = 300  # seconds before expires_in that a token is no longer handed out
LOCK_SECONDS = 10
TOKEN_PREFIX = "finflow:wecom:token:"  # + corp id and agent id: the Redis key of the cached access token
_local = threading.local()


class WeComError(Exception):
    """WeCom answered with an error (errcode ≠ 0), or an answer finflow cannot use."""

    def __init__(self, errcode: int, errmsg: str, api: str):
        super().__init__(f"WeCom {api}: errcode {errcode} {errmsg}")
        self.errcode, self.errmsg, self.api = errcode, errmsg, api


class Transient(WeComError):
    """Worth retrying later; `after` is a suggested wait in seconds (None: the caller's backoff)."""

    def __init__(self, errcode: int, errmsg: str, api: str, after: float | None = None):
        super().__init__(errcode, errmsg, api)
        self.after = after


HTTP_FAILURE = -2  # errcode given to failures below WeCom's own errcodes: no answer, HTTP 5xx, not JSON


class WeComClient:
    def __init__(self, config: WeComConfig, redis: Redis, http: httpx.Client | None = None,
                 timeout: httpx.Timeout | None = None):
        self.config, self.redis = config, redis
        self.http = http or httpx.Client(follow_redirects=False)
        self.timeout = timeout or httpx.Timeout(10.0, connect=5.0)
        self._token_key = f"{TOKEN_PREFIX}{config.corp_id}:{config.agent_id}"

    # -- the API calls finflow makes -------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """message/send; returns WeCom's answer (msgid, response_code, invaliduser …)."""
        return self.call("POST", "message/send", json={"agentid": self.config.agent_id, **message})

    def update_card(self, userids: list[str], response_code: str, replace_name: str) -> dict[str, Any]:
        """update_template_card: the users' button card shows `replace_name` in place of its buttons."""
        return self.call("POST", "message/update_template_card", json={
            "userids": userids, "agentid": self.config.agent_id, "response_code": response_code,
            "button": {"replace_name": replace_name}})

    def departments(self, root: int | None = None) -> list[dict[str, Any]]:
        params = {"id": root} if root is not None else None
        return self.call("GET", "department/list", params=params).get("department", [])

    def users_of(self, department_id: int) -> list[dict[str, Any]]:
        """user/list: the members of one department (not of its children), with their details."""
        return self.call("GET", "user/list", params={"department_id": department_id}).get("userlist", [])

    def user(self, userid: str) -> dict[str, Any]:
        return self.call("GET", "user/get", params={"userid": userid})

    def userid_by_code(self, code: str) -> str:
        """auth/getuserinfo: the WeCom userid an OAuth2 code stands for (a code works once)."""
        answer = self.call("GET", "auth/getuserinfo", params={"code": code})
        userid = answer.get("userid") or answer.get("UserId")
        if not userid:
            raise WeComError(answer.get("errcode", 0), "not a member of the corp (no userid)", "auth/getuserinfo")
        return userid

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """Where the approver's WeCom browser is sent to get a code (snsapi_base: silent, userid only)."""
        query = urlencode({"appid": self.config.corp_id, "redirect_uri": redirect_uri, "response_type": "code",
                           "scope": "snsapi_base", "state": state, "agentid": self.config.agent_id})
        return f"{self.config.oauth_base}/connect/oauth2/authorize?{query}#wechat_redirect"

    # -- plumbing ---------------------------------------------------------------------------------
    def call(self, method: str, api: str, *, params: dict[str, Any] | None = None,
             json: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call with the shared access token; refreshed once when WeCom says it is stale."""
        token = self.access_token()
        answer = self._request(method, api, {**(params or {}), "access_token": token}, json)
        if answer.get("errcode") in TOKEN_EXPIRED:
            log.info("wecom: %s said errcode %s; refreshing the access token", api, answer["errcode"])
            token = self.access_token(stale=token)
            answer = self._request(method, api, {**(params or {}), "access_token": token}, json)
        return _checked(answer, api)

    def access_token(self, stale: str | None = None) -> str:
        """The cached token, or a fresh one; `stale` is a token WeCom just refused (dropped if cached)."""
        cached = self._cached()
        if cached and cached != stale:
            return cached
        lock = self.redis.lock(self._token_key + ":lock", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS)
        if not lock.acquire():
            raise Transient(HTTP_FAILURE, "another process is refreshing the access token", "gettoken")
        try:
            cached = self._cached()  # someone else may have refreshed while we waited for the lock
            if cached and cached != stale:
                return cached
            answer = _checked(self._request("GET", "gettoken", {"corpid": self.config.corp_id,
                                                                "corpsecret": self.config.secret}, None), "gettoken")
            token, expires_in = answer["access_token"], int(answer.get("expires_in", 7200))
            self.redis.set(self._token_key, crypto.seal(token, PURPOSE), ex=max(1, expires_in - REFRESH_MARGIN))
            return token
        finally:
            lock.release()

    def _cached(self) -> str | None:
        return crypto.unseal_cached(self.redis.get(self._token_key), PURPOSE)

    def _request(self, method: str, api: str, params: dict[str, Any], json: dict[str, Any] | None) -> dict[str, Any]:
        url = f"{self.config.api_base}/cgi-bin/{api}"
        started = time.monotonic()
        try:
            response = self.http.request(method, url, params=params, json=json, timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise Transient(HTTP_FAILURE, f"timeout after {time.monotonic() - started:.1f} s", api) from exc
        except httpx.TransportError as exc:
            raise Transient(HTTP_FAILURE, f"connection failed: {type(exc).__name__}: {exc}", api) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise Transient(HTTP_FAILURE, f"HTTP {response.status_code}: {response.text[:200]}", api)
        try:
            answer = response.json()
        except ValueError as exc:  # an HTML error page from a proxy or gateway
            raise Transient(HTTP_FAILURE, f"HTTP {response.status_code}, not JSON: {response.text[:200]!r}",
                            api) from exc
        if not isinstance(answer, dict):
            raise WeComError(HTTP_FAILURE, f"unexpected answer {str(answer)[:200]}", api)
        return answer


def _checked(answer: dict[str, Any], api: str) -> dict[str, Any]:
    errcode = answer.get("errcode", 0)
    if errcode == 0:
        return answer
    errmsg = str(answer.get("errmsg", ""))[:300]
    if errcode in TRANSIENT or errcode in TOKEN_EXPIRED:
        raise Transient(errcode, errmsg, api, after=10.0 if errcode == 45009 else None)
    raise WeComError(errcode, errmsg, api)


def drop_cached_credentials(redis: Redis) -> int:
    """Forget every cached access token (`finflow secrets rotate`): fetched again and sealed with the new
    key. Returns how many were dropped; the refresh locks are left alone."""
    names = [k for k in redis.scan_iter(match=f"{TOKEN_PREFIX}*")
             if not (k.decode() if isinstance(k, bytes) else k).endswith(":lock")]
    return int(redis.delete(*names)) if names else 0


def client(config: WeComConfig) -> WeComClient:
    """This thread's client for `config` (keep-alive connections stay with their thread), sharing the
    token cache through the job queues' Redis."""
    from engine.outbox.dispatch import connection, redis_url

    clients: dict[WeComConfig, WeComClient] = _local.__dict__.setdefault("clients", {})
    if config not in clients:
        clients[config] = WeComClient(config, connection(redis_url()))
    return clients[config]
