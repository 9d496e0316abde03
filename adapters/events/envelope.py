"""An outbox message as a CloudEvents 1.0 event: the attributes consumers route and de-duplicate on, and
a `data` summary with every field a form marks `x-sensitive` removed.

* `id`: `<instance id>.<history seq>`, the same on every retry and for every subscription.
* `source`: `/finflow/<deployment>/instances/<instance id>` (FINFLOW_DEPLOYMENT, default `finflow`).
* `type`: `com.finflow.<history type>`; `subject`: the business key; `time`: when it happened.
* extensions: `instanceseq`, the event's number in the instance history (as the timeline API shows it);
  `streamseq`, its number among the events this subscription got for the instance (1, 2, 3 … with no
  gap, so a jump means a lost or dead event); `partitionkey`, the instance id (keeps an instance's
  events in one partition on brokers that partition).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.events.catalog import cloud_type
from engine.models import ProcessVersion
from engine.outbox.delivery import Message
from engine.services.deployments import model_for
from engine.services.disclosure import sensitive_fields

CONTENT_TYPE = "application/json"
# The action an event stands for when its payload names none (task.completed carries its own).
ACTIONS = {"task.returned": "return", "task.transferred": "transfer", "task.delegated": "delegate",
           "task.signers_added": "add_signers", "task.auto_approved": "approve", "task.urged": "urge",
           "task.escalated": "escalate", "instance.withdrawn": "withdraw", "instance.cancelled": "cancel"}


def deployment() -> str:
    return os.environ.get("FINFLOW_DEPLOYMENT", "finflow")


def event_id(instance_id: str, seq: int) -> str:
    """The CloudEvent id of an instance's `seq`-th history event."""
    return f"{instance_id}.{seq}"


def build(session: Session, message: Message) -> CloudEvent:
    instance, event = message.instance, message.event
    version = _version(session, instance.get("version_id"))
    hidden = version.sensitive_fields
    details = _without({k: v for k, v in (event.get("payload") or {}).items() if k != "version_id"}, hidden)
    data = {
        "instance_id": message.instance_id, "process_key": instance.get("process_key"),
        "process_version": version.number, "business_key": instance.get("business_key"),
        "title": instance.get("title"), "status": instance.get("status"), "outcome": instance.get("outcome"),
        "starter_id": instance.get("starter_id"), "amount": instance.get("amount"),
        "task_id": event.get("task_id"), "node_id": event.get("node_id"),
        "node_name": version.node_names.get(event.get("node_id") or ""),
        "actor_id": event.get("actor_id"), "channel": event.get("channel"),
        "action": details.get("action") or details.get("opinion") or ACTIONS.get(message.event_type),
        "comment": details.get("comment") or details.get("reason"),
        "details": details,
    }
    attributes = {
        "id": event_id(message.instance_id, message.seq),
        "source": f"/finflow/{deployment()}/instances/{message.instance_id}",
        "type": cloud_type(message.event_type), "subject": instance.get("business_key") or message.instance_id,
        "time": datetime.fromisoformat(event["at"]), "datacontenttype": CONTENT_TYPE,
        "instanceseq": message.seq, "streamseq": message.stream_seq or 0, "partitionkey": message.instance_id,
    }
    return CloudEvent(attributes, _without(data, hidden))


@dataclass(frozen=True)
class _VersionFacts:
    number: int | None
    node_names: dict[str, str]
    sensitive_fields: frozenset[str]


_FACTS: dict[tuple[int, str], _VersionFacts] = {}  # by (version id, content hash): versions are immutable


def _version(session: Session, version_id: int | None) -> _VersionFacts:
    if version_id is None:
        return _VersionFacts(None, {}, frozenset())
    known: dict[int, tuple[int, str]] = session.info.setdefault("events.versions", {})  # once per transaction
    if version_id not in known:
        number, digest = session.execute(select(ProcessVersion.version, ProcessVersion.content_hash)
                                         .where(ProcessVersion.id == version_id)).one()
        known[version_id] = (number, digest)
    number, digest = known[version_id]
    cached = _FACTS.get((version_id, digest))
    if cached is None:
        model = model_for(session, version_id, digest)
        names = {node_id: node.name for node_id, node in model.nodes.items() if node.name}
        sensitive = frozenset(name for form in model.forms.values() for name in sensitive_fields(form))
        cached = _FACTS[(version_id, digest)] = _VersionFacts(number, names, sensitive)
    return cached


def _without(value: Any, hidden: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, hidden) for k, v in value.items() if k not in hidden}
    if isinstance(value, list):
        return [_without(v, hidden) for v in value]
    return value
