"""Per-request plumbing: the transaction, the authenticated user, the Actor and Idempotency-Key replay."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import g, jsonify, request
from marshmallow import Schema
from sqlalchemy.exc import IntegrityError

from engine.db import transaction
from engine.errors import FinflowError, Forbidden, InvalidInput, Unauthorized
from engine.history import Actor
from engine.models import User
from engine.services import access, idempotency, queries, security_log, sessions
from engine.services.auth import allows, authenticate_token

MAX_KEY_LENGTH = 255
IDEMPOTENCY_KEY_PATTERN = rf"^[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}$"  # printable ASCII: UUIDs, order numbers …
MAX_USER_AGENT = 255  # the history column's length
MAX_CLIENT_IP = 64


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


def has_credentials() -> bool:
    """A bearer token or a session cookie came with the request (api.guards' cheap check)."""
    return bearer_token() is not None or bool(request.cookies.get(sessions.COOKIE))


def caller(session) -> User:
    """Who is calling: the bearer token's user (integrators), else the web pages' logged-in user (the
    session cookie). The pages call this same API, so there is one set of rules; a state-changing call
    with a cookie must carry the session's CSRF token in X-CSRF-Token (another site can make a browser
    send the cookie, not read the token)."""
    token = bearer_token()
    if token is not None:
        user, row = authenticate_token(session, token)
        needed = required_scope()
        if not allows(row, needed):
            raise Forbidden(f"访问令牌的权限范围不包括 {needed}",
                            {"required_scope": needed, "token_scopes": row.scopes}, code="insufficient_scope")
        g.finflow_token_id = row.id
        return user
    found = sessions.resolve(session, request.cookies.get(sessions.COOKIE))
    if found is None:
        raise Unauthorized("未登录或登录已过期：请登录，或使用 Authorization: Bearer <token>")
    user, web = found
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
            request.headers.get(CSRF_HEADER, ""), web.csrf_token):
        raise Forbidden(f"缺少或错误的 CSRF 令牌（请求头 {CSRF_HEADER}）", code="csrf_failed")
    g.finflow_channel = "web"
    return user


WRITE_SCOPES = {"instances": "start", "tasks": "approve", "definitions": "design", "events": "admin",
                "admin": "admin", "tokens": "account", "second_factor": "account"}
ENDPOINT_SCOPES = {"instances.cancel": "admin", "tokens.list_all": "admin"}


def required_scope() -> str:
    """The token scope this request needs: reads need `read`, writes their blueprint's scope,
    administration (`/admin/…`, event subscriptions) `admin` even to read."""
    if request.endpoint in ENDPOINT_SCOPES:
        return ENDPOINT_SCOPES[request.endpoint]
    if request.blueprint == "events" or "/admin/" in request.path:
        return "admin"
    if request.method in SAFE_METHODS:
        return "read"
    return WRITE_SCOPES.get(request.blueprint or "", "admin")


def request_actor(user: User) -> Actor:
    """Who acts, from where. The client address is the socket's, or what the configured number of
    trusted proxies forwarded (ProxyFix in create_app, FINFLOW_TRUSTED_PROXY_HOPS): a client-sent
    X-Forwarded-For is never believed on its own, or anyone could write any IP into the audit trail."""
    return Actor(user_id=user.id, channel=g.get("finflow_channel", "api"),
                 client_ip=_printable(request.remote_addr, MAX_CLIENT_IP),
                 user_agent=_printable(request.headers.get("User-Agent"), MAX_USER_AGENT))


def note_instance_access(user: User, instance_id: str, what: str) -> None:
    """Views of instances by auditors (and administrators auditing) go to the security log; a user's own
    or assigned instances are their work, not an audit, and are not logged."""
    if access.may(user, "audit"):
        security_log.record_access("instance.viewed", request_actor(user), "instance", instance_id, view=what)


def _printable(value: str | None, limit: int) -> str | None:
    """Header values as the history columns can store them: no control characters, cut to the column."""
    if value is None:
        return None
    return "".join(ch for ch in value if ch.isprintable())[:limit] or None


def requires_token(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view as needing a bearer token, so api.guards refuses a request without one (401) before
    its body is looked at, and the OpenAPI document lists the 401."""
    view.requires_token = True  # type: ignore[attr-defined]
    return view


def honours_idempotency_key(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view whose command takes an Idempotency-Key (`command` does), so the OpenAPI document lists
    the header; such a view needs a token too."""
    view.honours_idempotency_key = True  # type: ignore[attr-defined]
    return requires_token(view)


def authenticated(view: Callable[..., Any]) -> Callable[..., Any]:
    """Read-only views: run in one transaction with the caller's user as `user`."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        with transaction(readonly=True) as session:
            user = caller(session)
            return view(*args, session=session, user=user, **kwargs)

    return requires_token(wrapper)


def command(schema: type[Schema], status: int = 200) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mutating views: one transaction holding the command and its Idempotency-Key record.

    The view's result is serialized with `schema` inside the transaction, so the remembered response is
    exactly the one sent. A retry with the same key and body gets the stored response
    back without running the command again; the same key with a different body is refused.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args, **kwargs):
            key = idempotency_key()
            try:
                return _run(view, key, args, kwargs)
            except (IntegrityError, FinflowError):
                # A concurrent twin with the same key may have committed first (its invoice claims or
                # its key record then collide with ours): answer with its result, else the error stands.
                twin = _committed_twin(key) if key is not None else None
                if twin is None:
                    raise
                return twin

        return honours_idempotency_key(wrapper)

    def _committed_twin(key):
        with transaction(readonly=True) as session:
            user = caller(session)
            fingerprint = idempotency.fingerprint(request.method, request.path, _body_for_fingerprint())
            previous = idempotency.replay(session, user.id, key, fingerprint)
            return _replayed(previous) if previous is not None else None

    def _run(view, key, args, kwargs):
        with transaction() as session:
            user = caller(session)
            fingerprint = idempotency.fingerprint(request.method, request.path, _body_for_fingerprint())
            if key is not None:
                previous = idempotency.replay(session, user.id, key, fingerprint)
                if previous is not None:
                    return _replayed(previous)
            _require_visible(session, user, kwargs)
            body = schema().dump(view(*args, session=session, user=user, actor=request_actor(user), **kwargs))
            if key is not None:
                idempotency.remember(session, user.id, key, fingerprint, status, body)
        response = jsonify(body)
        response.status_code = status
        return response

    return decorate


def _require_visible(session, user: User, path_args: dict[str, Any]) -> None:
    """A command on an instance or task outside the caller's scope answers 404, as a read of it does
    (queries.get_*): refusing with 403 would tell the caller the id exists."""
    if "task_id" in path_args:
        queries.get_task(session, user, path_args["task_id"])
    elif "instance_id" in path_args:
        queries.get_instance(session, user, path_args["instance_id"])


def idempotency_key() -> str | None:
    """The Idempotency-Key header, if any; 422 unless it is 1 to 255 printable ASCII characters (it is
    stored, and compared byte for byte)."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        reason = f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        raise InvalidInput(f"Idempotency-Key {reason}", {"fields": {"Idempotency-Key": [reason]}})
    return key


def _replayed(previous) -> Any:
    response = jsonify(previous.response)
    response.status_code = previous.status_code
    response.headers["Idempotent-Replay"] = "true"
    return response


def _body_for_fingerprint() -> Any:
    if request.files:
        return {name: [f.filename for f in request.files.getlist(name)] for name in request.files}
    return request.get_json(silent=True)
