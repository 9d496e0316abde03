"""`/oa/callback`: a decision taken in OA, told by the node's Action (E9 节点附加操作), applied at once.

The call is signed: `X-OA-Timestamp` (unix seconds) and `X-OA-Signature` = hex HMAC-SHA256 with the shared
secret (FINFLOW_OA_CALLBACK_SECRET) over `"<timestamp>\\n<body>"`. A call more than five minutes off, or
whose signature does not match, is refused with 401 and nothing is stored; the same signed call sent again
(a replay, or OA retrying) finds its row and changes nothing. The body is JSON: requestid, nodeid, operator
(OA user id), action (submit | reject), remark, and logid when OA has one (then a callback and the poller
reading the same log line are one decision).

The decision is stored before anything else, then applied in the same request (OA's user waits for the
node to move, and a decision is one command); answers are JSON and never a 5xx: a decision that could not
be applied now stays stored and is applied by the sweep, and one OA sends while finflow's database is down is
read back from OA's log by the poller.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

from flask import Blueprint, Response, request

from adapters.oa import inbound
from adapters.oa.config import OAConfig

log = logging.getLogger("finflow.oa.callback")
blp = Blueprint("oa_callback", __name__)
MAX_BODY = 64 * 1024
MAX_SKEW = 300  # seconds a signed call may be off finflow's clock
REQUIRED = ("requestid", "nodeid", "operator", "action")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The callback's signature: hex HMAC-SHA256 over "<timestamp>\\n<body>" (what the E9 node Action sends)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()


@blp.post("/oa/callback")
def receive() -> Response:
    try:
        config = OAConfig.from_env()
    except ValueError as exc:
        log.error("oa callback: configuration is incomplete: %s", exc)
        config = None
    if config is None:
        return _error(404, "oa_not_configured", "OA 集成未配置")
    if (request.content_length or 0) > MAX_BODY:
        return _error(413, "too_large", f"请求体超过 {MAX_BODY} 字节")
    body = request.get_data(cache=False)[:MAX_BODY + 1]
    refusal = _authentic(config, body)
    if refusal is not None:
        log.warning("oa callback: refused from %s: %s", request.remote_addr, refusal[1])
        return _error(401, *refusal)
    try:
        decision = _decision(body)
    except ValueError as exc:
        log.warning("oa callback: malformed from %s: %s", request.remote_addr, exc)
        return _error(400, "invalid_callback", str(exc))
    return _store_and_apply(decision)


def _authentic(config: OAConfig, body: bytes) -> tuple[str, str] | None:
    timestamp = request.headers.get("X-OA-Timestamp", "")
    given = request.headers.get("X-OA-Signature", "")
    if not timestamp.isdigit() or not given:
        return "unsigned", "缺少 X-OA-Timestamp 或 X-OA-Signature"
    if abs(time.time() - int(timestamp)) > MAX_SKEW:
        return "stale", f"时间戳与 finflow 相差超过 {MAX_SKEW} 秒（过期或重放）"
    if not hmac.compare_digest(signature(config.callback_secret, timestamp, body), given.lower()):
        return "bad_signature", "签名不正确"
    return None


def _decision(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"请求体不是 JSON：{exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("请求体必须是 JSON 对象")
    missing = [k for k in REQUIRED if not str(payload.get(k) or "").strip()]
    if missing:
        raise ValueError(f"缺少字段：{', '.join(missing)}")
    action = str(payload["action"]).lower()
    if action not in inbound.ACTIONS:
        raise ValueError(f"action 必须是 submit 或 reject，收到 {payload['action']!r}")
    request_id, log_id = str(payload["requestid"])[:64], str(payload.get("logid") or "")[:64]
    key = f"log:{request_id}:{log_id}" if log_id else \
        "cb:" + hashlib.sha256(request.headers.get("X-OA-Signature", "").encode()).hexdigest()
    return {"dedupe_key": key, "source": "callback", "request_id": request_id, "oa_node": str(payload["nodeid"])[:64],
            "oa_user": str(payload["operator"])[:64], "action": action,
            "remark": str(payload.get("remark") or "")[:2000],
            "log_id": log_id or None, "client_ip": request.remote_addr}


def _store_and_apply(decision: dict) -> Response:
    try:
        decision_id, new = inbound.store(decision)
    except Exception:  # the database: OA's log still has the decision, and the poller reads it back
        log.exception("oa callback: could not store a decision on request %s", decision["request_id"])
        return _answer(200, {"code": "SUCCESS", "status": "not_stored",
                             "message": "finflow 暂时无法保存，稍后将从 OA 日志中读取"})
    if not new:
        outcome = inbound.Outcome("duplicate", "已收到过同一回调，未重复处理")
    else:
        try:
            outcome = inbound.apply(decision_id)
        except Exception:  # left `received`; the sweep applies it again
            log.exception("oa callback: decision %s stored, applying it failed; the sweep retries", decision_id)
            outcome = inbound.Outcome("received", "已保存，稍后处理")
    return _answer(200, {"code": "SUCCESS", "id": decision_id, "status": outcome.status, "message": outcome.result})


def _answer(status: int, body: dict) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _answer(status, {"error": {"code": code, "message": message, "details": {}}})
