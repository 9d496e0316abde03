"""Workflow state to and from the instance row, without the process spec.

SpiffWorkflow's serializer writes the whole spec into every serialization. The spec belongs to the
deployed version, which is immutable and cached in memory, so the instance row keeps only the task tree
and data; restoring reattaches the cached spec. This removes the largest share of per-step cost.

The saved tree is also pruned of finished history (`prune`): SpiffWorkflow keeps every task an instance
ever ran, so each reject-and-resubmit loop would add its tasks, and their data, to every later save and
load. History already records them; the saved tree keeps only what the engine can still consult.
The format is SpiffWorkflow's own, so states saved before pruning existed load unchanged and shrink at
their next save.
"""

from __future__ import annotations

import json
from decimal import Decimal
from uuid import UUID

from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.bpmn.serializer.helpers.encoder import create_encoder
from SpiffWorkflow.bpmn.serializer.migration.version_migration import MIGRATIONS
from SpiffWorkflow.bpmn.serializer.workflow import VERSION
from SpiffWorkflow.bpmn.specs.mixins.unstructured_join import UnstructuredJoin
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.deep_merge import DeepMerge
from SpiffWorkflow.util.task import TaskState

from engine.runner.model import ProcessModel

_VERSION_KEY = BpmnWorkflowSerializer.VERSION_KEY


class _StateConverter(BpmnWorkflowConverter):
    """The default workflow converter minus the spec and subprocess specs."""

    def to_dict(self, workflow):
        dct = WorkflowConverter.to_dict(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def restore(self, dct, model: ProcessModel, script_engine) -> BpmnWorkflow:
        workflow = BpmnWorkflow(model.spec, model.subprocess_specs, script_engine=script_engine,
                                deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


_REGISTRY = BpmnWorkflowSerializer.configure(SPIFF_CONFIG)
# Amounts in task data stay exact Decimals across steps (SpiffWorkflow knows only UUID, datetime, timedelta).
_REGISTRY.register(Decimal, lambda v: {"value": str(v)}, lambda v: Decimal(v["value"]))
_CONVERTER = _StateConverter(BpmnWorkflow, _REGISTRY)
_ENCODER = create_encoder(_REGISTRY, None)


def dump_state(workflow: BpmnWorkflow, *, pruned: bool = True) -> str:
    """The workflow's state as JSON; `pruned=False` keeps every finished task (tests, comparisons)."""
    _REGISTRY._encoder_mode = True  # convert lazily inside json.dumps, as SpiffWorkflow's own serializer does
    try:
        dct = _CONVERTER.to_dict(workflow)
        if pruned:
            prune(dct, workflow)
    finally:
        _REGISTRY._encoder_mode = False
    dct[_VERSION_KEY] = VERSION
    return json.dumps(dct, cls=_ENCODER, ensure_ascii=False)


def load_state(state: str, model: ProcessModel, script_engine) -> BpmnWorkflow:
    dct = json.loads(state)
    version = dct.pop(_VERSION_KEY, VERSION)
    if version in MIGRATIONS:
        MIGRATIONS[version](dct)
    return _CONVERTER.restore(dct, model, script_engine)


def prune(dct: dict, workflow: BpmnWorkflow) -> None:
    """Drop from the serialized top-level tree `dct` the finished tasks nothing can consult any more.

    Kept: the root, every unfinished task with its parent and children (readiness, data inheritance,
    multi-instance results), the last task (the instance's data), the first and the latest finished task
    of every spec (returns go to the first approval or to a node's latest run; "visited" and the outcome
    read the same), what a waiting join consults (its split and the split's children; for a parallel
    join, its other arrivals and their parents) and subprocess tasks. A kept task hangs from its nearest
    kept ancestor, so ancestry among kept tasks is unchanged; its data delta is recomputed against it.
    """
    tasks = workflow.tasks
    keep = _needed(workflow)
    if len(keep) == len(tasks):
        return
    entries = dct["tasks"]
    for task_id in keep:
        task = tasks[task_id]
        parent = task.parent
        while parent is not None and parent.id not in keep:
            parent = parent.parent
        entry = entries[str(task_id)]
        entry["children"] = [str(c) for c in _kept_children(task, keep)]
        if parent is not None and parent.id != task._parent:
            entry["parent"] = str(parent.id)
            entry["delta"] = {"updates": DeepMerge.get_updated_keys(parent.data, task.data),
                              "deletions": DeepMerge.get_deleted_keys(parent.data, task.data)}
    dct["tasks"] = {key: entry for key, entry in entries.items() if UUID(key) in keep}


def _needed(workflow: BpmnWorkflow) -> set[UUID]:
    tasks = workflow.tasks.values()
    keep: set[UUID] = {workflow.task_tree.id}
    if workflow.last_task is not None and workflow.last_task.id in workflow.tasks:
        keep.add(workflow.last_task.id)
    keep.update(task_id for task_id in workflow.subprocesses if task_id in workflow.tasks)
    first: dict[str, object] = {}
    latest: dict[str, object] = {}
    for task in tasks:
        if task.has_state(TaskState.FINISHED_MASK):
            name = task.task_spec.name
            if name not in first or task.last_state_change < first[name].last_state_change:
                first[name] = task
            if name not in latest or task.last_state_change >= latest[name].last_state_change:
                latest[name] = task
            continue
        keep.add(task.id)
        if task.parent is not None:
            keep.add(task.parent.id)
        keep.update(child.id for child in task.children)
        keep.update(_consulted_by_join(task))
    keep.update(t.id for t in first.values())
    keep.update(t.id for t in latest.values())
    return keep


def _consulted_by_join(task) -> list[UUID]:
    """The finished tasks a waiting join looks at when it decides to fire."""
    spec = task.task_spec
    found: list[UUID] = []
    split_name = getattr(spec, "split_task", None)
    if split_name:
        split = task.find_ancestor(split_name)
        if split is not None:
            found.append(split.id)
            found.extend(child.id for child in split.children)
    if isinstance(spec, UnstructuredJoin):
        for other in task.workflow.tasks.values():
            if other.task_spec is spec:
                found.append(other.id)
                if other.parent is not None:
                    found.append(other.parent.id)
    return found


def _kept_children(task, keep: set[UUID]) -> list[UUID]:
    """`task`'s nearest kept descendants in tree order (an iterative walk: trees can be deep)."""
    found: list[UUID] = []
    stack = list(reversed(task.children))
    while stack:
        child = stack.pop()
        if child.id in keep:
            found.append(child.id)
        else:
            stack.extend(reversed(child.children))
    return found
