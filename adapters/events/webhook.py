"""Webhook delivery: an HTTP POST of the structured-mode CloudEvent, signed with the subscription's secret.

Headers (documented in the README with a verification snippet):
* `Content-Type: application/cloudevents+json` (UTF-8 JSON)
* `X-Finflow-Event-Id`: the CloudEvent id, to de-duplicate on
* `X-Finflow-Timestamp`: Unix seconds when this attempt was sent
* `X-Finflow-Signature`: `sha256=` + hex HMAC-SHA256(secret, timestamp + "." + body)

The answer decides what happens next: 2xx delivered; 408, 429, 5xx, a timeout or a connection error are
retried with backoff (a Retry-After header is honoured); any other status (4xx, a redirect) is a
permanent failure recorded on the delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import threading
import time
from email.utils import parsedate_to_datetime

import httpx
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from adapters.events.models import SECRET_PURPOSE
from adapters.events.urls import split
from engine import crypto
from engine.errors import InvalidInput
from engine.outbox.stream import PermanentFailure, RetryLater

RETRYABLE = {408, 429}
_clients = threading.local()


def timeouts() -> httpx.Timeout:
    env = os.environ.get
    return httpx.Timeout(float(env("FINFLOW_WEBHOOK_READ_TIMEOUT", "10")),
                         connect=float(env("FINFLOW_WEBHOOK_CONNECT_TIMEOUT", "5")))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookPublisher:
    """Sends to one webhook. `sealed_secret` is the subscription's secret as stored: it is opened for each
    send, so keys that do not open it fail that delivery with SecretKeyError (recorded on the row and
    retried like any failure once the key is fixed), not the claim that prepared it."""

    def __init__(self, url: str, sealed_secret: str):
        self.url, self.sealed_secret = url, sealed_secret

    def publish(self, event: CloudEvent, routing_key: str) -> None:
        secret = crypto.unseal(self.sealed_secret, SECRET_PURPOSE)
        message = ce_http.to_structured_event(event)
        timestamp = str(int(time.time()))
        headers = {**message.headers,  # content-type: application/cloudevents+json
                   "X-Finflow-Event-Id": event.get_id(), "X-Finflow-Timestamp": timestamp,
                   "X-Finflow-Signature": sign(secret, timestamp, message.body),
                   "User-Agent": "finflow-webhooks/1"}
        try:
            response = _client().post(self.url, content=message.body, headers=headers, timeout=timeouts())
        except httpx.TimeoutException as exc:
            raise RetryLater(f"timeout: {type(exc).__name__} after {timeouts().read:.0f} s") from exc
        except httpx.TransportError as exc:
            raise RetryLater(f"connection failed: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = f"HTTP {status} from {self.url}: {response.text[:300]}".rstrip(": ")
        if status in RETRYABLE or status >= 500:
            raise RetryLater(reason, after=retry_after(response.headers.get("Retry-After")))
        raise PermanentFailure(reason)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def check_url(url: str) -> None:
    """422 unless `url` is an http(s) URL whose host accepts a connection now."""
    parts = split(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http:// or https:// URL with a host",
                           {"fields": {"url": [f"unsupported URL {url!r}: use http or https"]}})
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidInput(f"url has a bad port: {exc}", {"fields": {"url": [str(exc)]}}) from exc
    try:
        socket.create_connection((parts.hostname, port), timeout=timeouts().connect).close()
    except OSError as exc:
        raise InvalidInput(f"webhook URL is unreachable: {parts.hostname}:{port} ({exc})",
                           {"fields": {"url": [f"cannot connect to {parts.hostname}:{port}: {exc}"]}}) from exc


def _client() -> httpx.Client:
    """One keep-alive client per thread (httpx clients are thread-safe, but workers are single-threaded
    and embedded mode's background thread is one thread: this keeps their connections apart)."""
    client = getattr(_clients, "client", None)
    if client is None:
        client = _clients.client = httpx.Client(follow_redirects=False)
    return client
