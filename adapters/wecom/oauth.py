"""The approver page's login inside WeCom (OAuth2, snsapi_base: silent, gives the userid only).

`/wecom/oauth/start?next=/m/…` stores a random `state` bound to this browser (a random `ff_login`
cookie, stored hashed) and redirects to WeCom's authorize URL; WeCom sends the browser back to
`/wecom/oauth/callback?code=&state=`. There the state must be known, unused, under 10 minutes old and
belong to this browser (a state carried to another browser logs nobody in); it is marked used before
the code is exchanged (auth/getuserinfo, a code works once) for the WeCom userid = the finflow user id,
who must be active. Then a server-side session (engine/services/sessions.py) and its `ff_session`
cookie. `next` is only ever a relative path under /m/ (no open redirect). Failures are Chinese pages
with 400/403, never a 5xx.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from flask import Blueprint, Response, abort, redirect, request

from adapters.wecom.client import WeComError, client
from adapters.wecom.config import WeComConfig
from api.web.pages import error_page, safe_next, set_session_cookie
from engine import clock
from engine.db import transaction
from engine.models import LoginState, User
from engine.services import sessions
from engine.services.auth import hash_token

log = logging.getLogger("finflow.wecom.oauth")
blp = Blueprint("wecom_oauth", __name__)
LOGIN_COOKIE = "ff_login"
STATE_LIFETIME = timedelta(minutes=10)


def _config() -> WeComConfig:
    try:
        config = WeComConfig.from_env()
    except ValueError:
        config = None
    if config is None:
        abort(404)
    return config


def secure_cookies(config: WeComConfig) -> bool:
    return config.public_url.startswith("https://")


@blp.get("/wecom/oauth/start")
def start() -> Response:
    config = _config()
    browser, state = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with transaction() as session:
        session.add(LoginState(state=state, browser_hash=hash_token(browser),
                               next_url=safe_next(request.args.get("next")), created_at=clock.now()))
    response = redirect(client(config).authorize_url(f"{config.public_url}/wecom/oauth/callback", state), code=302)
    response.set_cookie(LOGIN_COOKIE, browser, max_age=int(STATE_LIFETIME.total_seconds()), httponly=True,
                        samesite="Lax", secure=secure_cookies(config), path="/wecom/oauth/")
    return response


@blp.get("/wecom/oauth/callback")
def finish() -> Response:
    config = _config()
    code, state = request.args.get("code", ""), request.args.get("state", "")
    if not code or not state or len(code) > 512 or len(state) > 64:
        return error_page("登录失败", "登录链接不完整，请从企业微信重新打开。", 400)
    next_url = _use_state(state, request.cookies.get(LOGIN_COOKIE))
    if next_url is None:
        log.warning("wecom oauth: state refused (unknown, used, expired or another browser) from %s",
                    request.remote_addr)
        return error_page("登录失败", "登录请求已失效或不属于此浏览器，请从企业微信重新打开。", 403)
    try:
        userid = client(config).userid_by_code(code)
    except WeComError as exc:
        log.warning("wecom oauth: code refused from %s: %s", request.remote_addr, exc)
        return error_page("登录失败", "企业微信登录凭证无效或已使用，请重新打开。", 403)
    with transaction() as session:
        user = session.get(User, userid[:64])
        if user is None or not user.active:
            log.warning("wecom oauth: WeCom user %s is not an active finflow user", userid[:64])
            return error_page("无法登录", f"企业微信账号 {userid[:64]} 未开通或已停用 finflow。", 403)
        cookie = sessions.create_session(session, user.id, "wecom", request.remote_addr,
                                         request.headers.get("User-Agent"))
    response = redirect(next_url, code=302)
    set_session_cookie(response, cookie, secure_cookies(config))
    response.delete_cookie(LOGIN_COOKIE, path="/wecom/oauth/")
    return response


def _use_state(state: str, browser: str | None) -> str | None:
    """Mark the state used and return its next URL, when it is known, unused, fresh and this browser's."""
    if not browser:
        return None
    with transaction() as session:
        row = session.get(LoginState, state, with_for_update=True)
        if row is None or row.used_at is not None or row.created_at < clock.now() - STATE_LIFETIME:
            return None
        if not secrets.compare_digest(row.browser_hash, hash_token(browser)):
            return None
        row.used_at = clock.now()
        return row.next_url
