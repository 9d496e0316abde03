"""Event subscriptions: where finflow's events go outside (a webhook URL, a RabbitMQ exchange).

A deleted subscription keeps its row (status `deleted`), so the deliveries that name it stay readable.
A webhook's secret is stored sealed with FINFLOW_SECRET_KEY: a copy of the database cannot sign events.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from engine import crypto
from engine.db import Base
from engine.models import UtcDateTime

KINDS = ("webhook", "rabbitmq")
STATUSES = ("active", "paused", "deleted")
SECRET_PURPOSE = "webhook"  # what webhook secrets are sealed for (engine.crypto)


class EventSubscription(Base):
    __tablename__ = "event_subscriptions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # also the outbox rows' target
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # webhook | rabbitmq
    url: Mapped[str] = mapped_column(Text)  # https://… for a webhook, amqp(s)://user:password@host/vhost
    exchange: Mapped[str | None] = mapped_column(String(255))  # rabbitmq: the durable topic exchange
    # webhook: the HMAC key sealed (engine.crypto, purpose "webhook"); `secret` opens it
    sealed_secret: Mapped[str | None] = mapped_column("secret", Text)
    process_keys: Mapped[list[str]] = mapped_column(JSON, default=list)  # [] = every process
    event_types: Mapped[list[str]] = mapped_column(JSON)  # patterns such as "task.*", "instance.completed"
    status: Mapped[str] = mapped_column(String(8), default="active")  # active | paused | deleted
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped on every change (caches compare it)

    @property
    def secret(self) -> str | None:
        """The webhook's HMAC key in plaintext, opened on demand: what creation shows once (API and CLI)
        and deliveries sign with; never stored so. SecretKeyError when the configured keys do not open it."""
        return None if self.sealed_secret is None else crypto.unseal(self.sealed_secret, SECRET_PURPOSE)
