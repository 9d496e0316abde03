"""Workflows kept warm between commands (engine/runner/warm.py): reused only when the instance row still
holds the state this process wrote, and never after a command that rolled back."""

from __future__ import annotations

from unittest import mock

import pytest

from engine.db import transaction
from engine.history import Actor
from engine.models import Instance
from engine.runner import execution
from engine.runner.execution import run_command
from engine.services.deployments import model_for
from tests.helpers import act, claim, instance, ready, start

STARTER = "suxiaoyun"


def restores_during(action) -> int:
    with mock.patch.object(execution, "load_state", wraps=execution.load_state) as load_state:
        action()
    return load_state.call_count


def test_the_next_command_reuses_the_workflow_this_process_saved():
    iid = start("reimbursement", STARTER, claim())
    assert restores_during(lambda: act(iid, "manager_approval")) == 0


def test_a_state_written_by_someone_else_is_restored_from_the_row(monkeypatch):
    iid = start("reimbursement", STARTER, claim())
    with transaction() as session:  # another process's save: the same content, written anew
        row = session.get(Instance, iid)
        row.state = row.state + " "
    assert restores_during(lambda: act(iid, "manager_approval")) == 1


def test_a_rolled_back_command_leaves_no_changed_workflow_behind():
    iid = start("reimbursement", STARTER, claim())
    [task] = ready(iid)

    def approve_then_fail(run):
        run.complete_user_task(task, "approve", None, {})
        raise RuntimeError("the transaction fails after the workflow moved on")

    with pytest.raises(RuntimeError), transaction() as session:
        row = session.get(Instance, iid)
        run_command(session, row, model_for(session, row.version_id), Actor(task.candidates[0]), approve_then_fail)
    assert [t.id for t in ready(iid)] == [task.id]  # nothing happened
    act(iid, "manager_approval")
    assert [t.node_id for t in ready(iid)] != ["manager_approval"]
    assert instance(iid).status == "running"


def test_turned_off_every_command_restores(monkeypatch):
    monkeypatch.setenv("FINFLOW_WARM_INSTANCES", "0")
    iid = start("reimbursement", STARTER, claim())
    assert restores_during(lambda: act(iid, "manager_approval")) == 1
