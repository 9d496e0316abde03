"""The simulated OA's contents: finflow's demo company as E9's HRM lists it, and the three demo workflows.

The workflow and node ids are the ones processes/oa/*.oa.json map finflow's processes to, so the mapping
files work unchanged against the simulator.
"""

from __future__ import annotations

import json
from typing import Any

from engine.org.directory import DEMO_ORG


def demo_users() -> list[dict[str, Any]]:
    """engine/demo/org.json as HRM rows: OA ids "1", "2", … in file order, loginid = finflow's user id,
    status "1" (正式) or "5" (离职) for someone no longer active."""
    org = json.loads(DEMO_ORG.read_text(encoding="utf-8"))
    departments = {d["id"]: d["name"] for d in org["departments"]}
    return [{"id": str(i), "loginid": u["id"], "lastname": u["name"],
             "departmentname": departments.get(u["department"], ""), "status": "1" if u.get("active", True) else "5"}
            for i, u in enumerate(org["users"], 1)]


def _node(node_id: str, name: str, kind: str = "approve", *, exits: list[dict[str, str]] | None = None,
          signers: int | str | None = None) -> dict[str, Any]:
    return {"id": node_id, "name": name, "type": kind, "operators": None, "signers": signers, "exits": exits or []}


def _when(field: str, to: str, value: str = "1") -> dict[str, str]:
    return {"to": to, "field": field, "op": "==", "value": value}


def demo_workflows() -> list[dict[str, Any]]:
    """费用报销 (101), 付款申请 (102) and 合同审批 (103), with the branches finflow's processes take: the
    flags finflow writes into the main table (xyfzr, xycwzj, xyzjl) pick the path, hqrs sizes the countersign."""
    reimbursement = {
        "id": "101", "name": "费用报销", "detail_tables": ["formtable_main_101_dt1"], "creators": None,
        "fields": ["sqr", "sqbm", "bxje", "bxlb", "sy", "djbh", "finflow_id", "xyfzr", "xycwzj"],
        "nodes": [
            _node("1010", "申请人", "create"),
            _node("1011", "直属上级审批", exits=[_when("xyfzr", "1012"), _when("xycwzj", "1013"), {"to": "1014"}]),
            _node("1012", "部门负责人审批", exits=[_when("xycwzj", "1013"), {"to": "1014"}]),
            _node("1013", "财务总监审批", exits=[{"to": "1014"}]),
            _node("1014", "会计审核"),
            _node("1015", "出纳付款"),
            _node("1019", "归档", "archive"),
        ]}
    payment = {
        "id": "102", "name": "付款申请", "detail_tables": [], "creators": None,
        "fields": ["sqr", "sqbm", "fkje", "skdw", "yhzh", "sy", "djbh", "finflow_id", "xyzjl"],
        "nodes": [
            _node("1020", "申请人", "create"),
            _node("1021", "部门负责人审批"),
            _node("1022", "财务经理审批", exits=[_when("xyzjl", "1023"), {"to": "1024"}]),
            _node("1023", "总经理审批"),
            _node("1024", "出纳付款"),
            _node("1029", "归档", "archive"),
        ]}
    contract = {
        "id": "103", "name": "合同审批", "detail_tables": [], "creators": None,
        "fields": ["sqr", "sqbm", "htje", "xdf", "htmc", "djbh", "finflow_id", "hqrs"],
        "nodes": [
            _node("1030", "申请人", "create"),
            _node("1031", "法务财务会审", signers=2),
            _node("1032", "会签", signers="hqrs"),
            _node("1033", "总经理签批"),
            _node("1034", "用印"),
            _node("1035", "档案归档"),
            _node("1039", "归档", "archive"),
        ]}
    return [reimbursement, payment, contract]
