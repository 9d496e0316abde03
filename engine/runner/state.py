"""Workflow state to and from the instance row, without the process spec.

SpiffWorkflow's serializer writes the whole spec into every serialization. The spec belongs to the
deployed version, which is immutable and cached in memory, so the instance row keeps only the task tree
and data; restoring reattaches the cached spec. This removes the largest share of per-step cost.
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
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

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


def dump_state(workflow: BpmnWorkflow) -> str:
    _REGISTRY._encoder_mode = True  # convert lazily inside json.dumps, as SpiffWorkflow's own serializer does
    try:
        dct = _CONVERTER.to_dict(workflow)
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
