"""Rendering helpers shared by the approver page and the WeCom login: pages, errors, the session."""

from __future__ import annotations

from flask import Response, render_template, request
from sqlalchemy.orm import Session

from engine.models import User, WebSession
from engine.services import sessions

SESSION_COOKIE = "ff_session"


def page(template: str, http_status: int = 200, **context) -> Response:
    """A rendered page, never cached (it shows someone's tasks) and never framed."""
    response = Response(render_template(template, **context), status=http_status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    return response


def error_page(title: str, message: str, status: int) -> Response:
    return page("message.html", status, title=title, message=message)


def current_login(session: Session) -> tuple[User, WebSession] | None:
    """The logged-in user of this request (the `ff_session` cookie), or None."""
    return sessions.resolve(session, request.cookies.get(SESSION_COOKIE))
