"""Saving and restoring an instance never changes what it does next.

Hypothesis drives random sequences of approve / reject / resubmit / transfer / add-signers / return on the
three processes twice: once as the platform runs (the state saved, pruned, after every command and
restored for the next) and once with the workflow object kept in memory between commands (never saved or
restored). After every command both instances must show the same open tasks, instance data, status and
history.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.db import transaction
from engine.errors import FinflowError
from engine.history import Actor
from engine.runner import execution
from engine.services.tasks import add_signers, complete_task, return_task, transfer_task
from tests.helpers import claim, contract, events, instance, invoice, payment, ready, start

STARTERS = {"reimbursement": ("suxiaoyun", lambda: claim("交通", 800, "打车费")),
            "payment": ("suxiaoyun", lambda: payment(1000)),
            "contract": ("zhaoqiang", lambda: contract(180000))}
OTHERS = ["gaoyan", "liuli", "zhuwei", "guoxin", "qianfang", "linna"]  # transfer / add-signer targets
MAX_STEPS = 12


@contextmanager
def kept_in_memory(held: dict[str, Any]) -> Iterator[None]:
    """Commands reuse the very workflow object the previous command left (`held` across commands), as if
    it never left memory."""

    def dump(workflow, **_options) -> str:
        key = f"memory:{id(workflow)}"
        held[key] = workflow
        return key

    def load(state: str, model, script_engine):
        return held[state]

    with mock.patch.object(execution, "dump_state", dump), mock.patch.object(execution, "load_state", load):
        yield


def cold():
    """Every command restores its workflow from the saved state (engine.runner.warm keeps none)."""
    return mock.patch.dict(os.environ, {"FINFLOW_WARM_INSTANCES": "0"})


def open_tasks(instance_id: str) -> list:
    return sorted(ready(instance_id), key=lambda t: (t.node_id, t.kind, tuple(t.candidates)))


def observed(instance_id: str) -> dict[str, Any]:
    row = instance(instance_id)
    return {"status": row.status, "outcome": row.outcome, "amount": row.amount, "data": _without_numbers(row.data),
            "tasks": [(t.node_id, t.kind, t.status, tuple(t.candidates), tuple(t.actions))
                      for t in open_tasks(instance_id)],
            "history": [(e.type, e.node_id) for e in events(instance_id)]}


# Each twin has its own invoices and voucher number; both draw on one budget line.
UNSHARED = {"number", "voucher_no", "available", "usage_ratio"}


def _without_numbers(value: Any) -> Any:
    """Data with what differs between the twins by construction blanked (UNSHARED)."""
    if isinstance(value, dict):
        return {k: ("…" if k in UNSHARED else _without_numbers(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_numbers(v) for v in value]
    return value


def resubmission(process_key: str) -> dict[str, Any]:
    if process_key == "reimbursement":
        return {"amount": 760, "invoices": [invoice(760)]}
    return payment(1000) if process_key == "payment" else {}


def commands(instance_id: str, process_key: str) -> list[tuple]:
    """What can be done now, as (kind, task index, argument); the same list for both twins."""
    found: list[tuple] = []
    visited = sorted({e.node_id for e in events(instance_id) if e.type == "task.completed"})
    for index, task in enumerate(open_tasks(instance_id)):
        found.extend(("complete", index, action) for action in task.actions)
        found.extend(("transfer", index, user) for user in OTHERS[:2])
        found.extend(("add_signers", index, position) for position in ("before", "after"))
        found.extend(("return", index, target) for target in ["applicant", *visited])
    return found


def run(instance_id: str, process_key: str, command: tuple) -> str | None:
    """Apply `command`; returns the error code a refusal gave (refusals happen before any change)."""
    kind, index, argument = command
    task = open_tasks(instance_id)[index]
    actor = Actor(task.candidates[0])
    actions: dict[str, Callable] = {
        "complete": lambda s: complete_task(s, actor, task.id, argument, "ok",
                                            resubmission(process_key) if argument == "submit" else {}),
        "transfer": lambda s: transfer_task(s, actor, task.id, argument, "换人"),
        "add_signers": lambda s: add_signers(s, actor, task.id, [OTHERS[2]], argument, "加签"),
        "return": lambda s: return_task(s, actor, task.id, argument, "退回"),
    }
    try:
        with transaction() as session:
            actions[kind](session)
    except FinflowError as exc:
        return type(exc).__name__
    return None


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(process_key=st.sampled_from(sorted(STARTERS)), data=st.data())
def test_a_restored_instance_continues_exactly_as_one_that_never_left_memory(process_key, data):
    starter, start_data = STARTERS[process_key]
    with cold():
        restored, held = start(process_key, starter, start_data()), {}
    with kept_in_memory(held):
        in_memory = start(process_key, starter, start_data())
    assert observed(restored) == observed(in_memory)
    for _ in range(MAX_STEPS):
        choices = commands(restored, process_key)
        if not choices:
            break
        command = data.draw(st.sampled_from(choices))
        with cold():
            refused = run(restored, process_key, command)
        with kept_in_memory(held):
            assert run(in_memory, process_key, command) == refused
        assert observed(restored) == observed(in_memory), command
