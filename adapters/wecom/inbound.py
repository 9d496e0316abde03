"""Applying an accepted callback (the `channels` queue job queued by callback.py).

A click on a card becomes the same command the REST API runs (engine.services.tasks.complete_task), with
the actor's channel "wecom". Nothing on the card is trusted alone: the card must exist under the event's
TaskId, the button key must name that card's own task, and the clicker must be an active finflow user
(id == WeCom userid) whom complete_task accepts. A refusal updates the clicker's card (无权处理, 已处理,
已被他人处理, 已撤回) with the click's own ResponseCode, and a click by someone who may not act is recorded
in the instance's history (`task.action_refused`). A click cannot carry a second factor: on a task that
needs one (a large payment) it is refused the same way, the card says so and a link to the approver page
(which asks for the code) is sent.

A crash half-way leaves the callback row `queued` and its job failed; callback.requeue_stale hands it over
again, and complete_task's checks make a second run a Conflict (已处理), never a second decision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.wecom import cards
from adapters.wecom.client import WeComError, client
from adapters.wecom.config import WeComConfig
from adapters.wecom.deliveries import result_of
from adapters.wecom.models import WeComCallback, WeComCard
from engine import clock
from engine.db import transaction
from engine.errors import Conflict, FinflowError, Forbidden
from engine.history import Actor
from engine.models import Task, User
from engine.services.tasks import complete_task, record_refused_action

log = logging.getLogger("finflow.wecom.inbound")
ACTIONS = ("approve", "reject")
NOT_ALLOWED = "无权处理"
NEEDS_CODE = "需动态验证码，请在审批页处理"  # the card's button text: short, WeCom shows it in place of the buttons
NEEDS_CODE_TEXT = "该审批需要动态验证码，请在审批页面完成"
MAX_ATTEMPTS = 5
PENDING = ("received", "queued")  # stored, not yet applied (see callback.py)


@dataclass
class Outcome:
    """What applying a callback did: the row's status and result, and the text the clicker's card shows."""

    status: str  # applied | refused | failed
    result: str
    card_text: str | None = None
    page_task_id: str | None = None  # also send the clicker a link to this task's approver page


def apply(callback_id: int, database_url: str | None = None) -> str:
    """Apply one stored callback once; returns the row's status afterwards. Safe to run again."""
    if not _count_attempt(callback_id, database_url):
        return _status(database_url, callback_id)
    with transaction(database_url, readonly=True) as session:
        kind, payload = session.execute(select(WeComCallback.kind, WeComCallback.payload)
                                        .where(WeComCallback.id == callback_id)).one()
    if kind == "change_contact":  # the sync writes in a transaction of its own (idempotent if run again)
        return _apply_contact_change(callback_id, payload, database_url)
    try:
        with transaction(database_url) as session:
            row = _lock_received(session, callback_id)
            if row is None:
                return _status(database_url, callback_id)
            event = dict(row.payload)
            outcome = _apply(session, row)
            _finish(row, outcome)
    except FinflowError as refusal:  # complete_task refused: its transaction is gone, record the refusal
        with transaction(database_url) as session:
            row = _lock_received(session, callback_id)
            if row is None:
                return _status(database_url, callback_id)
            event = dict(row.payload)
            outcome = _refused(session, row, refusal)
            _finish(row, outcome)
    _update_card(event, outcome, callback_id)  # after the commit: no transaction open during the HTTP call
    return outcome.status


def _lock_received(session: Session, callback_id: int) -> WeComCallback | None:
    row = session.scalar(select(WeComCallback).where(WeComCallback.id == callback_id).with_for_update())
    if row is None or row.status not in PENDING:
        return None
    return row


def _count_attempt(callback_id: int, database_url: str | None) -> bool:
    """Count this run in its own transaction (a crash below rolls back everything else); a callback whose
    runs crashed MAX_ATTEMPTS times is marked failed instead of being re-queued for ever. False: not to run."""
    with transaction(database_url) as session:
        row = _lock_received(session, callback_id)
        if row is None:
            return False
        row.attempts += 1
        if row.attempts > MAX_ATTEMPTS:
            _finish(row, Outcome("failed", f"gave up after {MAX_ATTEMPTS} attempts that did not finish"))
            return False
    return True


def _status(database_url: str | None, callback_id: int) -> str:
    with transaction(database_url, readonly=True) as session:
        return session.scalar(select(WeComCallback.status).where(WeComCallback.id == callback_id)) or "missing"


def _finish(row: WeComCallback, outcome: Outcome) -> None:
    row.status, row.result, row.applied_at = outcome.status, outcome.result[:2000], clock.now()
    log_line = log.info if outcome.status == "applied" else log.warning
    log_line("wecom callback %s (%s from %s): %s: %s", row.id, row.kind, row.from_user, outcome.status, outcome.result)


def _apply(session: Session, row: WeComCallback) -> Outcome:
    if row.kind == "template_card_event":
        return _click(session, row.payload)
    return Outcome("applied", f"ignored: {row.payload.get('MsgType')}/{row.payload.get('Event')}")


