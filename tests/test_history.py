"""History completeness: every node an instance passed through is in its history, in order, and the
history agrees with what SpiffWorkflow itself recorded in the workflow state (saved unpruned here: the
saved tree normally drops finished tasks nothing consults any more, engine.runner.state.prune)."""

from functools import partial

import pytest
from SpiffWorkflow.util.task import TaskState

from engine.db import transaction
from engine.demo.driver import drive
from engine.demo.scenarios import SCENARIOS
from engine.models import Instance
from engine.runner import execution
from engine.runner.execution import SCRIPT_ENGINE
from engine.runner.state import dump_state, load_state
from engine.services.deployments import model_for
from tests.helpers import events

NODE_EVENTS = {"task.completed", "task.auto_approved", "node.completed", "gateway.decision", "dmn.decision",
               "service.completed"}


@pytest.fixture(autouse=True)
def full_state(monkeypatch):
    monkeypatch.setattr(execution, "dump_state", partial(dump_state, pruned=False))


def engine_path(instance_id: str) -> list[str]:
    """Node ids of every completed BPMN element, in completion order, from the workflow state."""
    with transaction() as session:
        instance = session.get(Instance, instance_id)
        model = model_for(session, instance.version_id)
        workflow = load_state(instance.state, model, SCRIPT_ENGINE)
    done = [t for t in workflow.get_tasks(state=TaskState.COMPLETED) if t.task_spec.bpmn_id in model.nodes]
    return [t.task_spec.bpmn_id for t in sorted(done, key=lambda t: t.last_state_change)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.title for s in SCENARIOS])
def test_history_names_every_node_in_order(scenario):
    result = drive(scenario)
    assert result.status == "completed"
    history = events(result.instance_id)
    passed = [e.node_id for e in history if e.type in NODE_EVENTS]
    assert passed == engine_path(result.instance_id)
    assert passed[0] == "start_event" and passed[-1].startswith("end_")
    types = [e.type for e in history]
    assert types[0] == "instance.started" and types[-1] == "instance.completed"
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    for event in history:
        if event.type == "task.completed":
            assert event.actor_id and event.channel == "demo" and event.payload["action"]
        if event.type == "task.created":  # every task is assigned right after it is created
            assert history[history.index(event) + 1].type == "task.assigned"


def test_gateway_decision_names_the_flow_taken():
    result = drive(SCENARIOS[1])  # 8,000: director needed
    decision = next(e for e in events(result.instance_id) if e.node_id == "gw_need_director")
    [taken] = decision.payload["taken"]
    assert taken["target"] == "director_approval" and taken["flow_id"] and taken["condition"]
