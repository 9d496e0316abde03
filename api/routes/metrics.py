"""`GET /metrics`: Prometheus text format (engine/metrics.py), outside /api/v1 and the OpenAPI document.

The figures name processes, nodes, queues and subscriptions only, but how much a company approves and
how fast is still its business: the endpoint answers an administrator's token (or web session), or the
shared secret `FINFLOW_METRICS_TOKEN` that a Prometheus server sends as its bearer token, and nobody
else (401 without credentials or with unknown ones, 403 for a user who is not an administrator).
"""

from __future__ import annotations

import hmac
import os

from flask import Blueprint, Response

from api.context import bearer_token, caller, requires_token
from engine import metrics
from engine.db import transaction
from engine.errors import Forbidden
from engine.services import access

METRICS_TOKEN_ENV = "FINFLOW_METRICS_TOKEN"

blp = Blueprint("metrics", __name__)


@blp.route("/metrics")
@requires_token
def scrape() -> Response:
    """Command latencies of this process (every process's in multiprocess mode) and the database's figures."""
    if not _is_metrics_secret(bearer_token()):
        with transaction(readonly=True) as session:
            user = caller(session)  # 401 for unknown, expired or revoked tokens and no session
            if not access.may(user, "administer"):
                raise Forbidden("仅管理员可以查看运行指标")
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _is_metrics_secret(token: str | None) -> bool:
    """Whether the bearer token is FINFLOW_METRICS_TOKEN (compared in constant time; unset: never)."""
    secret = os.environ.get(METRICS_TOKEN_ENV, "")
    return bool(secret) and token is not None and hmac.compare_digest(token.encode(), secret.encode())
