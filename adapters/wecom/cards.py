"""What an approver sees in WeCom: the button card of a task, the result that replaces its buttons, and
the texts of plain messages. Pure functions of finflow's data: no HTTP, no transaction of their own.

The card shows the start form's fields marked `x-card` (a node may name others with the BPMN property
`card.fields`, comma-separated, and its own title with `card.title`, a template over {process}, {starter},
{amount}, {title}, {business_key} and {task}); `x-sensitive` values are masked (`6222 **** **** 1234`),
money reads ¥12,800.00.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from engine.finance.money import yuan
from engine.models import Instance, Task
from engine.services.forms import shown_fields

MAX_FACTS = 6  # WeCom shows at most six horizontal_content items
PLACEHOLDER = re.compile(r"\{(\w+)\}")
ACTION_RESULTS = {"approve": "已同意", "reject": "已驳回", "submit": "已提交"}


def new_card_key(task_id: str) -> str:
    """A WeCom task_id: unique per app, ≤128 bytes of [A-Za-z0-9_-@]."""
    return f"ff-{task_id.replace('-', '')[:20]}-{secrets.token_hex(6)}"


def facts(form: dict[str, Any], data: dict[str, Any], names: list[str] | None, department: str | None) -> list[dict]:
    """The card's key facts: the chosen fields with their Chinese labels, then 部门."""
    items = [{"keyname": label[:20], "value": text[:60]} for label, text in shown_fields(form, data, names)]
    if department:
        items.append({"keyname": "部门", "value": department})
    return items[:MAX_FACTS]


def title(instance: Instance, process: str, starter: str, task: Task, template: str | None) -> str:
    amount = yuan(instance.amount) if instance.amount is not None else ""
    if template:  # only the named placeholders: a designer's typo stays visible text, never a failed delivery
        values = {"process": process, "starter": starter, "amount": amount, "task": task.name,
                  "title": instance.title or "", "business_key": instance.business_key or ""}
        return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    return " · ".join(part for part in (process, starter, amount) if part)


def card_message(*, user_id: str, card_key: str, task: Task, source: str, heading: str, facts_: list[dict],
                 url: str, with_buttons: bool) -> dict[str, Any]:
    """message/send for one approver: a button card, or a notice with a jump when the task needs the page."""
    card: dict[str, Any] = {
        "source": {"desc": source[:13]}, "main_title": {"title": heading[:26], "desc": task.name[:30]},
        "horizontal_content_list": facts_, "card_action": {"type": 1, "url": url}, "task_id": card_key}
    if with_buttons:
        card.update(card_type="button_interaction", button_list=[
            {"text": "同意", "style": 1, "key": f"approve:{task.id}"},
            {"text": "驳回", "style": 2, "key": f"reject:{task.id}"}])
    else:
        card.update(card_type="text_notice", sub_title_text="请在详情页填写后处理",
                    jump_list=[{"type": 1, "title": "去处理", "url": url}])
    return {"touser": user_id, "msgtype": "template_card", "template_card": card}


def buttons_suffice(task: Task, form: dict[str, Any]) -> bool:
    """Approve and reject on the card only when the task needs nothing typed in."""
    return {"approve", "reject"} <= set(task.actions) and not form.get("required")


CANCEL_RESULTS = {"returned": "已退回"}  # task.cancelled reasons worth their own words; others: 已被他人处理


def result_for(task: Task, user_id: str, instance: Instance, names: dict[str, str],
               cancel_reason: str | None = None) -> str:
    """What the card of `user_id` on `task` shows once it is no longer theirs to decide (`cancel_reason`:
    the task.cancelled event's reason when the row was cancelled)."""
    if task.status == "completed":
        return ACTION_RESULTS.get(task.action or "", "已处理") if task.assignee_id == user_id else "已被他人处理"
    if instance.status == "withdrawn":
        return "已撤回"
    if instance.status == "cancelled":
        return "已取消"
    if task.status == "cancelled" and cancel_reason in CANCEL_RESULTS:
        return CANCEL_RESULTS[cancel_reason]
    if task.status in ("ready", "waiting") and user_id not in task.candidates:
        if task.delegation == "pending" and task.owner_id == user_id:
            return f"已委派给{names.get(task.delegate_id or '', task.delegate_id or '')}"
        if task.delegation == "resolved" and task.delegate_id == user_id:  # the delegate's part is done
            return f"已处理，交回{names.get(task.owner_id or '', task.owner_id or '')}"
        return "已转办给" + "、".join(names.get(u, u) for u in task.candidates)
    if task.status == "waiting":
        return "等待加签人处理"
    return "已被他人处理"


def text(content: str, user_id: str) -> dict[str, Any]:
    return {"touser": user_id, "msgtype": "text", "text": {"content": content[:680]}}


def textcard(title_: str, description: str, url: str, user_id: str) -> dict[str, Any]:
    return {"touser": user_id, "msgtype": "textcard",
            "textcard": {"title": title_[:128], "description": description[:512], "url": url, "btntxt": "详情"}}
