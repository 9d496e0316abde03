"""Org lookups for service tasks, e.g. loading the countersign (会签) group before a multi-instance task."""

from __future__ import annotations

from sqlalchemy import select

from engine.models import GroupMember, User
from engine.operators import OperatorContext, operator


@operator("org_group_members")
def org_group_members(ctx: OperatorContext, group: str) -> list[str]:
    members = ctx.session.scalars(
        select(GroupMember.user_id).join(User, User.id == GroupMember.user_id)
        .where(GroupMember.group_id == group, User.active.is_(True)).order_by(GroupMember.user_id))
    result = list(members)
    if not result:
        raise LookupError(f"group '{group}' has no active members")
    return result
