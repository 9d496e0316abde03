"""The simulator's inbox page: pick a person, see what WeCom showed them, press the buttons of a card."""

from __future__ import annotations

import time
from html import escape
from typing import Any


def render(sim, user: dict[str, Any] | None) -> str:
    people = "".join(f"<a class=person href='/?u={escape(u['userid'])}'>{escape(u['name'])}"
                     f"<small>{escape(u['userid'])}</small></a>" for u in sim.org["users"])
    body = "<p>请选择一位用户，查看他在企业微信里收到的审批卡片和消息。</p>"
    if user is not None:
        entries = list(reversed(sim.inbox(user["userid"])))
        items = "".join(_entry(user["userid"], e) for e in entries) or "<p class=empty>暂无消息</p>"
        body = f"<h2>{escape(user['name'])} 的企业微信消息（{len(entries)}）</h2>{items}"
    return f"""<!doctype html><html lang=zh-CN><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1"><meta http-equiv=refresh content=5>
<title>企业微信模拟器</title><style>
body{{font-family:"Noto Sans CJK SC","PingFang SC",sans-serif;margin:0;background:#f2f3f5;color:#1f2329}}
header{{background:#2c7be5;color:#fff;padding:10px 14px;font-size:17px}}
nav{{display:flex;flex-wrap:wrap;gap:6px;padding:10px}} main{{padding:0 10px 20px;max-width:640px}}
.person{{background:#fff;border-radius:6px;padding:4px 8px;text-decoration:none;color:#1f2329;font-size:14px}}
.person small{{color:#8f959e;margin-left:4px}}
.card{{background:#fff;border-radius:8px;padding:12px;margin:10px 0;box-shadow:0 1px 2px #0001}}
.source{{color:#8f959e;font-size:12px}} .title{{font-size:16px;font-weight:600;margin:6px 0}}
.desc{{color:#646a73;font-size:13px}} .kv{{display:flex;justify-content:space-between;font-size:14px;margin:3px 0}}
.kv span:first-child{{color:#8f959e}} .buttons{{display:flex;gap:8px;margin-top:10px}}
button{{flex:1;padding:8px;border:0;border-radius:6px;font-size:15px;background:#2c7be5;color:#fff}}
button.reject{{background:#fff;color:#f54a45;border:1px solid #f54a45}}
.state{{margin-top:10px;text-align:center;color:#8f959e;background:#f5f6f7;padding:8px;border-radius:6px}}
a.detail{{display:block;margin-top:8px;font-size:14px;color:#2c7be5}} .empty{{color:#8f959e}}
</style></head><body><header>企业微信模拟器 · finflow 演示</header><nav>{people}</nav>
<main>{body}</main></body></html>"""


def _entry(userid: str, entry: dict[str, Any]) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(entry["at"]))
    kind = entry["msgtype"]
    if kind == "template_card":
        return _card(userid, entry, at)
    content = entry[kind]
    if kind == "textcard":
        link = f"<a class=detail href='{escape(content.get('url', ''))}'>{escape(content.get('btntxt') or '详情')}</a>"
        return (f"<div class=card><div class=source>{at}</div><div class=title>{escape(content.get('title', ''))}</div>"
                f"<div class=desc>{escape(content.get('description', ''))}</div>{link}</div>")
    text = escape(str(content.get("content", "")))
    return f"<div class=card><div class=source>{at}</div><div class=desc>{text}</div></div>"


def _card(userid: str, entry: dict[str, Any], at: str) -> str:
    card = entry["template_card"]
    title = (card.get("main_title") or {}).get("title") or card.get("sub_title_text") or ""
    desc = (card.get("main_title") or {}).get("desc") or ""
    facts = "".join(f"<div class=kv><span>{escape(str(i.get('keyname', '')))}</span>"
                    f"<span>{escape(str(i.get('value', '')))}</span></div>"
                    for i in card.get("horizontal_content_list") or [])
    url = (card.get("card_action") or {}).get("url")
    detail = f"<a class=detail href='{escape(url)}'>详情 ›</a>" if url else ""
    if entry["state"] != "open" or card.get("card_type") != "button_interaction":
        actions = f"<div class=state>{escape(entry['state'])}</div>" if entry["state"] != "open" else ""
    else:
        buttons = "".join(
            f"<button name=key value='{escape(b['key'])}' class='{'reject' if b.get('style') == 2 else ''}'>"
            f"{escape(b['text'])}</button>" for b in card.get("button_list") or [])
        actions = (f"<form method=post action=/_sim/click class=buttons><input type=hidden name=userid "
                   f"value='{escape(userid)}'><input type=hidden name=task_id value='{escape(entry['task_id'])}'>"
                   f"{buttons}</form>")
    source = escape((card.get("source") or {}).get("desc") or "")
    return (f"<div class=card><div class=source>{source} · {at}</div><div class=title>{escape(title)}</div>"
            f"<div class=desc>{escape(desc)}</div>{facts}{actions}{detail}</div>")
