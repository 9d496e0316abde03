"""Migration 0005 on a database that has data: amounts survive the move to exact storage and back."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from engine.migrate import alembic_config
from tests.conftest import _TMP, DATABASE_URL

AMOUNTS = ["0.01", "82000.00", "123456789012.34"]


@pytest.fixture
def scratch_url():
    """A database of its own (the suite's is in use): a SQLite file, or a new PostgreSQL database."""
    if DATABASE_URL.startswith("sqlite"):
        yield f"sqlite:///{_TMP / f'migration-{uuid.uuid4().hex}.db'}"
        return
    name = f"finflow_migration_{uuid.uuid4().hex[:8]}"
    admin = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


def test_amounts_survive_upgrade_and_downgrade(scratch_url):
    config = alembic_config(scratch_url)
    command.upgrade(config, "0004")
    engine = create_engine(scratch_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO departments (id, name) VALUES ('d', 'D')"))
        for i, amount in enumerate(AMOUNTS):
            conn.execute(text("INSERT INTO budgets (line, name, department_id, year, amount, used, expense_account, "
                              "expense_account_name) VALUES (:l, 'n', 'd', 2026, :a, :a, '6602', 'x')"),
                         {"l": f"L{i}", "a": amount})
    command.upgrade(config, "head")
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT amount, reserved FROM budgets ORDER BY line")).all()
    if scratch_url.startswith("sqlite"):  # whole cents, exactly
        assert [r.amount for r in raw] == [int(Decimal(a) * 100) for a in AMOUNTS] and {r.reserved for r in raw} == {0}
    else:
        assert [r.amount for r in raw] == [Decimal(a) for a in AMOUNTS]
    command.downgrade(config, "0004")
    with engine.connect() as conn:
        back = [Decimal(str(v)).quantize(Decimal("0.01")) for (v,) in conn.execute(
            text("SELECT amount FROM budgets ORDER BY line"))]
    assert back == [Decimal(a) for a in AMOUNTS]
    engine.dispose()
