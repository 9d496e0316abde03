"""Settings read from the environment, with embedded defaults so a bare laptop runs the demo."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("FINFLOW_DATA_DIR", Path.cwd() / "var"))


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None

    @classmethod
    def from_env(cls) -> Settings:
        url = os.environ.get("DATABASE_URL") or f"sqlite:///{DEFAULT_DATA_DIR / 'finflow.db'}"
        return cls(database_url=normalize_database_url(url), redis_url=os.environ.get("REDIS_URL") or None)


def normalize_database_url(url: str) -> str:
    """Accept the usual `postgres://` / `postgresql://` spellings and use psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
