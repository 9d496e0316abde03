"""finflow user ↔ OA user: E9 identifies people by HrmResource id, finflow by its own user id.

Links come from OA's HRM directory (`finflow oa users --sync`: an OA login name equal to a finflow user id
links them) or are set one by one (`finflow oa users --link USER=OA_ID`). A decision by an OA user with no
link is refused, never applied as somebody else.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from adapters.oa.config import OAConfig
from adapters.oa.models import OAUserLink
from adapters.oa.system import system
from engine import clock
from engine.db import transaction
from engine.models import User


def oa_user_of(session: Session, user_id: str | None) -> str | None:
    if not user_id:
        return None
    return session.scalar(select(OAUserLink.oa_user_id).where(OAUserLink.user_id == user_id))


def oa_users_of(session: Session, user_ids: set[str]) -> dict[str, str]:
    if not user_ids:
        return {}
    return dict(session.execute(select(OAUserLink.user_id, OAUserLink.oa_user_id)
                                .where(OAUserLink.user_id.in_(user_ids))).all())


def user_of(session: Session, oa_user_id: str) -> str | None:
    return session.scalar(select(OAUserLink.user_id).where(OAUserLink.oa_user_id == str(oa_user_id)))


def link(session: Session, user_id: str, oa_user_id: str, login: str | None = None) -> None:
    """Link one finflow user to one OA user, replacing whatever either was linked to."""
    session.execute(delete(OAUserLink).where((OAUserLink.user_id == user_id) | (OAUserLink.oa_user_id == oa_user_id)))
    session.flush()
    session.add(OAUserLink(user_id=user_id, oa_user_id=str(oa_user_id), oa_login=login, linked_at=clock.now()))


def sync_links(config: OAConfig, database_url: str | None = None) -> dict[str, Any]:
    """Link every finflow user whose id is an OA login name; returns what was linked and what was not."""
    directory = system(config).users()
    with transaction(database_url) as session:
        finflow = set(session.scalars(select(User.id)))
        known = dict(session.execute(select(OAUserLink.user_id, OAUserLink.oa_user_id)).all())
        linked = []
        for person in directory:
            if person.login in finflow and known.get(person.login) != person.id:
                link(session, person.login, person.id, person.login)
                linked.append(person.login)
        matched = {p.login for p in directory} & finflow
    return {"oa_users": len(directory), "linked": sorted(linked), "already_linked": len(matched) - len(linked),
            "finflow_users_without_oa_user": sorted(finflow - matched)}
