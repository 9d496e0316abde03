"""The small interface every OA client implements, so finflow's sync, inbound and reconciliation code speaks
to 泛微 E9 (weaver.py), and later 致远 (Seeyon `/seeyon/rest/token`, `/seeyon/rest/bpm/process/start`) or
蓝凌 (Landray `km-review` addReview / approveProcess), through the same nine calls.

Every call names the OA user it acts as (an OA acts on a request as one of its people: the creator, an
operator of the current node). Failures are `OAError` (refused for good: a wrong field, no permission —
retrying cannot help) or `OATransient` (OA down, slow, a 5xx or an HTML page from a gateway: retried later).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from adapters.oa.config import OAConfig

OPEN, ARCHIVED, WITHDRAWN = "open", "archived", "withdrawn"  # RequestStatus.state
_local = threading.local()


class OAError(Exception):
    """OA refused the call (PARAM_ERROR, NO_PERMISSION, …) or answered something finflow cannot use."""

    def __init__(self, code: str, message: str, api: str):
        super().__init__(f"OA {api}: {code} {message}")
        self.code, self.message, self.api = code, message, api


class OATransient(OAError):
    """Worth retrying later: no answer, a timeout, HTTP 5xx, a page that is not JSON."""


@dataclass(frozen=True)
class RequestStatus:
    request_id: str
    node_id: str
    node_name: str
    node_type: str  # create | approve | submit | archive
    state: str  # open | archived | withdrawn
    signed: tuple[str, ...] = ()  # OA users who signed at the current countersign node


@dataclass(frozen=True)
class LogEntry:
    """One line of the request's sign-off log (签字意见)."""

    log_id: str
    node_id: str
    operator_id: str
    action: str  # submit | reject | save | withdraw | archive | other
    remark: str = ""
    at: str = ""  # OA's own "YYYY-MM-DD HH:MM:SS" (OA's clock, Asia/Shanghai)


@dataclass(frozen=True)
class OAUser:
    id: str
    login: str
    name: str
    active: bool = True


@dataclass(frozen=True)
class NewRequest:
    workflow_id: str
    name: str
    main: dict[str, str]
    details: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # table -> rows
    submit: bool = True  # leave the create node at once (E9 isnextflow=1)


class OASystem(Protocol):
    def create_request(self, user: str, request: NewRequest) -> str: ...  # -> OA request id

    def submit(self, user: str, request_id: str, remark: str, main: dict[str, str] | None = None) -> None: ...

    def reject(self, user: str, request_id: str, remark: str, to_node: str | None = None) -> None: ...

    def withdraw(self, user: str, request_id: str, remark: str) -> None: ...

    def force_over(self, user: str, request_id: str, remark: str) -> None: ...

    def status(self, user: str, request_id: str) -> RequestStatus: ...

    def logs(self, user: str, request_id: str) -> list[LogEntry]: ...

    def users(self) -> list[OAUser]: ...


def system(config: OAConfig) -> OASystem:
    """This thread's client for `config` (keep-alive connections stay with their thread); tokens are shared
    by every process through the job queues' Redis."""
    from adapters.oa.weaver import WeaverClient
    from engine.outbox.dispatch import connection, redis_url

    kinds = {"weaver": WeaverClient}
    if config.system not in kinds:
        raise ValueError(f"FINFLOW_OA_SYSTEM={config.system!r} is not supported (known: {', '.join(kinds)})")
    clients: dict[OAConfig, OASystem] = _local.__dict__.setdefault("clients", {})
    if config not in clients:
        clients[config] = kinds[config.system](config, connection(redis_url()))
    return clients[config]
