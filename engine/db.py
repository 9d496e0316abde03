"""Database engine and transactions.

One command is one transaction. On SQLite the transaction starts with BEGIN IMMEDIATE so that
concurrent writers queue on the database lock instead of failing half-way with "database is locked".

Work that must only happen once the transaction is durable (handing outbox rows to the job queue) is
registered with `after_commit`: it runs after a successful commit and never after a rollback.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from engine.config import Settings

log = logging.getLogger("finflow.db")
AFTER_COMMIT = "after_commit"  # session.info key: callbacks run by `transaction` once the commit succeeded
DATABASE_URL = "database_url"  # session.info key: the URL `transaction` was opened with (None = configured one)


class Base(DeclarativeBase):
    pass


def _json_default(value: Any) -> Any:
    """JSON columns hold amounts as exact strings ("8000.00"), never as floats."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data: amounts and dates as strings, and a non-finite float (which a script
    may compute) as its name, so no reader ever gets invalid JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Decimal | datetime | date):
        return _json_default(value)
    return str(value)


# allow_nan=False: a NaN or Infinity would be invalid JSON for every reader (and PostgreSQL refuses it).
json_dumps = partial(json.dumps, default=_json_default, ensure_ascii=False, allow_nan=False)


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    url = url or Settings.from_env().database_url
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, json_serializer=json_dumps)


def _sqlite_engine(url: str) -> Engine:
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           json_serializer=json_dumps)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (see the begin hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Readers take no write lock: WAL lets them run beside the one writer.
        readonly = connection.get_execution_options().get("finflow_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


@lru_cache(maxsize=16)
def _session_factory(url: str | None, readonly: bool) -> sessionmaker[Session]:
    bind = get_engine(url)
    if readonly:
        bind = bind.execution_options(finflow_readonly=True)
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)


@contextmanager
def transaction(url: str | None = None, *, readonly: bool = False) -> Iterator[Session]:
    """Run a block in one transaction: commit on success, roll back on any exception.

    `readonly` is a promise the block does not write; on SQLite it then does not queue behind writers.
    """
    session = _session_factory(url, readonly)()
    session.info[DATABASE_URL] = url
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        callbacks = session.info.pop(AFTER_COMMIT, [])  # a rollback discards them with the session
        session.close()
    for callback in callbacks:
        try:
            callback()
        except Exception:  # the transaction is committed: its caller must not be told it failed
            log.exception("after-commit callback %r failed", callback)


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` after `session`'s transaction commits (only sessions opened by `transaction`).

    Callbacks run in registration order, outside any transaction, once the session is closed. They must
    not raise: an exception is logged and the next callback still runs.
    """
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


def database_url(session: Session) -> str | None:
    """The URL the session's `transaction` was opened with, so follow-up work uses the same database."""
    return session.info.get(DATABASE_URL)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_ignoring_duplicates(connection: Any, table: Any, unique_columns: list[str]) -> Any:
    """INSERT that does nothing when a row with the same `unique_columns` exists (ON CONFLICT DO NOTHING):
    how a callback stored once by its identity stays once when the sender retries it concurrently."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table).on_conflict_do_nothing(index_elements=unique_columns)
