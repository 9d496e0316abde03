"""What the adapters' simulators share: faults a test or the demo asks for, taken by the calls they hit."""

from __future__ import annotations

import threading
import time
from typing import Any


class FaultPlan:
    """Faults to inject: the next `times` calls (to one API, or any) fail as `kind`, or every call for a while."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[dict[str, Any]] = []

    def add(self, kind: str, times: int = 1, api: str | None = None) -> None:
        with self._lock:
            self._faults.append({"kind": kind, "times": times, "api": api, "until": None})

    def add_for(self, kind: str, seconds: float, api: str | None = None) -> None:
        with self._lock:
            self._faults.append({"kind": kind, "times": None, "api": api, "until": time.monotonic() + seconds})

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, api: str) -> str | None:
        """The fault this call to `api` suffers, if any (a counted one is used up)."""
        with self._lock:
            for fault in self._faults:
                if fault["api"] not in (None, api):
                    continue
                if fault["until"] is not None:
                    if time.monotonic() < fault["until"]:
                        return fault["kind"]
                elif fault["times"] > 0:
                    fault["times"] -= 1
                    return fault["kind"]
        return None
