"""Browser sessions: the approver page opened from WeCom now, the web pages (issue 16) later.

The cookie carries 32 random bytes; only their SHA-256 is stored (as for API tokens), so a copy of the
database logs nobody in. Each session has its own CSRF token for the forms it posts.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from engine import clock
from engine.models import User, WebSession
from engine.services.auth import hash_token

LIFETIME = timedelta(hours=8)
COOKIE = "ff_session"  # the browser cookie that carries a session (api/web/pages.py sets it)


def create_session(session: Session, user_id: str, channel: str, client_ip: str | None,
                   user_agent: str | None) -> str:
    """A new login for `user_id`; returns the cookie value (shown once, never stored)."""
    cookie = secrets.token_urlsafe(32)
    now = clock.now()
    session.add(WebSession(id_hash=hash_token(cookie), user_id=user_id, channel=channel,
                           csrf_token=secrets.token_urlsafe(32), client_ip=(client_ip or "")[:64] or None,
                           user_agent=(user_agent or "")[:255] or None, created_at=now, expires_at=now + LIFETIME))
    session.flush()
    return cookie


def resolve(session: Session, cookie: str | None) -> tuple[User, WebSession] | None:
    """The user and session behind a cookie, or None when unknown, expired, revoked or the user inactive."""
    if not cookie or len(cookie) > 128:
        return None
    web = session.get(WebSession, hash_token(cookie))
    if web is None or web.revoked_at is not None or web.expires_at <= clock.now():
        return None
    user = session.get(User, web.user_id)
    if user is None or not user.active:
        return None
    return user, web


def revoke(session: Session, cookie: str | None) -> bool:
    """Log a browser out; True when there was a live session."""
    web = session.get(WebSession, hash_token(cookie)) if cookie else None
    if web is None or web.revoked_at is not None:
        return False
    web.revoked_at = clock.now()
    return True



def revoke_all(session: Session, user_id: str) -> int:
    """Log a user out everywhere (deactivation); returns how many live sessions ended."""
    now = clock.now()
    return session.execute(update(WebSession).where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None),
                                                   WebSession.expires_at > now).values(revoked_at=now)).rowcount
