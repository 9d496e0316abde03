"""Consumers of engine events: in-app notifications, events out to webhooks and RabbitMQ, WeCom and OA.

Adapters depend on the engine, never the other way round. Each adapter package has a `load()` that
subscribes its handlers (engine.events.subscribe); `load_all` calls them, plus the modules named in
FINFLOW_PLUGINS (comma-separated, each with a `load()`), and is called by every process that records
events or runs their jobs: create_app, the `finflow` command (worker included).

Importing this package registers the adapters' tables on engine.db.Base, so migrations and schema
set-up see the whole database.
"""

from __future__ import annotations

import importlib
import os

from adapters.events import models as _events_models  # noqa: F401  (registers event_subscriptions)
from adapters.inbox import models as _inbox_models  # noqa: F401  (registers the notifications table)
from adapters.oa import mapping as _oa_mapping  # noqa: F401  (deploy checks processes/oa/*.oa.json)
from adapters.oa import models as _oa_models  # noqa: F401  (registers the oa_* tables)
from adapters.wecom import models as _wecom_models  # noqa: F401  (registers the wecom_* tables)

BUILT_IN = ("adapters.inbox", "adapters.events", "adapters.wecom", "adapters.oa")


def load_all() -> list[str]:
    """Subscribe every adapter and plugin; safe to call again (a subscription is replaced by name)."""
    names = [*BUILT_IN, *(p.strip() for p in os.environ.get("FINFLOW_PLUGINS", "").split(",") if p.strip())]
    for name in names:
        importlib.import_module(name).load()
    return names


def cli_commands() -> list:
    """The adapters' click command groups for `finflow` (`events`), imported on call so the engine's CLI
    can add them without importing adapters at module level, and `import adapters` stays light."""
    from adapters.events.cli import events
    from adapters.oa.cli import oa
    from adapters.wecom.cli import wecom

    return [events, wecom, oa]


def integrations(session, instance_id: str) -> dict:
    """The instance's twins in other systems, for GET /instances/{id}: today the OA request (None: none)."""
    from adapters.oa.sync import twin_view

    return {"oa": twin_view(session, instance_id)}


def blueprints() -> list:
    """The adapters' plain Flask blueprints (no bearer token, not in the OpenAPI document): WeCom's
    callback and OAuth2 login, and the approver page the WeCom cards link to. Registered by create_app."""
    from adapters.oa import callback as oa_callback
    from adapters.wecom import callback, oauth
    from api.web import blp as web

    return [callback.blp, oauth.blp, oa_callback.blp, web]
