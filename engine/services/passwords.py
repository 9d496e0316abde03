"""Local password login, for the demo and companies without WeCom (inside WeCom, OAuth2 logs people in).

Passwords are hashed with argon2id (argon2-cffi). Every attempt is recorded in `login_attempts`: the
audit trail of failed logins, and what the rate limit counts — too many failures for one login or from
one address within the window and further attempts are refused (429) before the password is even
checked, so guessing costs the attacker time, not us CPU. A refused login never says whether the user
exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import clock
from engine.errors import FinflowError, TooManyRequests, Unauthorized
from engine.models import LoginAttempt, User
from engine.services import sessions

WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_LOGIN = 5
MAX_FAILURES_PER_ADDRESS = 20
MIN_LENGTH = 8
_hasher = PasswordHasher()
_UNUSABLE = _hasher.hash("finflow: no such user")  # an unknown login costs a verify too (no timing hint)


@dataclass
class LoginOutcome:
    """A new session's cookie value, or why there is none (401 or 429, to show as it is)."""

    cookie: str | None
    refusal: FinflowError | None = None


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    return _hasher.hash(password)


def set_password(session: Session, user_id: str, password: str) -> None:
    user = session.get(User, user_id)
    if user is None:
        raise ValueError(f"no user {user_id!r}")
    user.password_hash = hash_password(password)


def log_in(session: Session, login: str, password: str, client_ip: str | None,
           user_agent: str | None) -> LoginOutcome:
    """Check a password login. The attempt is recorded whatever the outcome, so this returns a refusal
    (429 when limited, else 401 with the same words whatever was wrong) instead of raising: the caller
    commits either way."""
    login = login.strip()[:64]
    now = clock.now()
    if _failures(session, LoginAttempt.login == login, now) >= MAX_FAILURES_PER_LOGIN or (
            client_ip and _failures(session, LoginAttempt.client_ip == client_ip, now) >= MAX_FAILURES_PER_ADDRESS):
        record(session, login, client_ip, user_agent, "limited")
        limited = TooManyRequests("登录失败次数过多，请 15 分钟后再试", int(WINDOW.total_seconds()))
        limited.code = "too_many_login_attempts"
        return LoginOutcome(None, limited)
    user = session.get(User, login) if login else None
    reason = _refusal(user, password)
    record(session, login, client_ip, user_agent, reason)
    if reason is not None:
        return LoginOutcome(None, Unauthorized("账号或密码错误", code="login_failed"))
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return LoginOutcome(sessions.create_session(session, user.id, "password", client_ip, user_agent))


def _refusal(user: User | None, password: str) -> str | None:
    try:
        _hasher.verify(user.password_hash if user is not None and user.password_hash else _UNUSABLE, password)
    except (VerificationError, InvalidHashError):
        return "wrong_password" if user is not None else "unknown_user"
    if user is None or not user.password_hash:
        return "unknown_user"
    return None if user.active else "inactive"


def record(session: Session, login: str, client_ip: str | None, user_agent: str | None, reason: str | None) -> None:
    session.add(LoginAttempt(login=login, client_ip=(client_ip or "")[:64] or None,
                             user_agent=(user_agent or "")[:255] or None, succeeded=reason is None,
                             reason=reason, at=clock.now()))
    session.flush()


def _failures(session: Session, who, now) -> int:
    return session.scalar(select(func.count()).select_from(LoginAttempt).where(
        who, LoginAttempt.succeeded.is_(False), LoginAttempt.at > now - WINDOW)) or 0
