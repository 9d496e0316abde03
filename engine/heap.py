"""Garbage-collector settings for long-running processes (API servers, workers).

A step builds and drops large object graphs (a restored SpiffWorkflow tree, its data); with Python's
defaults the allocations trigger frequent collections, and a full (gen-2) one walks every object the
process holds — modules, parsed process specs, the app — costing 80–100 ms in the middle of a request.
After start-up those objects live for the life of the process, so `gc.freeze()` moves them out of the
collector's sight, and a larger young-generation threshold lets a step's short-lived garbage be freed
by reference counting before a collection is due. Cycles are still collected.
"""

from __future__ import annotations

import gc
import os

YOUNG_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)


def settle() -> None:
    """Call once the process has loaded what it keeps (after the app is built, after a fork).
    FINFLOW_GC=default leaves Python's collector as it is."""
    if os.environ.get("FINFLOW_GC", "tuned").lower() == "default":
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
