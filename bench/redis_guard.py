"""The one rule every bench follows before emptying a Redis database: it must be the bench's own."""

from __future__ import annotations

import redis

BENCH_MARKER = "finflow:bench:own-database"  # written by a bench into a Redis database it may empty


def flush_own(connection: redis.Redis, redis_url: str) -> None:
    """Empty a Redis database for a bench run, but only one that is empty or that a bench marked as its
    own: a developer's or user's Redis may hold real data under the same number."""
    keys = connection.dbsize()
    if keys and not connection.exists(BENCH_MARKER):
        raise SystemExit(f"Redis {redis_url} holds {keys} key(s) no finflow bench wrote; refusing to flush it. "
                         "Point --redis-url (or FINFLOW_BENCH_REDIS_URL) at an empty database number, "
                         "e.g. redis://127.0.0.1:6379/13")
    connection.flushdb()
    connection.set(BENCH_MARKER, "1")
