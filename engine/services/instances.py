"""Starting, withdrawing and cancelling process instances."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.history import Actor
from engine.models import Instance, ProcessDefinition, ProcessVersion, User
from engine.runner.execution import InstanceRun, utcnow
from engine.services.deployments import model_for
from engine.services.forms import validate_form

BUSINESS_KEY_PREFIX = {"reimbursement": "BX", "payment": "FK", "contract": "HT"}
CANCEL_ROLES = {"admin"}


def start_instance(session: Session, actor: Actor, process_key: str, data: dict[str, Any],
                   business_key: str | None = None) -> Instance:
    latest = session.execute(
        select(ProcessVersion.id, ProcessVersion.content_hash).join(
            ProcessDefinition, (ProcessDefinition.key == ProcessVersion.process_key)
            & (ProcessDefinition.latest_version == ProcessVersion.version))
        .where(ProcessVersion.process_key == process_key)).first()
    if latest is None:
        raise NotFound(f"流程 '{process_key}' 不存在", {"process_key": process_key})
    version_id, content_hash = latest
    model = model_for(session, version_id, content_hash)
    if model.start_form:
        validate_form(model.form(model.start_form), data, "data")
    now = utcnow()
    instance_id = str(uuid.uuid4())
    instance = Instance(
        id=instance_id, process_key=process_key, version_id=version_id,
        business_key=business_key or _business_key(process_key, instance_id, now),
        starter_id=actor.user_id, status="running", title=_title(data), amount=_amount(data), data=data,
        state="", last_seq=0, started_at=now, updated_at=now,
    )
    session.add(instance)
    run = InstanceRun.start(session, instance, model, data, actor)
    run.save()
    return instance


def lock_instance(session: Session, instance_id: str) -> Instance:
    """Load an instance holding its row lock, so concurrent commands on it queue instead of racing."""
    instance = session.get(Instance, instance_id, with_for_update=True, populate_existing=True)
    if instance is None:
        raise NotFound(f"流程实例 {instance_id} 不存在", {"instance_id": instance_id})
    return instance


def withdraw_instance(session: Session, actor: Actor, instance_id: str, reason: str | None) -> Instance:
    instance = lock_instance(session, instance_id)
    if instance.starter_id != actor.user_id:
        raise Forbidden("只有申请人可以撤回申请", {"instance_id": instance_id})
    return _terminate(session, actor, instance, "withdrawn", reason)


def cancel_instance(session: Session, actor: Actor, instance_id: str, reason: str | None) -> Instance:
    instance = lock_instance(session, instance_id)
    user = session.get(User, actor.user_id)
    if user is None or not (user.role_ids & CANCEL_ROLES):
        raise Forbidden("只有管理员可以作废流程实例", {"required_roles": sorted(CANCEL_ROLES)})
    return _terminate(session, actor, instance, "cancelled", reason)


def _terminate(session: Session, actor: Actor, instance: Instance, status: str, reason: str | None) -> Instance:
    if instance.status not in ("running", "failed"):
        raise Conflict(f"流程实例已结束（{instance.status}），不能再{'撤回' if status == 'withdrawn' else '作废'}",
                       {"instance_id": instance.id, "status": instance.status})
    run = InstanceRun.load(session, instance, model_for(session, instance.version_id), actor)
    run.terminate(status, reason)
    run.save()
    return instance


def _business_key(process_key: str, instance_id: str, now) -> str:
    prefix = BUSINESS_KEY_PREFIX.get(process_key, process_key[:4].upper())
    return f"{prefix}-{now:%Y%m%d}-{instance_id[:6].upper()}"


def _title(data: dict[str, Any]) -> str | None:
    for key in ("title", "reason", "purpose", "payee"):
        if isinstance(data.get(key), str) and data[key].strip():
            return data[key][:255]
    return None


def _amount(data: dict[str, Any]) -> Decimal | None:
    value = data.get("amount")
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput("amount must be a number", {"fields": {"amount": ["must be a number"]}}) from None
    return amount.quantize(Decimal("0.01")) if amount.is_finite() else None
