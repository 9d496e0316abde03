"""The migrations that create the outbox, notifications, budget ledger, invoice claims, users and login
tables match their models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Numeric

from engine.db import Base
from engine.models import Money

TABLES = {"outbox", "notifications", "budgets", "budget_entries", "invoice_claims", "users", "login_attempts",
          "instances", "history_events", "history_archive", "audit_anchors"}


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


def _compare_type(context, inspected_column, metadata_column, inspected_type, metadata_type):
    """Default type comparison, except that a Money column is NUMERIC(18, 2) in the database on both
    engines (on SQLite it holds whole cents, which that affinity stores as exact integers)."""
    if isinstance(metadata_type, Money):
        return not (isinstance(inspected_type, Numeric) and (inspected_type.precision, inspected_type.scale) == (18, 2))
    return None


def test_migration_matches_the_models(schema):
    with schema.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": _compare_type})
        diffs = [d for d in compare_metadata(context, Base.metadata) if _table_of(d)]
    assert diffs == []
    assert set(Base.metadata.tables) >= TABLES
