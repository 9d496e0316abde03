"""Shared by the events-out tests: a real webhook receiver on 127.0.0.1, a consumer on the real RabbitMQ,
and the helpers that create subscriptions and read what was delivered.

The receiver answers as a test scripts it (status, headers, a delay), and records every request with
its headers and body. The consumer binds its own durable queue to the exchange with `#`, so messages
published while it is not reading (or while the broker restarts) wait for it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pika
import pytest
from sqlalchemy import select

from adapters.events import SUBSCRIPTION, subscriptions
from engine import events
from engine.db import transaction
from engine.models import HistoryEvent
from engine.outbox import dispatch
from engine.outbox.models import OutboxMessage

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

Answer = tuple[int, dict[str, str], float]  # status, headers, seconds to wait before answering


@dataclass
class Received:
    headers: Any  # http.client.HTTPMessage: names are case-insensitive, as a real receiver's are
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP server; `answer(n, request)` decides the n-th (0-based) response."""

    answer: Callable[[int, Received], Answer] = lambda n, r: (200, {}, 0.0)
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Received(self.headers, body)
                with receiver._lock:
                    n = len(receiver.requests)
                    receiver.requests.append(request)
                status, headers, delay = receiver.answer(n, request)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, *args):
                pass

        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/finflow-events"

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver answering 200 until the test scripts it otherwise."""
    server = WebhookReceiver()
    yield server
    dispatch.drain_background()  # nothing of this test still sending when the next one starts
    server.close()


@pytest.fixture
def events_out():
    """The events adapter subscribed to the engine (as create_app and the CLI do), for this test only."""
    import adapters.events

    adapters.events.load()
    yield
    events.unsubscribe(SUBSCRIPTION)


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (an unreachable destination)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rabbitmq_up() -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL + "?socket_timeout=2&connection_attempts=1")).close()
        return True
    except Exception:
        return False


def require_rabbitmq() -> None:
    if not rabbitmq_up():
        pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 (scripts/services.sh starts it)")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


class RabbitConsumer:
    """A durable queue bound to `exchange` with `#`; `take` reads what has arrived so far."""

    def __init__(self, exchange: str, queue: str):
        self.exchange, self.queue = exchange, queue
        channel = self._channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_purge(queue)
        channel.queue_bind(queue, exchange, routing_key="#")
        channel.connection.close()
        self.messages: list[tuple[pika.BasicProperties, str, dict[str, Any]]] = []  # properties, key, event

    def _channel(self):
        return pika.BlockingConnection(pika.URLParameters(AMQP_URL)).channel()

    def take(self) -> list[tuple[pika.BasicProperties, str, dict[str, Any]]]:
        channel = self._channel()
        try:
            while True:
                method, properties, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    break
                self.messages.append((properties, method.routing_key, json.loads(body)))
        finally:
            channel.connection.close()
        return self.messages

    def wait_for_events(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The events taken once at least `count` distinct ids have arrived."""
        deadline = time.monotonic() + timeout
        while len({event["id"] for _, _, event in self.take()}) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out: {len(self.messages)} of {count} events at the consumer")
            time.sleep(0.1)
        return [event for _, _, event in self.messages]

    def delete(self) -> None:
        channel = self._channel()
        channel.queue_delete(self.queue)
        channel.connection.close()


def subscribe(kind: str, url: str, *, exchange: str | None = None, event_types: list[str] | None = None,
              process_keys: list[str] | None = None, name: str = "测试订阅") -> tuple[str, str | None]:
    """Create a subscription through the service; returns (id, secret)."""
    body = {"kind": kind, "name": name, "url": url, "exchange": exchange, "event_types": event_types or ["*"],
            "process_keys": process_keys or []}
    with transaction(readonly=True) as session:
        spec = subscriptions.check(session, body)
    with transaction() as session:
        subscription, secret = subscriptions.create(session, spec, None)
        return subscription.id, secret


def deliveries(target: str | None = None) -> list[OutboxMessage]:
    with transaction(readonly=True) as session:
        stmt = select(OutboxMessage).where(OutboxMessage.subscription == SUBSCRIPTION).order_by(OutboxMessage.id)
        if target is not None:
            stmt = stmt.where(OutboxMessage.target == target)
        return list(session.scalars(stmt))


def settle(timeout: float = 30.0) -> None:
    """Embedded mode: wait for the background deliveries."""
    assert dispatch.drain_background(timeout), "embedded event deliveries did not finish in time"


def history_by_instance() -> dict[str, list[tuple[int, str]]]:
    """(seq, type) of every history event, per instance, in order: what the events must match."""
    with transaction(readonly=True) as session:
        rows = session.execute(select(HistoryEvent.instance_id, HistoryEvent.seq, HistoryEvent.type)
                               .order_by(HistoryEvent.instance_id, HistoryEvent.seq))
        result: dict[str, list[tuple[int, str]]] = {}
        for instance_id, seq, type_ in rows:
            result.setdefault(instance_id, []).append((seq, type_))
        return result


def assert_complete_and_ordered(events: list[dict[str, Any]]) -> None:
    """De-duplicated by id, the events are exactly the history, per instance in sequence order, with
    streamseq running 1, 2, 3 … for an all-events subscription."""
    first_seen: dict[str, dict[str, Any]] = {}
    for event in events:
        first_seen.setdefault(event["id"], event)
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for event in first_seen.values():
        by_instance.setdefault(event["partitionkey"], []).append(event)
    history = history_by_instance()
    assert set(by_instance) == set(history)
    for instance_id, received in by_instance.items():
        assert [(e["instanceseq"], e["type"]) for e in received] == \
            [(seq, "com.finflow." + type_) for seq, type_ in history[instance_id]], instance_id
        assert [e["streamseq"] for e in received] == list(range(1, len(received) + 1))
