"""RabbitMQ delivery: structured-mode CloudEvents published to a durable topic exchange, with publisher
confirms, so an event counts as delivered only once the broker has taken responsibility for it.

Routing key `<process_key>.<event type>` (e.g. `reimbursement.task.completed`); messages are persistent
(delivery mode 2) and carry the CloudEvent id as `message_id`. A connection is kept per thread and
opened again after any failure (broker restart, network loss); a publish whose confirm did not come is
reported as failed, so the outbox sends it again with the same id.
"""

from __future__ import annotations

import re
import threading

import pika
import pika.exceptions
from cloudevents.core.bindings import rabbitmq as ce_rabbitmq
from cloudevents.core.v1.event import CloudEvent

from adapters.events.urls import mask, split
from engine.errors import InvalidInput
from engine.outbox.stream import PermanentFailure, RetryLater

EXCHANGE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,255}$")  # AMQP 0-9-1 shortstr, as RabbitMQ accepts it
_connections = threading.local()


class RabbitMQPublisher:
    def __init__(self, url: str, exchange: str):
        self.url, self.exchange = url, exchange

    def publish(self, event: CloudEvent, routing_key: str) -> None:
        message = ce_rabbitmq.to_structured_event(event)
        properties = pika.BasicProperties(content_type=message.content_type, headers=message.headers or None,
                                          delivery_mode=pika.DeliveryMode.Persistent, message_id=event.get_id(),
                                          type=event.get_type(), app_id="finflow")
        try:
            self._channel().basic_publish(self.exchange, routing_key, message.body, properties)
        except pika.exceptions.NackError as exc:
            raise RetryLater(f"the broker refused the message (nack): {exc}") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            _forget(self.url)  # the next attempt connects afresh
            if isinstance(exc, pika.exceptions.ChannelClosedByBroker) and exc.reply_code == 404:
                raise PermanentFailure(f"exchange {self.exchange!r} does not exist: {exc}") from exc
            raise RetryLater(f"RabbitMQ unavailable: {type(exc).__name__}: {exc}") from exc

    def _channel(self):
        cached = getattr(_connections, "by_url", {}).get(self.url)
        if cached is not None and cached[0].is_open and cached[1].is_open:
            channel = cached[1]
        else:
            _forget(self.url)
            connection, channel = open_channel(self.url)
            _connections.__dict__.setdefault("by_url", {})[self.url] = (connection, channel)
        declared = _connections.__dict__.setdefault("declared", set())
        if (self.url, self.exchange) not in declared:
            declare(channel, self.exchange)
            declared.add((self.url, self.exchange))
        return channel


def open_channel(url: str):
    parameters = pika.URLParameters(url)
    parameters.socket_timeout = 5
    parameters.blocked_connection_timeout = 30
    parameters.connection_attempts = 1
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    channel.confirm_delivery()
    return connection, channel


def declare(channel, exchange: str) -> None:
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)


def check(url: str, exchange: str | None) -> None:
    """422 unless the broker at `url` accepts a connection and the durable topic exchange can be declared."""
    if split(url).scheme not in ("amqp", "amqps"):
        raise InvalidInput("url must be an amqp:// or amqps:// URL",
                           {"fields": {"url": [f"unsupported URL scheme in {mask(url)!r}: use amqp or amqps"]}})
    if not exchange or not EXCHANGE_NAME.match(exchange) or exchange.startswith("amq."):
        raise InvalidInput("exchange must be 1-255 letters, digits, '-', '_', '.' or ':' and not start with amq.",
                           {"fields": {"exchange": [f"malformed exchange name {exchange!r}"]}})
    try:
        connection, channel = open_channel(url)
    except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
        raise InvalidInput(f"RabbitMQ is unreachable at {mask(url)}: {type(exc).__name__} {exc}",
                           {"fields": {"url": [f"cannot connect: {type(exc).__name__} {exc}".strip()]}}) from exc
    try:
        declare(channel, exchange)
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise InvalidInput(f"exchange {exchange!r} cannot be used: {exc.reply_text}",
                           {"fields": {"exchange": [f"{exc.reply_code} {exc.reply_text}"]}}) from exc
    finally:
        if connection.is_open:
            connection.close()


def _forget(url: str) -> None:
    cached = getattr(_connections, "by_url", {}).pop(url, None)
    declared = getattr(_connections, "declared", set())
    for key in [k for k in declared if k[0] == url]:
        declared.discard(key)
    if cached is not None:
        try:
            if cached[0].is_open:
                cached[0].close()
        except Exception:  # a broken connection may fail to close; it is dropped either way
            pass
