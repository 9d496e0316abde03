"""Rendering helpers shared by the approver page and the WeCom login: pages, errors, the session."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from flask import Response, render_template, request
from sqlalchemy.orm import Session

from engine.models import User, WebSession
from engine.services import sessions

SESSION_COOKIE = sessions.COOKIE
DEFAULT_NEXT = "/m/"
PAGE_PREFIXES = ("/m/", "/designer", "/audit")  # where a login may send the browser back to


PLAIN_PAGE = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
SCRIPTED_PAGE = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                 "font-src 'self' data:; connect-src 'self'; form-action 'self'")  # the diagram pages (bpmn-js)


def page(template: str, http_status: int = 200, *, scripts: bool = False, **context) -> Response:
    """A rendered page, never cached (it shows someone's tasks) and never framed; `scripts`: it loads our
    own scripts and the diagram packages (same origin only), else it runs no script at all."""
    response = Response(render_template(template, **context), status=http_status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = SCRIPTED_PAGE if scripts else PLAIN_PAGE
    return response


def error_page(title: str, message: str, status: int) -> Response:
    return page("message.html", status, title=title, message=message)


def current_login(session: Session) -> tuple[User, WebSession] | None:
    """The logged-in user of this request (the `ff_session` cookie), or None."""
    return sessions.resolve(session, request.cookies.get(SESSION_COOKIE))


def safe_next(value: str | None) -> str:
    """`value` when it is a relative path to one of the pages, else /m/ (never another host, scheme or
    //host: no open redirect)."""
    if not value or len(value) > 500 or "\\" in value or any(ord(c) < 32 for c in value):
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if (parts.scheme or parts.netloc or not value.startswith(PAGE_PREFIXES) or "/../" in value
            or value.startswith("//")):
        return DEFAULT_NEXT
    return value


def next_query(path: str) -> str:
    """`next=<path>` for a login URL, the path's own query encoded too, so it comes back whole."""
    return "next=" + quote(path, safe="/")


def set_session_cookie(response: Response, cookie: str, secure: bool) -> None:
    """The login's cookie: HttpOnly (no script reads it), SameSite=Lax (no cross-site form post carries
    it), Secure over HTTPS; it lives as long as the session (engine/services/sessions.py)."""
    response.set_cookie(SESSION_COOKIE, cookie, max_age=int(sessions.LIFETIME.total_seconds()), httponly=True,
                        samesite="Lax", secure=secure, path="/")
