"""GET/POST /login (the password login) and POST /logout.

Inside WeCom the pages log people in with OAuth2 (adapters/wecom/oauth.py); everywhere else, and in the
demo, with a finflow password (engine/services/passwords.py). The login form carries a CSRF token bound
to a short-lived cookie (there is no session yet to bind it to), so another site cannot log a browser in
as someone else; logout posts the session's own CSRF token.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Response, redirect, request

from adapters.wecom.config import configured as wecom_configured
from api.web import blp
from api.web.pages import SESSION_COOKIE, current_login, error_page, next_query, page, safe_next, set_session_cookie
from engine.db import transaction
from engine.services import passwords, sessions

FORM_COOKIE = "ff_login_form"
MAX_FIELD = 256


@blp.get("/login")
def login_form() -> Response:
    return _form(safe_next(request.args.get("next")))


@blp.post("/login")
def log_in() -> Response:
    next_url = safe_next(request.form.get("next"))
    if not _form_token_matches():
        return _form(next_url, "页面已过期，请重新登录。", 403)
    login, password = request.form.get("login", "")[:MAX_FIELD], request.form.get("password", "")[:MAX_FIELD]
    if not login.strip() or not password:
        return _form(next_url, "请输入账号和密码。", 400, login)
    with transaction() as session:  # committed whatever the outcome: the attempt is part of the record
        outcome = passwords.log_in(session, login, password, request.remote_addr, request.headers.get("User-Agent"))
    if outcome.refusal is not None:
        return _form(next_url, outcome.refusal.message, outcome.refusal.status, login)
    response = redirect(next_url, code=303)
    set_session_cookie(response, outcome.cookie, request.is_secure)
    response.delete_cookie(FORM_COOKIE, path="/login")
    return response


@blp.post("/logout")
def log_out() -> Response:
    with transaction() as session:
        found = current_login(session)
        if found is not None and not hmac.compare_digest(request.form.get("csrf", ""), found[1].csrf_token):
            return error_page("操作失败", "页面已过期，请刷新后重试。", 403)
        if found is not None:
            sessions.revoke(session, request.cookies.get(SESSION_COOKIE))
    response = redirect("/login", code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _form(next_url: str, error: str | None = None, status: int = 200, login: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    wecom = f"/wecom/oauth/start?{next_query(next_url)}" if wecom_configured() else None
    response = page("login.html", status, next_url=next_url, error=error, login=login, form_token=token,
                    wecom_login=wecom)
    response.set_cookie(FORM_COOKIE, token, max_age=1800, httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/login")
    return response


def _form_token_matches() -> bool:
    sent, expected = request.form.get("form_token", ""), request.cookies.get(FORM_COOKIE, "")
    return bool(expected) and hmac.compare_digest(sent, expected)
