"""GET/POST /m/tasks/<id> (a task: summary, history, 同意/驳回) and GET /m/instances/<id> (read-only).

No session: to the WeCom login inside WeCom, else to the password login (either comes back here). A
decision posts the session's CSRF token and goes through complete_task with
channel "web", as the REST API's does; engine errors become a Chinese message on the page, never a 5xx.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from urllib.parse import quote

from flask import Response, redirect, request
from sqlalchemy.orm import Session

from adapters.wecom.config import configured as wecom_configured
from api.web import blp
from api.web.pages import current_login, error_page, next_query, page
from api.web.summary import facts, item_lists, local_time, names, status_text, timeline
from engine.db import transaction
from engine.errors import FinflowError
from engine.finance.money import yuan
from engine.history import Actor
from engine.models import Instance, Task, User
from engine.services import second_factor
from engine.services.deployments import model_for
from engine.services.queries import INBOX_TABS, get_instance, inbox
from engine.services.second_factor_policy import approval_need
from engine.services.tasks import complete_task, return_task, transfer_task

MAX_COMMENT = 2000
ID_CHARS = 36


@dataclass(frozen=True)
class Login:
    user_id: str
    csrf: str


def logged_in(view: Callable[..., Response]) -> Callable[..., Response]:
    """Resolve the browser's session first (its own short transaction); none → the login or a page saying
    to open the link from WeCom. The view gets `login` and opens its own transactions."""

    @wraps(view)
    def wrapper(**kwargs) -> Response:
        with transaction(readonly=True) as session:
            found = current_login(session)
            login = Login(found[0].id, found[1].csrf_token) if found else None
        return _login_first() if login is None else view(login, **kwargs)

    return wrapper


def with_user(roles: frozenset[str] | None = None, refusal: str = "") -> Callable:
    """`logged_in`, then the user read in a read-only transaction the view runs in: view(session, user,
    login, …). With `roles`, a user holding none of them gets a 403 page saying `refusal`."""

    def decorate(view: Callable[..., Response]) -> Callable[..., Response]:
        @logged_in
        @wraps(view)
        def wrapper(login: Login, **kwargs) -> Response:
            with transaction(readonly=True) as session:
                user = session.get(User, login.user_id)
                if roles is not None and not user.role_ids & roles:
                    return error_page("无权访问", refusal, 403)
                return view(session, user, login, **kwargs)

        return wrapper

    return decorate


@blp.get("/m/")
@logged_in
def my_tasks(login: Login) -> Response:
    """Where a login without a (safe) next lands: 待办 (or the tab asked for: 已办, 我发起的, 抄送我的)."""
    tab = request.args.get("tab", "todo")
    if tab not in INBOX_TABS:
        tab = "todo"
    with transaction(readonly=True) as session:
        rows = inbox(session, session.get(User, login.user_id), tab)
        who = names(session, {instance.starter_id for _, instance in rows})
        items = [_inbox_item(session, task, instance, who) for task, instance in rows]
        return page("tasks.html", tab=tab, items=items, csrf=login.csrf)


def _inbox_item(session: Session, task: Task | None, instance: Instance, who: dict[str, str]) -> dict[str, str]:
    """One line of a list: 「费用报销 · 苏晓云 · ¥1,200.00」, the node and status, and when."""
    amount = yuan(instance.amount) if instance.amount is not None else ""
    title = [model_for(session, instance.version_id).name, who.get(instance.starter_id, instance.starter_id), amount]
    when = (task.completed_at or task.created_at) if task else instance.started_at
    return {"href": f"/m/tasks/{task.id}" if task else f"/m/instances/{instance.id}",
            "title": " · ".join(part for part in title if part),
            "detail": (f"{task.name} · " if task else "") + status_text(instance), "when": local_time(when)}


@blp.get("/m/tasks/<task_id>")
@logged_in
def task_page(login: Login, task_id: str) -> Response:
    with transaction(readonly=True) as session:
        return _render_task(session, session.get(User, login.user_id), task_id[:ID_CHARS], login.csrf)


@blp.post("/m/tasks/<task_id>")
@logged_in
def decide(login: Login, task_id: str) -> Response:
    task_id = task_id[:ID_CHARS]
    action, comment = request.form.get("action", ""), (request.form.get("comment") or "").strip()[:MAX_COMMENT]
    if not hmac.compare_digest(request.form.get("csrf", ""), login.csrf):
        return error_page("操作失败", "页面已过期，请刷新后重试。", 403)
    if action not in ("approve", "reject", "return", "transfer"):
        return error_page("操作失败", "请选择同意、驳回、退回或转办。", 400)
    target = (request.form.get("to") or "").strip()[:64]
    actor = Actor(login.user_id, "web", request.remote_addr, (request.headers.get("User-Agent") or "")[:255])
    try:
        with transaction() as session:
            if action == "transfer":
                transfer_task(session, actor, task_id, target, comment or None)
            elif action == "return":
                return_task(session, actor, task_id, "applicant", comment or None)
            else:
                complete_task(session, actor, task_id, action, comment or None, otp=_otp())
    except FinflowError as exc:
        second_factor.record_refusal(exc)  # a wrong code counts: recorded now the command's transaction is gone
        with transaction(readonly=True) as session:
            return _render_task(session, session.get(User, login.user_id), task_id, login.csrf, exc.message,
                                exc.status)
    return redirect(f"/m/tasks/{quote(task_id)}", code=303)


@blp.get("/m/instances/<instance_id>")
@logged_in
def instance_page(login: Login, instance_id: str) -> Response:
    with transaction(readonly=True) as session:
        try:
            instance = get_instance(session, session.get(User, login.user_id), instance_id[:ID_CHARS])
        except FinflowError as exc:
            return error_page("无法查看", exc.message, exc.status)
        return page("instance.html", **_instance_context(session, instance))


def _render_task(session: Session, user: User, task_id: str, csrf: str, error: str | None = None,
                 status: int = 200) -> Response:
    task = session.get(Task, task_id)
    if task is None:
        return error_page("任务不存在", f"任务 {task_id} 不存在。", 404)
    instance = session.get(Instance, task.instance_id)
    is_candidate = user.id in task.candidates
    if not is_candidate:
        try:
            get_instance(session, user, instance.id)
        except FinflowError as exc:
            return error_page("无法查看", exc.message, exc.status)
    needs_code = "approve" in task.actions and approval_need(instance) is not None
    return page("task.html", status, task=task, csrf=csrf, error=error, can_act=_can_act(task, instance, user),
                reason=_why_not(task, instance, user), needs_code=needs_code,
                has_second_factor=second_factor.enabled(user), **_instance_context(session, instance))


def _otp() -> str | None:
    """The 动态验证码 typed on the page (spaces allowed: authenticator apps show "123 456")."""
    code = "".join((request.form.get("otp") or "").split())[:16]
    return code or None


def _can_act(task: Task, instance: Instance, user: User) -> bool:
    return (instance.status == "running" and task.status == "ready" and user.id in task.candidates
            and bool({"approve", "reject"} & set(task.actions)))


def _why_not(task: Task, instance: Instance, user: User) -> str | None:
    """Why the page is read-only for this user (None: they may act)."""
    if instance.status != "running":
        return f"流程{status_text(instance)}"
    if task.status == "completed":
        return "该任务已处理"
    if task.status == "cancelled":
        return "该任务已取消或已转给他人"
    if user.id not in task.candidates:
        return "您不是该任务的审批人，只能查看"
    if task.status == "waiting":
        return "尚未轮到您处理"
    if not {"approve", "reject"} & set(task.actions):
        return "该任务需在其他页面处理"
    return None


def _instance_context(session: Session, instance: Instance) -> dict:
    model = model_for(session, instance.version_id)
    starter = names(session, {instance.starter_id})
    return {"instance": instance, "process_name": model.name, "facts": facts(model, instance),
            "item_lists": item_lists(model, instance),
            "applicant": starter.get(instance.starter_id, instance.starter_id),
            "amount": yuan(instance.amount) if instance.amount is not None else None,
            "status": status_text(instance), "steps": timeline(session, instance.id)}


def _login_first() -> Response:
    """Inside WeCom (its browser says `wxwork`) with WeCom configured: OAuth2, no password typed; else the
    password login. Either comes back to this page."""
    configured = wecom_configured()
    back = next_query(request.full_path.rstrip("?") if request.query_string else request.path)
    if configured and "wxwork" in (request.headers.get("User-Agent") or "").lower():
        return redirect(f"/wecom/oauth/start?{back}", code=302)
    return redirect(f"/login?{back}", code=302)