def _click(session: Session, event: dict[str, str]) -> Outcome:
    """Check the click against its card, then complete the task (complete_task raises what it refuses)."""
    card = session.scalar(select(WeComCard).where(WeComCard.card_key == event.get("TaskId", "")))
    action, _, task_id = event.get("EventKey", "").partition(":")
    user_id = event.get("FromUserName", "")
    if card is None:
        return Outcome("refused", f"no card {event.get('TaskId', '')[:128]!r}", NOT_ALLOWED)
    if action not in ACTIONS or task_id != card.task_id:
        return _refuse(session, card.task_id, user_id, action, "button key does not match the card")
    user = session.get(User, user_id)
    if user is None or not user.active:
        return _refuse(session, card.task_id, user_id, action, "not an active finflow user")
    if card.user_id == user_id and event.get("ResponseCode"):
        card.response_code = event["ResponseCode"]  # the card sender updates this card with it afterwards
    complete_task(session, Actor(user_id, "wecom", event.get("_client_ip"), "WeCom"), task_id, action)
    return Outcome("applied", f"{action} task {task_id}")


def _refused(session: Session, row: WeComCallback, refusal: FinflowError) -> Outcome:
    """complete_task said no: who may not act is recorded; a finished task shows what happened to it."""
    event = row.payload
    action, _, task_id = event.get("EventKey", "").partition(":")
    user_id = event.get("FromUserName", "")
    if isinstance(refusal, Forbidden) and refusal.code.startswith("second_factor_"):
        refused = _refuse(session, task_id, user_id, action, f"{refusal.code}: {refusal}")
        return Outcome("refused", refused.result, NEEDS_CODE, task_id)  # a card cannot carry a code: the page can
    if isinstance(refusal, Forbidden):
        return _refuse(session, task_id, user_id, action, f"forbidden: {refusal}")
    if isinstance(refusal, Conflict):
        return Outcome("refused", f"conflict: {refusal}", _finished_text(session, task_id, user_id))
    return Outcome("refused", f"{type(refusal).__name__}: {refusal}", NOT_ALLOWED)


def _refuse(session: Session, task_id: str, user_id: str, action: str, reason: str) -> Outcome:
    """A click by someone who may not act: history on the instance, card 无权处理."""
    if session.get(Task, task_id) is not None:
        record_refused_action(session, Actor(user_id or None, "wecom", None, "WeCom"), task_id, reason,
                              action if action in ACTIONS else None)
    return Outcome("refused", reason, NOT_ALLOWED)


def _finished_text(session: Session, task_id: str, user_id: str) -> str:
    """What a card shows when its task was no longer open for the clicker: the same words as the card update."""
    task = session.get(Task, task_id)
    return NOT_ALLOWED if task is None else result_of(session, task, user_id)


def _apply_contact_change(callback_id: int, event: dict[str, str], database_url: str | None) -> str:
    """Hand a contact change to the org sync, with no transaction of ours open (on SQLite a second writer in
    the same thread would wait for itself), then record what it did."""
    from adapters.wecom.sync import apply_change

    fields = {k: v for k, v in event.items() if not k.startswith("_")}  # callback.py's own keys (_client_ip)
    try:
        outcome = Outcome("applied", str(apply_change(fields, database_url))[:2000])
    except Exception as exc:  # recorded on the sync run and told to the admins by apply_change
        outcome = Outcome("failed", f"{type(exc).__name__}: {exc}"[:2000])
    with transaction(database_url) as session:
        row = _lock_received(session, callback_id)
        if row is not None:
            _finish(row, outcome)
    return outcome.status


def _update_card(event: dict[str, str], outcome: Outcome, callback_id: int) -> None:
    """Show a refused click's result on the clicker's card, with the click's own ResponseCode; when the task
    needs the approver page (a second factor), also send the clicker a link to it."""
    code, user_id = event.get("ResponseCode"), event.get("FromUserName")
    if outcome.card_text is None or not user_id:
        return
    try:
        config = WeComConfig.from_env()
        if config is not None and code:
            client(config).update_card([user_id], code, outcome.card_text)
    except (WeComError, ValueError) as exc:
        log.warning("wecom callback %s: could not update the clicker's card to %s: %s", callback_id,
                    outcome.card_text, exc)
    if outcome.page_task_id:
        _send_page_link(user_id, outcome.page_task_id, callback_id)


def _send_page_link(user_id: str, task_id: str, callback_id: int) -> None:
    try:
        config = WeComConfig.from_env()
        if config is not None:
            url = f"{config.public_url}/m/tasks/{task_id}"
            client(config).send(cards.textcard("请在审批页面完成审批", NEEDS_CODE_TEXT, url, user_id))
    except (WeComError, ValueError) as exc:
        log.warning("wecom callback %s: could not send %s the approver page's link: %s", callback_id, user_id, exc)
