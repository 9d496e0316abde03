"""The simulator's page: every OA request and where it stands, and a way to approve or reject a node "in OA"
as one of its users (POST /_sim/act), which runs the node Action callback to finflow."""

from __future__ import annotations

from html import escape
from typing import Any

STATUS_CLASS = {"审批中": "open", "已归档": "done", "已收回": "back"}


def render(sim, message: str = "") -> str:
    requests = list(reversed(sim.requests()))
    options = "".join(f"<option value='{escape(str(u['id']))}'>{escape(u['lastname'])}</option>"
                      for u in sim.users if str(u.get("status", "1")) != "5")
    names = {str(u["id"]): u["lastname"] for u in sim.users}
    rows = "".join(_row(r, options, names) for r in requests) or "<tr><td colspan=8 class=empty>暂无请求</td></tr>"
    note = f"<p class=note>{escape(message)}</p>" if message else ""
    return f"""<!doctype html><html lang=zh-CN><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1"><meta http-equiv=refresh content=5>
<title>泛微 E9 模拟器</title><style>
body{{font-family:"Noto Sans CJK SC","PingFang SC",sans-serif;margin:0;background:#f2f3f5;color:#1f2329}}
header{{background:#1d5bbf;color:#fff;padding:10px 14px;font-size:17px}} main{{padding:10px}}
table{{border-collapse:collapse;width:100%;background:#fff;font-size:14px}}
th,td{{border-bottom:1px solid #e5e6eb;padding:6px 8px;text-align:left;vertical-align:top}}
th{{background:#f7f8fa;color:#646a73;font-weight:500}} small{{color:#8f959e}}
.open{{color:#1d5bbf}} .done{{color:#00a870}} .back{{color:#f54a45}} .empty{{color:#8f959e;text-align:center}}
form{{display:flex;flex-wrap:wrap;gap:4px}} input[type=text]{{width:8em}}
button{{border:0;border-radius:4px;padding:3px 10px;background:#1d5bbf;color:#fff}}
button.reject{{background:#fff;color:#f54a45;border:1px solid #f54a45}}
.note{{background:#fff7e6;border:1px solid #ffd591;padding:6px 10px;border-radius:4px}}
</style></head><body><header>泛微 E9 模拟器 · finflow 演示</header><main>{note}
<p>共 {len(requests)} 个请求，每 5 秒自动刷新。选择一位 OA 用户，即可在“OA 中”批准或退回当前节点。</p>
<table><tr><th>请求ID</th><th>流程</th><th>标题</th><th>创建人</th><th>当前节点</th><th>状态</th><th>已会签</th>
<th>操作</th></tr>{rows}</table></main></body></html>"""


def _row(request: dict[str, Any], options: str, names: dict[str, str]) -> str:
    signed = "、".join(names.get(s, s) for s in request["signed"])
    if request["signers_needed"] != 1:
        signed = f"{len(request['signed'])}/{request['signers_needed']} {signed}".strip()
    status = request["status"]
    cells = [request["requestid"], request["workflowname"], request["requestname"], request["creatorname"],
             f"{request['currentnodename']}（{request['currentnodeid']}）"]
    tds = "".join(f"<td>{escape(str(c))}</td>" for c in cells)
    return (f"<tr>{tds}<td class={STATUS_CLASS.get(status, 'open')}>{escape(status)}</td>"
            f"<td>{escape(signed) or '—'}</td><td>{_form(request, options) if status == '审批中' else ''}</td></tr>")


def _form(request: dict[str, Any], options: str) -> str:
    return (f"<form method=post action=/_sim/act><input type=hidden name=request_id "
            f"value='{escape(request['requestid'])}'><select name=operator>{options}</select>"
            f"<input type=text name=remark placeholder=意见><button name=action value=submit>批准</button>"
            f"<button name=action value=reject class=reject>退回</button></form>")
