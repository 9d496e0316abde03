"""API tokens for systems: issued per user, stored as SHA-256, presented as `Authorization: Bearer`.

A token is scoped (which operations it may be used for, never more than its user's roles allow),
expires (FINFLOW_TOKEN_DAYS, 90 by default), records when and from where it was last used, and can be
revoked by its user or an administrator. Issuing and revoking go to the security log.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine import clock
from engine.errors import InvalidInput, NotFound, Unauthorized
from engine.history import Actor
from engine.models import ApiToken, User
from engine.services import access, security_log

TOKEN_PREFIX = "ff_"
ALL_SCOPES = "*"  # every operation the user's roles allow
SCOPES = {
    "read": "read instances, tasks, definitions, budgets, notifications",
    "start": "start, withdraw, urge and copy instances",
    "approve": "complete, transfer, delegate, return tasks; add signers",
    "design": "validate and deploy process definitions",
    "admin": "administration: outbox, event subscriptions, roles, tokens of others, cancel",
    "account": "manage the user's own tokens and second factor",
}
DEFAULT_DAYS = 90
MAX_DAYS = 730
TOUCH_INTERVAL = timedelta(minutes=1)  # last_used_at is written at most this often per token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_scopes(scopes: list[str] | None) -> list[str]:
    """The scopes asked for, checked; none asked means all (`*`)."""
    if not scopes:
        return [ALL_SCOPES]
    unknown = sorted(set(scopes) - set(SCOPES) - {ALL_SCOPES})
    if unknown:
        raise InvalidInput(f"未知的令牌权限范围：{', '.join(unknown)}", {"fields": {"scopes": [
            f"unknown scopes {unknown}; use any of {sorted(SCOPES)} or '*'"]}})
    return [ALL_SCOPES] if ALL_SCOPES in scopes else sorted(set(scopes))


def lifetime_days(days: int | None) -> int:
    if days is None:
        days = int(os.environ.get("FINFLOW_TOKEN_DAYS") or DEFAULT_DAYS)
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"令牌有效期须为 1 到 {MAX_DAYS} 天", {"fields": {"expires_in_days": [
            f"must be between 1 and {MAX_DAYS}"]}})
    return days


def issue(session: Session, user_id: str, label: str = "", *, scopes: list[str] | None = None,
          expires_in_days: int | None = None, actor: Actor | None = None) -> tuple[ApiToken, str]:
    """A new token for `user_id`: the row and the secret (shown once, never stored)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"用户 {user_id} 不存在", {"user_id": user_id})
    if not user.active:
        raise InvalidInput(f"用户 {user_id} 已停用，不能签发令牌", {"fields": {"user_id": ["user is inactive"]}})
    scopes = check_scopes(scopes)
    now = clock.now()
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user_id, token_hash=hash_token(secret), label=label[:128], scopes=scopes,
                   created_at=now, expires_at=now + timedelta(days=lifetime_days(expires_in_days)))
    session.add(row)
    session.flush()
    security_log.record(session, "token.issued", actor or Actor(None, "cli"), "token", str(row.id),
                        user=user_id, label=row.label, scopes=scopes, expires_at=row.expires_at.isoformat())
    return row, secret


def issue_token(session: Session, user_id: str, label: str = "", **options) -> str:
    """`issue`, returning only the secret (the CLI and tests)."""
    return issue(session, user_id, label, **options)[1]


def authenticate(session: Session, token: str | None) -> User:
    return authenticate_token(session, token)[0]


def authenticate_token(session: Session, token: str | None) -> tuple[User, ApiToken]:
    """The user and token row behind a bearer token; 401 for unknown, expired, revoked, or inactive."""
    if not token:
        raise Unauthorized("缺少访问令牌：请使用 Authorization: Bearer <token>")
    found = session.execute(select(User, ApiToken).join(ApiToken, ApiToken.user_id == User.id)
                            .where(ApiToken.token_hash == hash_token(token))).first()
    if found is None:
        raise Unauthorized("访问令牌无效")
    user, row = found
    if row.revoked_at is not None:
        raise Unauthorized("访问令牌已吊销", {"token_id": row.id}, code="token_revoked")
    if row.expires_at is not None and row.expires_at <= clock.now():
        raise Unauthorized("访问令牌已过期，请重新签发", {"token_id": row.id}, code="token_expired")
    if not user.active:
        raise Unauthorized("用户已停用", {"user_id": user.id})
    return user, row


def allows(row: ApiToken, scope: str) -> bool:
    return ALL_SCOPES in row.scopes or scope in row.scopes


def touch(session: Session, token_id: int, client_ip: str | None) -> None:
    """Note the token's use, at most once a TOUCH_INTERVAL (a write per request would serialize readers)."""
    now = clock.now()
    session.execute(update(ApiToken).where(ApiToken.id == token_id, (ApiToken.last_used_at.is_(None))
                                           | (ApiToken.last_used_at < now - TOUCH_INTERVAL))
                    .values(last_used_at=now, last_used_ip=(client_ip or "")[:64] or None))


def list_tokens(session: Session, user_id: str) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)))


def revoke(session: Session, actor: Actor, token_id: int, caller: User | None = None) -> ApiToken:
    """Revoke one token: its owner or an administrator (caller None: the CLI, an operator)."""
    row = session.get(ApiToken, token_id)
    if row is None or (caller is not None and row.user_id != caller.id and not access.may(caller, "administer")):
        raise NotFound(f"令牌 {token_id} 不存在", {"token_id": token_id})  # others' token ids are not probed
    if row.revoked_at is None:
        row.revoked_at, row.revoked_by = clock.now(), actor.user_id
        security_log.record(session, "token.revoked", actor, "token", str(row.id), user=row.user_id)
    return row


def revoke_all(session: Session, actor: Actor, user_id: str, reason: str) -> int:
    """Every live token of a user, e.g. when they are deactivated; returns how many."""
    now = clock.now()
    ids = list(session.scalars(select(ApiToken.id).where(ApiToken.user_id == user_id,
                                                         ApiToken.revoked_at.is_(None))))
    if ids:
        session.execute(update(ApiToken).where(ApiToken.id.in_(ids)).values(revoked_at=now, revoked_by=actor.user_id))
        security_log.record(session, "token.revoked", actor, "user", user_id, tokens=ids, reason=reason)
    return len(ids)
