"""Checks every request passes before its view runs: the body size limit, then the bearer token.

Order matters to callers: a request without a token is a 401 whatever its body looks like (a client
should not learn how we parse before it authenticates). This is only the cheap presence check; views
still authenticate the token in their own transaction (api/context.py).
"""

from __future__ import annotations

from flask import Flask, Response, current_app, g, request

from api.context import has_credentials
from engine.db import transaction
from engine.errors import Unauthorized
from engine.services.auth import touch

MAX_JSON_BYTES = 1024 * 1024  # any body but an upload; uploads have MAX_UPLOAD_BYTES (app config)


def register(app: Flask) -> None:
    app.before_request(_limit_body)
    app.before_request(_require_token)
    app.after_request(_note_token_use)


def _note_token_use(response: Response) -> Response:
    """Record the token's last use after the view's own transaction has ended (views hold at most one)."""
    token_id = g.pop("finflow_token_id", None)
    if token_id is not None:
        with transaction() as session:
            touch(session, token_id, request.remote_addr)
    return response


def _limit_body() -> None:
    """Only multipart uploads may use MAX_CONTENT_LENGTH; every other body is read up to 1 MiB (413 beyond)."""
    if request.mimetype != "multipart/form-data":
        request.max_content_length = MAX_JSON_BYTES


def _require_token() -> None:
    if request.routing_exception is not None or request.method == "OPTIONS":
        return  # 404/405 are raised by dispatch as usual; OPTIONS only lists the methods
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "requires_token", False) and not has_credentials():
        raise Unauthorized("缺少访问令牌：请使用 Authorization: Bearer <token>，或先登录")
