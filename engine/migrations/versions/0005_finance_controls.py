"""finance controls

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:00:00

Budget encumbrance (reserved totals and the budget ledger), invoices claimed once (a row per invoice,
keyed by the invoice), a budget line's optional cost centre. On SQLite, money columns now hold whole
cents as integers (SQLite has no exact decimal type): existing amounts are converted.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import engine.models

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

MONEY_COLUMNS = {'budgets': ('amount', 'used'), 'instances': ('amount',), 'vouchers': ('total',)}
MONEY = sa.Numeric(18, 2)


def upgrade() -> None:
    with op.batch_alter_table('budgets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reserved', MONEY, nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('cost_center', sa.String(length=64), nullable=True))
    op.create_table('budget_entries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('line', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=True),
    sa.Column('amount_delta', MONEY, nullable=False),
    sa.Column('used_delta', MONEY, nullable=False),
    sa.Column('reserved_delta', MONEY, nullable=False),
    sa.Column('available_after', MONEY, nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('created_at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['line'], ['budgets.line'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_budget_entries_line_id', 'budget_entries', ['line', 'id'], unique=False)
    op.create_index(op.f('ix_budget_entries_instance_id'), 'budget_entries', ['instance_id'], unique=False)
    op.create_table('invoice_claims',
    sa.Column('invoice_key', sa.String(length=64), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('amount', MONEY, nullable=False),
    sa.Column('invoice_date', sa.Date(), nullable=False),
    sa.Column('created_at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ),
    sa.PrimaryKeyConstraint('invoice_key')
    )
    op.create_index(op.f('ix_invoice_claims_instance_id'), 'invoice_claims', ['instance_id'], unique=False)
    _scale_sqlite_money("CAST(ROUND({col} * 100) AS INTEGER)")


def downgrade() -> None:
    _scale_sqlite_money("{col} / 100.0")
    op.drop_index(op.f('ix_invoice_claims_instance_id'), table_name='invoice_claims')
    op.drop_table('invoice_claims')
    op.drop_index(op.f('ix_budget_entries_instance_id'), table_name='budget_entries')
    op.drop_index('ix_budget_entries_line_id', table_name='budget_entries')
    op.drop_table('budget_entries')
    with op.batch_alter_table('budgets', schema=None) as batch_op:
        batch_op.drop_column('cost_center')
        batch_op.drop_column('reserved')


def _scale_sqlite_money(expression: str) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    for table, columns in MONEY_COLUMNS.items():
        assignments = ", ".join(f"{col} = {expression.format(col=col)}" for col in columns)
        op.execute(f"UPDATE {table} SET {assignments}")
