"""Database migrations (Alembic), run by `finflow init` and by the test suite."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from engine.config import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url or Settings.from_env().database_url)
    return config


def upgrade(url: str | None = None) -> None:
    command.upgrade(alembic_config(url), "head")
