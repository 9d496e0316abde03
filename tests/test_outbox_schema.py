"""The migration that creates the outbox and notifications tables matches their models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from engine.db import Base

TABLES = {"outbox", "notifications"}


def _table_of(diff) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:]:
        table = getattr(part, "table", None)
        name = getattr(table, "name", None) or getattr(part, "name", None)
        if isinstance(part, str):
            name = part if part in TABLES else None
        if name in TABLES:
            return name
    return None


def test_migration_matches_the_models(schema):
    with schema.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(context, Base.metadata) if _table_of(d)]
    assert diffs == []
    assert set(Base.metadata.tables) >= TABLES
