"""Workflows kept warm between commands in this process, so the next command on an instance skips
restoring it from its saved state.

A big instance (a 200-signer countersign) costs most of a step in `load_state`. The process that ran
the last command still holds that workflow; the next command may reuse it when the instance row's saved
state is exactly the one this process wrote after that workflow (nobody changed the instance since). It
is an optimization, never a source of truth: the database decides, any process serves any instance, and a
miss restores from the row as always. The property test (tests/test_state_property.py) checks that a
workflow kept in memory and one restored from its saved state continue identically.

A command takes its workflow out (no other command can hold it), and puts it back only after its
transaction committed; a rolled-back command's workflow, which may have changed, is dropped.
`FINFLOW_WARM_INSTANCES` caps how many are kept (default 256; 0 turns this off).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from SpiffWorkflow.bpmn.workflow import BpmnWorkflow

_kept: OrderedDict[str, tuple[str, BpmnWorkflow]] = OrderedDict()
_lock = threading.Lock()


def capacity() -> int:
    raw = os.environ.get("FINFLOW_WARM_INSTANCES", "256").strip()
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(f"FINFLOW_WARM_INSTANCES must be a whole number, 0 to turn it off (got {raw!r})") from None


def take(instance_id: str, saved_state: str) -> BpmnWorkflow | None:
    """The workflow this process left after writing `saved_state` for the instance, if it still has it."""
    with _lock:
        entry = _kept.pop(instance_id, None)
    if entry is None or entry[0] != saved_state:
        return None
    return entry[1]


def keep(instance_id: str, saved_state: str, workflow: BpmnWorkflow) -> None:
    """Remember `workflow` as what `saved_state` restores to (call after the commit that wrote it)."""
    limit = capacity()
    if limit == 0:
        return
    with _lock:
        _kept[instance_id] = (saved_state, workflow)
        _kept.move_to_end(instance_id)
        while len(_kept) > limit:
            _kept.popitem(last=False)


def clear() -> None:
    with _lock:
        _kept.clear()
