"""The history hash chain: how one event's hash is computed from the previous one and its own row.

hash(event n) = sha256(hash(event n-1) + canonical(row n)), hash(event 0) = 64 zeros. `canonical(row)` is
the JSON array [instance_id, seq, type, at, actor_id, channel, client_ip, user_agent, task_id, node_id,
payload], with `at` in UTC ISO 8601 with microseconds and everything as canonical JSON (sorted keys, no
whitespace, UTF-8 rather than escapes). A JSON array keeps fields apart without a separator that a value
could contain, and tells None from "".

The hash is computed at write time from the values about to be inserted and later from the row read back,
so the payload is hashed in its stored form: what the database's JSON serializer (engine.db.json_dumps:
Decimal and dates as strings) makes of it, read back as plain JSON. Both engines then give the same text.

This algorithm is part of the data: changing it breaks every stored chain. Do not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from engine.db import json_dumps

GENESIS = "0" * 64  # the "previous hash" of an instance's first event
FIELDS = ("instance_id", "seq", "type", "at", "actor_id", "channel", "client_ip", "user_agent", "task_id",
          "node_id", "payload")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def stored_form(payload: Any) -> Any:
    """`payload` as it reads back from a JSON column: serialized the way the engine stores it, parsed."""
    return json.loads(json_dumps(payload))


def canonical_at(at: datetime) -> str:
    moment = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def canonical_row(row: Mapping[str, Any]) -> str:
    values = [row[name] for name in FIELDS]
    values[FIELDS.index("at")] = canonical_at(row["at"])
    values[-1] = stored_form(row["payload"])
    return canonical_json(values)


def event_hash(previous: str, row: Mapping[str, Any]) -> str:
    """The hash of one history row (a mapping with at least FIELDS) following the event hashed `previous`."""
    return hashlib.sha256((previous + canonical_row(row)).encode("utf-8")).hexdigest()


def fields_of(event: Any) -> dict[str, Any]:
    """The hashed fields of an ORM object or a Core row (anything with those attributes)."""
    return {name: getattr(event, name) for name in FIELDS}


def link(head: str | None, rows: Iterable[MutableMapping[str, Any]]) -> str:
    """Give each row (in seq order, following the event hashed `head`) its `hash`; returns the new head.

    The caller keeps the head on the instance (`Instance.chain_head`), so writing never reads rows back.
    """
    previous = head or GENESIS
    for row in rows:
        row["hash"] = previous = event_hash(previous, row)
    return previous


def link_instances(rows: Iterable[MutableMapping[str, Any]]) -> dict[str, str]:
    """Chain whole histories from their first event (rows of several instances, any order): sets every
    row's `hash`, returns each instance's head. For tools that copy history under new instance ids."""
    by_instance: dict[str, list[MutableMapping[str, Any]]] = {}
    for row in rows:
        by_instance.setdefault(row["instance_id"], []).append(row)
    return {instance_id: link(None, sorted(group, key=lambda r: r["seq"]))
            for instance_id, group in by_instance.items()}
