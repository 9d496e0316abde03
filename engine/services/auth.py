"""API tokens: issued per user by the CLI, stored as SHA-256, presented as `Authorization: Bearer`."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import NotFound, Unauthorized
from engine.models import ApiToken, User
from engine.runner.execution import utcnow

TOKEN_PREFIX = "ff_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, user_id: str, label: str = "") -> str:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"用户 {user_id} 不存在", {"user_id": user_id})
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user_id, token_hash=hash_token(token), label=label, created_at=utcnow()))
    session.flush()
    return token


def authenticate(session: Session, token: str | None) -> User:
    if not token:
        raise Unauthorized("缺少访问令牌：请使用 Authorization: Bearer <token>")
    user = session.scalar(select(User).join(ApiToken, ApiToken.user_id == User.id)
                          .where(ApiToken.token_hash == hash_token(token)))
    if user is None:
        raise Unauthorized("访问令牌无效")
    if not user.active:
        raise Unauthorized("用户已停用", {"user_id": user.id})
    return user
