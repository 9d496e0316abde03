"""Channel mappings: per-process files a channel adapter reads, deployed and versioned with the process.

A file named `<process key>.<channel>.json` (processes/oa/reimbursement.oa.json: how the reimbursement
process maps onto an OA workflow) is deployed with its process: stored in the version's files and hashed
with them, so a running instance keeps the mapping of the version it started on, and a changed mapping
is a new version like a changed diagram. A form's name has no dot, so the two never collide.

The engine does not interpret a mapping. The adapter of the channel registers a checker here (when its
package is imported), which deploy calls with the parsed process model; it raises `problem(...)` from
engine.runner.checks for anything that does not fit the process. A mapping for a channel no adapter
checks is refused: stored unchecked, it would fail on the first instance instead of at deploy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.runner.model import ProcessModel

Checker = Callable[[str, dict[str, Any], "ProcessModel"], dict[str, Any]]  # (file, mapping, model) -> mapping
_CHECKERS: dict[str, Checker] = {}


def register(channel: str, check: Checker) -> None:
    """Have deploy check `<process>.<channel>.json` files with `check(file, mapping, model)`, which returns
    the mapping as the adapter will read it (defaults filled in) or raises DeploymentInvalid."""
    _CHECKERS[channel] = check


def checker(channel: str) -> Checker | None:
    return _CHECKERS.get(channel)


def known() -> list[str]:
    return sorted(_CHECKERS)


def parse_name(filename: str) -> tuple[str, str] | None:
    """(process key, channel) of a mapping file's name, or None for any other file (a form)."""
    parts = filename.rsplit("/", 1)[-1].split(".")
    if len(parts) == 3 and parts[2] == "json" and parts[0] and parts[1]:
        return parts[0], parts[1]
    return None
