"""The simulated corp's contacts, in WeCom's own shapes; `demo_org` mirrors finflow's demo company."""

from __future__ import annotations

import json
from typing import Any

from engine.org.directory import DEMO_ORG


def demo_org() -> dict[str, Any]:
    """engine/demo/org.json as WeCom would list it: departments get int ids in file order (the first is
    the root, 1), userids are finflow's ids, a department head is its department_leader and a manager the
    direct_leader."""
    org = json.loads(DEMO_ORG.read_text(encoding="utf-8"))
    ids = {d["id"]: i for i, d in enumerate(org["departments"], 1)}
    departments = [{"id": ids[d["id"]], "name": d["name"], "parentid": ids.get(d.get("parent"), 0),
                    "order": 100 * ids[d["id"]], "department_leader": [d["head"]] if d.get("head") else []}
                   for d in org["departments"]]
    heads = {d.get("head") for d in org["departments"]}
    users = [{"userid": u["id"], "name": u["name"], "department": [ids[u["department"]]],
              "main_department": ids[u["department"]], "position": u.get("title") or "",
              "mobile": u.get("mobile") or "", "email": u.get("email") or "",
              "direct_leader": [u["manager"]] if u.get("manager") else [],
              "is_leader_in_dept": [1 if u["id"] in heads else 0],
              "status": 1 if u.get("active", True) else 5, "enable": 1}  # 5: 已退出企业
             for u in org["users"]]
    return {"departments": departments, "users": users}


def subtree(departments: list[dict[str, Any]], root: int | None) -> list[dict[str, Any]]:
    """department/list?id=: the department and everything below it (all of them without an id)."""
    if root is None:
        return list(departments)
    keep, frontier = set(), {root}
    while frontier:
        keep |= frontier
        frontier = {d["id"] for d in departments if d.get("parentid") in frontier} - keep
    return [d for d in departments if d["id"] in keep]
