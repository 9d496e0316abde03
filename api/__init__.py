"""The REST API (Flask + flask-smorest). Views stay thin: parse, call one engine service, serialize."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

import adapters
from api import guards, openapi, paths, ratelimits, security_headers
from api.errors import register_error_handlers
from api.jsonio import FinflowJSONProvider

MAX_UPLOAD_BYTES = 5 * 1024 * 1024


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.json = FinflowJSONProvider(app)  # Decimal in, strict JSON out (api/jsonio.py)
    app.config.update(
        API_TITLE="finflow",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=openapi.PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        TRUSTED_PROXY_HOPS=int(os.environ.get("FINFLOW_TRUSTED_PROXY_HOPS", "0")),
    )
    app.config.update(config or {})
    _trust_proxies(app, app.config["TRUSTED_PROXY_HOPS"])
    paths.register(app)
    api = openapi.setup(app)
    paths.register_in_spec(api)

    from api.routes import (
        admin,
        budgets,
        definitions,
        deliveries,
        events,
        health,
        instances,
        metrics,
        notifications,
        oa,
        second_factor,
        security,
        tasks,
        tokens,
    )

    for module in (health, definitions, instances, tasks, notifications, budgets, admin, events, deliveries, oa,
                   tokens, security, second_factor):
        api.register_blueprint(module.blp, url_prefix=openapi.PREFIX)
    app.register_blueprint(metrics.blp)  # GET /metrics (Prometheus), outside /api/v1 and its spec
    for blueprint in adapters.blueprints():  # WeCom callback/OAuth2 and the approver page (/m/…)
        app.register_blueprint(blueprint)
    guards.register(app)
    ratelimits.setup(app)  # after the blueprints: it limits their views (login, callbacks, urge)
    security_headers.register(app)
    register_error_handlers(app)
    adapters.load_all()  # the API records events: their subscribers must be known here (see adapters/)
    return app


def _trust_proxies(app: Flask, hops: int) -> None:
    """Believe X-Forwarded-For/-Proto only as set by the `hops` proxies in front of us (0: none, the
    socket's address is the client's), so a client cannot put any IP it likes into the history."""
    if hops < 0:
        raise ValueError("FINFLOW_TRUSTED_PROXY_HOPS must be 0 or more")
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
