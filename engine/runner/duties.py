"""Segregation of duties (职责分离): who may not approve a node of a request, and why.

By default nobody approves a request they started; a node marked `finflow.distinct` also bars whoever
approved another node of the request. The runner removes barred people from a node's candidates, and
transfer, delegation and added signers may not bring them back.
"""

from __future__ import annotations

from typing import Any

from engine.runner.model import NodeInfo

STARTER_REASON = "申请人不能审批本人的申请"


def barred_approvers(node: NodeInfo, starter_id: str, data: dict[str, Any],
                     node_names: dict[str, str] | None = None) -> dict[str, str]:
    """user id -> the reason they may not approve `node` of this request (empty for non-approval nodes)."""
    if not node.is_approval:
        return {}
    barred: dict[str, str] = {}
    if not node.allow_starter:
        barred[starter_id] = STARTER_REASON
    if node.distinct:
        for other, approver in approvals(data).items():
            if other != node.id:
                name = (node_names or {}).get(other, other)
                barred.setdefault(approver, f"已审批「{name}」，本节点须由另一人审批")
    return barred


def approvals(data: dict[str, Any]) -> dict[str, str]:
    """node id -> who approved it, from the decisions the runner writes into the task data."""
    return {key[:-3]: value for key, value in data.items()
            if key.endswith("_by") and isinstance(value, str) and data.get(f"{key[:-3]}_decision") == "approve"}
