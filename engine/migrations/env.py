"""Alembic environment: runs migrations against the URL finflow is configured with."""

from alembic import context

import adapters  # noqa: F401  (the adapters' tables, e.g. notifications: one database, one migration history)
from engine import models  # noqa: F401  (registers the tables on Base.metadata)
from engine.db import Base, get_engine
from engine.outbox import models as outbox_models  # noqa: F401  (the outbox table)

config = context.config


def run_migrations() -> None:
    connectable = config.attributes.get("connection") or get_engine(config.get_main_option("sqlalchemy.url"))
    if hasattr(connectable, "connect"):
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
