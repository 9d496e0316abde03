"""The REST API (Flask + flask-smorest). Views stay thin: parse, call one engine service, serialize."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_smorest import Api

import adapters
from api.errors import register_error_handlers

MAX_UPLOAD_BYTES = 5 * 1024 * 1024


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        API_TITLE="finflow",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        JSON_SORT_KEYS=False,
    )
    app.json.ensure_ascii = False
    app.config.update(config or {})
    api = Api(app, spec_kwargs={"info": {"description": "finflow finance approval BPM API"}})
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    api.spec.options["security"] = [{"bearer": []}]

    from api.routes import admin, budgets, definitions, events, health, instances, notifications, tasks

    for module in (health, definitions, instances, tasks, notifications, budgets, admin, events):
        api.register_blueprint(module.blp, url_prefix="/api/v1")
    register_error_handlers(app)
    adapters.load_all()  # the API records events: their subscribers must be known here (see adapters/)
    return app
