"""Rate limits (Flask-Limiter) on what a flood hurts: the logins, the WeCom and OA callbacks, and 催办.

Each limit is a setting, in the app config or the environment, of the same name; "off" disables it, and
FINFLOW_RATE_LIMITS=off disables them all. A limit string is Flask-Limiter's: "10/minute",
"10 per minute;100 per hour".

- FINFLOW_RATE_LOGIN (default 10/minute, per client IP): POST /login and /wecom/oauth/callback. Only
  refused attempts count (any answer of 400 or more): a successful login costs nothing, so a whole office
  behind one NAT address logging in at 9:00 is never throttled, while guessing passwords from one address
  stops after ten tries a minute — before a database query or a password hash. The database's own limits
  per login and per address (engine/services/passwords.py) stay as they are.
- FINFLOW_RATE_CALLBACK (default 500/second, per client IP): /wecom/callback and /oa/callback. WeCom sends
  a burst of clicks (200 a second, bench/wecom_bench.py) from a handful of addresses, with retries on
  top; 500 a second from any one address leaves that burst 2.5 times the room, yet stops a flood before
  it reaches decryption and the database. A limited callback gets a 429: WeCom and OA retry later.
- FINFLOW_RATE_URGE (default 20/hour, per user; per IP when the credentials name nobody): POST
  /instances/{id}/urge, on top of the service's once-an-hour-per-task rule, so one applicant cannot
  nudge approvers through many instances at once.

Counters live in REDIS_URL's Redis when it is set (every API process of `finflow serve --processes N`
and every host share them), else in this process's memory (embedded mode: one process). While Redis is
unreachable each process counts in its own memory (one warning, Redis is tried again with back-off), so
an outage neither fails logins and callbacks nor lifts the limits. Tests run without limits unless
they ask (TESTING, or RATELIMIT_ENABLED in the config).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import limits
from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded

from api.context import caller
from api.errors import error_response
from api.web.pages import error_page
from engine.config import Settings
from engine.db import transaction
from engine.errors import FinflowError

OFF = "off"
KEY_PREFIX = "finflow:ratelimit"  # beside the app's own keys (rq:…, finflow:…) in REDIS_URL's database
PAGE_BLUEPRINTS = frozenset({"web", "wecom_oauth"})  # the ones answering browsers with HTML pages


def client_ip() -> str:
    """The client's address as the app sees it (ProxyFix, FINFLOW_TRUSTED_PROXY_HOPS): a client-sent
    X-Forwarded-For is not believed on its own, so it cannot buy itself a fresh counter."""
    return f"ip:{request.remote_addr or 'unknown'}"


def user_or_ip() -> str:
    """The caller's user when the bearer token or session cookie names one, else the address. One
    read-only lookup, only on the limited route; a bad credential falls back to the address (the view
    refuses it anyway)."""
    try:
        with transaction(readonly=True) as session:
            return f"user:{caller(session).id}"
    except FinflowError:
        return client_ip()


def refused(response: Response) -> bool:
    return response.status_code >= 400


@dataclass(frozen=True)
class Rule:
    setting: str
    default: str
    endpoints: tuple[str, ...]
    key: Callable[[], str]
    counts: Callable[[Response], bool] | None = None  # None: every request counts


RULES = (
    Rule("FINFLOW_RATE_LOGIN", "10/minute", ("web.log_in", "wecom_oauth.finish"), client_ip, refused),
    Rule("FINFLOW_RATE_CALLBACK", "500/second",
         ("wecom_callback.verify_url", "wecom_callback.receive", "oa_callback.receive"), client_ip),
    Rule("FINFLOW_RATE_URGE", "20/hour", ("instances.urge",), user_or_ip),
)


def setup(app: Flask) -> Limiter | None:
    """Limit the RULES' endpoints of `app` (call after every blueprint is registered); None when off."""
    everything = os.environ.get("FINFLOW_RATE_LIMITS", "on").strip().lower() != OFF
    app.config.setdefault("RATELIMIT_ENABLED", everything and not app.config.get("TESTING"))
    if not app.config["RATELIMIT_ENABLED"]:
        return None
    settings = {rule.setting: limit_setting(app, rule) for rule in RULES}
    storage = app.config.setdefault("RATELIMIT_STORAGE_URI", storage_uri(Settings.from_env().redis_url))
    if storage.startswith(("redis://", "rediss://", "redis+unix://")):
        app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"key_prefix": KEY_PREFIX, "socket_connect_timeout": 1,
                                                            "socket_timeout": 1})
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)  # Redis down: count in this process
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)  # anything else: let the request through, logged
    limiter = Limiter(client_ip, app=app)
    for rule in RULES:
        if settings[rule.setting] is None:
            continue
        for endpoint in rule.endpoints:
            view = app.view_functions[endpoint]
            app.view_functions[endpoint] = limiter.limit(settings[rule.setting], key_func=rule.key,
                                                         deduct_when=rule.counts)(view)
    app.register_error_handler(RateLimitExceeded, lambda exc: limited(limiter, exc))
    app.extensions["finflow_limiter"] = limiter
    return limiter


def limit_setting(app: Flask, rule: Rule) -> str | None:
    """The rule's limit from the app config, else the environment, else its default; None when "off".
    A string Flask-Limiter cannot read stops the app here, naming the setting, not at the first request."""
    value = str(app.config.get(rule.setting) or os.environ.get(rule.setting) or rule.default).strip()
    if value.lower() == OFF:
        return None
    try:
        limits.parse_many(value)
    except ValueError as exc:
        raise ValueError(f"{rule.setting}={value!r} is not a rate limit: use e.g. '{rule.default}', "
                         f"'10 per minute;100 per hour', or 'off'") from exc
    return value


def storage_uri(redis_url: str | None) -> str:
    """The app's Redis as Flask-Limiter spells it, or memory:// (embedded mode, one process)."""
    if redis_url is None:
        return "memory://"
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


def limited(limiter: Limiter, exc: RateLimitExceeded) -> Response:
    """429 with Retry-After: the API's JSON error, or the message page for a browser asking for HTML."""
    current = limiter.current_limit
    reset_at = current.window[0] if current is not None else time.time() + exc.limit.limit.get_expiry()
    retry_after = max(1, math.ceil(reset_at - time.time()))
    message = f"请求过于频繁，请 {retry_after} 秒后再试。"
    if request.blueprint in PAGE_BLUEPRINTS and _wants_html():
        response = error_page("请求过于频繁", message, 429)
    else:
        response = error_response(429, "rate_limited", message,
                                  {"limit": str(exc.limit.limit), "retry_after": retry_after})
    response.headers["Retry-After"] = str(retry_after)
    return response


def _wants_html() -> bool:
    return request.accept_mimetypes.best_match(("application/json", "text/html")) == "text/html"
