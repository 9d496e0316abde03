"""How a process maps onto an OA workflow: `processes/oa/<process>.oa.json`, deployed with the process.

```json
{
  "workflow_id": "101",                       // the OA workflow (E9 workflowId) an instance becomes a request of
  "request_name": "{process}-{starter_name}-{amount}",  // also {title} and {business_key}
  "create_node": "1010",                      // the OA create node (where a request sent back to the applicant is)
  "main": {"bxje": "amount", "xyfzr": "'1' if need_director else '0'"},  // OA field -> expression over the data
  "details": {"formtable_main_101_dt1": {"rows": "invoices", "fields": {"fphm": "number", "je": "amount"}}},
  "nodes": {"manager_approval": "1011", "applicant_revise": "1010"},    // BPMN user task -> OA node id
  "required": "all"                           // every user task must be mapped ("listed": only those named)
}
```

Expressions run in the engine's restricted environment over the instance data plus `instance_id`,
`business_key`, `process`, `starter`, `starter_name` and `department`; `details.rows` names a list in the data
and each row's fields are expressions over that row. A value that fails to evaluate (a field the instance does
not have yet: DMN results appear mid-way) is sent empty, never an error: OA's own required-field checks say
what it needs. Money (Decimal) is sent as plain text, 8000.00, never a float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine import channels
from engine.finance.money import yuan
from engine.runner.checks import problem
from engine.runner.model import ProcessModel
from engine.runner.script_engine import RestrictedEnvironment, compile_expression

CHANNEL = "oa"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
KEYS = {"workflow_id", "request_name", "create_node", "main", "details", "nodes", "required", "comment"}
_ENVIRONMENT = RestrictedEnvironment(lambda name, params: None)


@dataclass(frozen=True)
class Mapping:
    workflow_id: str
    request_name: str
    create_node: str
    main: dict[str, str]
    details: dict[str, dict[str, Any]]
    nodes: dict[str, str]  # BPMN user task -> OA node

    def node_of(self, task_node: str | None) -> str | None:
        return self.nodes.get(task_node or "")

    def tasks_at(self, oa_node: str) -> list[str]:
        """The BPMN user tasks mapped to an OA node (a countersign node may stand for parallel tasks)."""
        return [task for task, node in self.nodes.items() if node == oa_node]

    def main_fields(self, context: dict[str, Any]) -> dict[str, str]:
        return {name: _evaluate(expression, context) for name, expression in self.main.items()}

    def detail_rows(self, data: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
        tables = {}
        for table, spec in self.details.items():
            rows = data.get(spec["rows"])
            tables[table] = [{name: _evaluate(expression, row) for name, expression in spec["fields"].items()}
                             for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []
        return tables

    def name_for(self, values: dict[str, Any]) -> str:
        return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), self.request_name)[:200]


def of(model: ProcessModel) -> Mapping | None:
    """The OA mapping of a deployed version, or None when its process has none."""
    raw = model.mappings.get(CHANNEL)
    if raw is None:
        return None
    return Mapping(str(raw["workflow_id"]), str(raw.get("request_name") or "{process}-{starter_name}-{business_key}"),
                   str(raw.get("create_node") or ""), dict(raw.get("main") or {}), dict(raw.get("details") or {}),
                   {task: str(node) for task, node in (raw.get("nodes") or {}).items()})


def check(file: str, raw: dict[str, Any], model: ProcessModel) -> dict[str, Any]:
    """Deploy-time check (engine.channels): refuse what would fail on the first instance, naming where."""
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise problem(f"unknown key(s) {', '.join(unknown)}; a mapping has {', '.join(sorted(KEYS - {'comment'}))}",
                      file)
    if not str(raw.get("workflow_id") or "").strip():
        raise problem("workflow_id is required: the OA workflow an instance becomes a request of", file)
    if not str(raw.get("create_node") or "").strip():
        raise problem("create_node is required: the OA node a request sent back to the applicant is at", file)
    for name, expression in _mapping(raw, "main", file).items():
        _check_expression(file, f"main.{name}", expression)
    for table, spec in _mapping(raw, "details", file).items():
        shaped = isinstance(spec, dict) and isinstance(spec.get("rows"), str) and isinstance(spec.get("fields"), dict)
        if not shaped:
            raise problem(f"details.{table} needs \"rows\" (a list in the data) and \"fields\" (OA field -> "
                          "expression over a row)", file)
        for name, expression in spec["fields"].items():
            _check_expression(file, f"details.{table}.fields.{name}", expression)
    _check_nodes(file, raw, model)
    return raw


def _mapping(raw: dict[str, Any], key: str, file: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise problem(f"{key} must be an object", file)
    return value


def _check_expression(file: str, where: str, expression: Any) -> None:
    if not isinstance(expression, str) or not expression.strip():
        raise problem(f"{where} must be an expression (text), got {expression!r}", file)
    try:
        compile_expression(expression)
    except SyntaxError as exc:
        raise problem(f"{where}: the expression {expression!r} does not compile: {exc.msg}", file) from exc


def _check_nodes(file: str, raw: dict[str, Any], model: ProcessModel) -> None:
    nodes = _mapping(raw, "nodes", file)
    user_tasks = sorted(n.id for n in model.nodes.values() if n.kind == "userTask")
    for task, node in nodes.items():
        if task not in user_tasks:
            raise problem(f"nodes.{task}: process '{model.key}' has no user task '{task}' (its user tasks: "
                          f"{', '.join(user_tasks)})", file, task_id=task)
        if not isinstance(node, str | int) or not str(node).strip():
            raise problem(f"nodes.{task} must be an OA node id, got {node!r}", file, task_id=task)
    required = raw.get("required", "all")
    if required not in ("all", "listed"):
        raise problem(f"required must be \"all\" or \"listed\", got {required!r}", file)
    missing = [t for t in user_tasks if t not in nodes]
    if required == "all" and missing:
        raise problem(f"user task(s) {', '.join(missing)} have no OA node, but the mapping says every user task is "
                      "mapped (\"required\": \"all\")", file, task_id=missing[0])


def _evaluate(expression: str, context: dict[str, Any]) -> str:
    try:
        value = _ENVIRONMENT.evaluate(expression, dict(context))
    except Exception:  # a value the instance does not have yet: sent empty (see the module docstring)
        return ""
    return text(value)


def text(value: Any) -> str:
    """A value as an OA field holds it: Decimal as plain digits, booleans as 1/0, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, list | tuple):
        return ",".join(text(v) for v in value)
    return str(value)


def context(data: dict[str, Any], summary: dict[str, Any], starter_name: str, department: str,
            process: str) -> dict[str, Any]:
    """What mapping expressions see: the data and the instance's own facts."""
    amount = summary.get("amount")
    return {**data, "instance_id": summary.get("id"), "business_key": summary.get("business_key") or "",
            "process": process, "starter": summary.get("starter_id"), "starter_name": starter_name,
            "department": department, "title": summary.get("title") or "",
            "amount_text": yuan(amount) if amount is not None else ""}


channels.register(CHANNEL, check)
