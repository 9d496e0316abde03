"""Does a step cost more as an instance grows? Figures for engine_bench.py.

* Reject loop: a reimbursement rejected at the manager and resubmitted 1…10 times; after each loop the
  persisted state's bytes and the mean time of the loop's two commands (reject, resubmit).
* 会签 countersign: a contract whose countersign group has 5 / 50 / 200 members; each signer's completion
  timed (median, max) and the state's bytes once all have signed; beside it the bare engine
  (SpiffWorkflow with its stock serializer round trip after every step) on the same diagram.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import delete, select

from engine.db import transaction
from engine.demo.scenarios import claim, invoices_for
from engine.history import Actor
from engine.models import GroupMember, Instance, Task, User
from engine.services.instances import start_instance
from engine.services.tasks import complete_task

PROCESSES = Path(__file__).resolve().parent.parent / "processes"
GROUP = "contract_reviewers"
CONTRACT = {"title": "基准测试会签合同", "counterparty": "阿里云计算有限公司", "amount": 90000, "contract_type": "采购",
            "attachments": [{"name": "合同正文.pdf", "size": 482133, "sha256": "ab" * 32}]}


@dataclass
class LoopFigure:
    loop: int
    state_bytes: int
    step_ms: float


@dataclass
class SignFigure:
    signers: int
    median_ms: float
    max_ms: float
    state_bytes: int


def _state_bytes(instance_id: str) -> int:
    with transaction() as session:
        return len(session.get(Instance, instance_id).state.encode())


def _ready(instance_id: str, node_id: str | None = None) -> list[Task]:
    with transaction() as session:
        rows = session.scalars(select(Task).where(Task.instance_id == instance_id, Task.status == "ready")
                               .order_by(Task.created_at, Task.id)).all()
        return [t for t in rows if node_id is None or t.node_id == node_id]


def _act(task: Task, action: str = "approve", form: dict | None = None) -> float:
    began = time.perf_counter()
    with transaction() as session:
        complete_task(session, Actor(task.candidates[0], "bench"), task.id, action, "基准", form or {})
    return time.perf_counter() - began


def reject_loop(loops: int = 10) -> tuple[int, list[LoopFigure]]:
    """State bytes after start and per loop; the loop's commands' mean time."""
    with transaction() as session:
        instance_id = start_instance(session, Actor("suxiaoyun", "bench"), "reimbursement",
                                     claim("交通", 800, "打车费")).id
    figures = [LoopFigure(0, _state_bytes(instance_id), 0.0)]
    for loop in range(1, loops + 1):
        spent = _act(_ready(instance_id, "manager_approval")[0], "reject")
        amount = 700 + loop
        spent += _act(_ready(instance_id, "applicant_revise")[0], "submit",
                      {"amount": amount, "invoices": invoices_for(amount)})
        figures.append(LoopFigure(loop, _state_bytes(instance_id), spent / 2 * 1000))
    return figures[0].state_bytes, figures[1:]


def use_signers(count: int) -> list[str]:
    """Make the countersign group `count` bench users (created once, in the bench's own database)."""
    ids = [f"bench_signer_{n:03d}" for n in range(count)]
    with transaction() as session:
        template = session.get(User, "lihua")
        existing = set(session.scalars(select(User.id).where(User.id.like("bench_signer_%"))))
        session.add_all(User(id=i, name=f"会签人{i[-3:]}", department_id=template.department_id,
                             manager_id=template.manager_id, active=True) for i in ids if i not in existing)
        session.flush()
        session.execute(delete(GroupMember).where(GroupMember.group_id == GROUP))
        session.add_all(GroupMember(group_id=GROUP, user_id=i) for i in ids)
    return ids


def countersign(count: int) -> SignFigure:
    use_signers(count)
    with transaction() as session:
        instance_id = start_instance(session, Actor("zhaoqiang", "bench"), "contract", dict(CONTRACT)).id
    for node in ("legal_review", "finance_review"):
        _act(_ready(instance_id, node)[0])
    times = [_act(task) for task in _ready(instance_id, "countersign")]
    if len(times) != count:
        raise RuntimeError(f"countersign: expected {count} signer tasks, found {len(times)}")
    return SignFigure(count, statistics.median(times) * 1000, max(times) * 1000, _state_bytes(instance_id))


class _Signers(PythonScriptEngine):
    """The bare engine's answer to the diagram's service task: the countersign group's members."""

    def __init__(self, members: list[str]):
        super().__init__()
        self.members = members

    def call_service(self, task, **kwargs):
        import json

        return json.dumps(self.members)


def bare_countersign(count: int) -> SignFigure:
    parser = SpiffBpmnParser()
    parser.add_bpmn_file(str(PROCESSES / "contract.bpmn"))
    serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
    engine = _Signers([f"bench_signer_{n:03d}" for n in range(count)])
    workflow = BpmnWorkflow(parser.get_spec("contract"), parser.get_subprocess_specs("contract"), script_engine=engine)
    for task in workflow.get_tasks(state=TaskState.READY):
        task.data.update(CONTRACT)
    workflow.do_engine_steps()

    def roundtrip(wf: BpmnWorkflow) -> tuple[BpmnWorkflow, int]:
        text = serializer.serialize_json(wf)
        restored = serializer.deserialize_json(text)
        restored.script_engine = engine
        return restored, len(text.encode())

    times, size = [], 0
    while True:
        ready = workflow.get_tasks(state=TaskState.READY, manual=True)
        if not ready:
            break
        task = ready[0]
        signing = task.task_spec.name.endswith("[child]")
        began = time.perf_counter()
        node = task.task_spec.bpmn_id
        task.data.update({"decision": "approve", f"{node}_decision": "approve", f"{node}_by": "bench"})
        task.run()
        workflow.do_engine_steps()
        workflow, size = roundtrip(workflow)
        if signing:
            times.append(time.perf_counter() - began)
    if len(times) != count:
        raise RuntimeError(f"bare countersign: expected {count} signers, timed {len(times)}")
    return SignFigure(count, statistics.median(times) * 1000, max(times) * 1000, size)
