"""Changes to people that reach into running approvals: a user who leaves or is disabled loses approval
rights at once, and the tasks waiting on them move on (the engine knows nothing of where the change came
from; org sync from WeCom is one caller)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from engine import clock
from engine.errors import NotFound
from engine.history import Actor
from engine.models import ApiToken, Instance, ProcessVersion, Task, TaskCandidate, User, WebSession
from engine.runner.execution import run_command
from engine.services import auth, security_log, sessions
from engine.services.deployments import model_for

DEACTIVATED = "用户已停用"


def deactivate_users(session: Session, user_ids: list[str], actor: Actor,
                     reason: str = DEACTIVATED) -> list[dict[str, Any]]:
    """Mark the users inactive and take them off every open task, through the runner so history records
    `task.reassigned` and the outbox tells the channels. Returns one entry per task row touched:
    task_id, instance_id, user, candidates (who holds it now; [] when the row was closed)."""
    user_ids = sorted(set(user_ids))
    if not user_ids:
        return []
    session.execute(update(User).where(User.id.in_(user_ids)).values(active=False))
    session.flush()
    for user_id in user_ids:  # logged out everywhere at once, and a later reactivation brings none back
        ended = sessions.revoke_all(session, user_id)
        revoked = auth.revoke_all(session, actor, user_id, reason)
        security_log.record(session, "user.deactivated", actor, "user", user_id, reason=reason,
                            sessions_revoked=ended, tokens_revoked=revoked)
    by_instance: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for task_id, instance_id, user_id in session.execute(
            select(Task.id, Task.instance_id, TaskCandidate.user_id)
            .join(TaskCandidate, TaskCandidate.task_id == Task.id)
            .where(TaskCandidate.user_id.in_(user_ids), Task.status.in_(["ready", "waiting"]))
            .order_by(Task.instance_id, Task.position)):
        by_instance[instance_id].append((task_id, user_id))
    return [entry for instance_id, rows in by_instance.items()
            for entry in _release(session, instance_id, rows, actor, reason)]


def deactivate_user(session: Session, actor: Actor, user_id: str, reason: str = DEACTIVATED) -> dict[str, Any]:
    """One user, as an administrator asks: what `deactivate_users` did, counted."""
    if session.get(User, user_id) is None:
        raise NotFound(f"用户 {user_id} 不存在", {"user_id": user_id})
    live_sessions = session.scalar(select(func.count()).select_from(WebSession).where(
        WebSession.user_id == user_id, WebSession.revoked_at.is_(None), WebSession.expires_at > clock.now()))
    live_tokens = session.scalar(select(func.count()).select_from(ApiToken).where(
        ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)))
    released = deactivate_users(session, [user_id], actor, reason)
    return {"user_id": user_id, "tasks_released": len(released), "tokens_revoked": live_tokens,
            "sessions_revoked": live_sessions}


def _release(session: Session, instance_id: str, rows: list[tuple[str, str]], actor: Actor,
             reason: str) -> list[dict[str, Any]]:
    """One instance, locked, restored once: every affected row released in one command."""
    instance, content_hash = session.execute(
        select(Instance, ProcessVersion.content_hash).join(ProcessVersion, ProcessVersion.id == Instance.version_id)
        .where(Instance.id == instance_id).with_for_update(of=Instance)
        .execution_options(populate_existing=True)).one()
    if instance.status != "running":
        return []
    model = model_for(session, instance.version_id, content_hash)

    def command(run) -> list[dict[str, Any]]:
        done = []
        for task_id, user_id in rows:
            task = session.get(Task, task_id, populate_existing=True)
            if task.status not in ("ready", "waiting"):  # closed by an earlier release in this command
                continue
            candidates = run.release_candidate(task, user_id, reason)
            done.append({"task_id": task_id, "instance_id": instance_id, "user": user_id,
                         "candidates": candidates})
        return done

    return run_command(session, instance, model, actor, command)
