"""Per-request plumbing: the transaction, the authenticated user, the Actor and Idempotency-Key replay."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import jsonify, request
from marshmallow import Schema
from sqlalchemy.exc import IntegrityError

from engine.db import transaction
from engine.errors import FinflowError, InvalidInput
from engine.history import Actor
from engine.models import User
from engine.services import idempotency
from engine.services.auth import authenticate

MAX_KEY_LENGTH = 255


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def request_actor(user: User) -> Actor:
    forwarded = request.headers.get("X-Forwarded-For", "")
    ip = forwarded.split(",")[0].strip() or request.remote_addr
    return Actor(user_id=user.id, channel="api", client_ip=ip, user_agent=request.headers.get("User-Agent"))


def authenticated(view: Callable[..., Any]) -> Callable[..., Any]:
    """Read-only views: run in one transaction with the caller's user as `user`."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        with transaction(readonly=True) as session:
            user = authenticate(session, bearer_token())
            return view(*args, session=session, user=user, **kwargs)

    return wrapper


def command(schema: type[Schema], status: int = 200) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mutating views: one transaction holding the command and its Idempotency-Key record.

    The view's result is serialized with `schema` inside the transaction, so the remembered response is
    exactly the one sent. A retry with the same key and body gets the stored response
    back without running the command again; the same key with a different body is refused.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args, **kwargs):
            key = request.headers.get("Idempotency-Key")
            if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH):
                raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
            try:
                return _run(view, key, args, kwargs)
            except (IntegrityError, FinflowError):
                # A concurrent twin with the same key may have committed first (its invoice claims or
                # its key record then collide with ours): answer with its result, else the error stands.
                twin = _committed_twin(key) if key is not None else None
                if twin is None:
                    raise
                return twin

        return wrapper

    def _committed_twin(key):
        with transaction(readonly=True) as session:
            user = authenticate(session, bearer_token())
            fingerprint = idempotency.fingerprint(request.method, request.path, _body_for_fingerprint())
            previous = idempotency.replay(session, user.id, key, fingerprint)
            return _replayed(previous) if previous is not None else None

    def _run(view, key, args, kwargs):
        with transaction() as session:
            user = authenticate(session, bearer_token())
            fingerprint = idempotency.fingerprint(request.method, request.path, _body_for_fingerprint())
            if key is not None:
                previous = idempotency.replay(session, user.id, key, fingerprint)
                if previous is not None:
                    return _replayed(previous)
            body = schema().dump(view(*args, session=session, user=user, actor=request_actor(user), **kwargs))
            if key is not None:
                idempotency.remember(session, user.id, key, fingerprint, status, body)
        response = jsonify(body)
        response.status_code = status
        return response

    return decorate


def _replayed(previous) -> Any:
    response = jsonify(previous.response)
    response.status_code = previous.status_code
    response.headers["Idempotent-Replay"] = "true"
    return response


def _body_for_fingerprint() -> Any:
    if request.files:
        return {name: [f.filename for f in request.files.getlist(name)] for name in request.files}
    return request.get_json(silent=True)
