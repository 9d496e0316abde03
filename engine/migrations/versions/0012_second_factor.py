"""second factor

TOTP second factor for sensitive actions: users' sealed TOTP seeds and the attempts made.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 19:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import engine.models


revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_secret', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('totp_confirmed_at', engine.models.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))
    op.create_table('second_factor_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_second_factor_attempts_user_at', 'second_factor_attempts', ['user_id', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_second_factor_attempts_user_at', table_name='second_factor_attempts')
    op.drop_table('second_factor_attempts')
    with op.batch_alter_table('users', schema=None) as batch_op:
        for column in ('totp_last_step', 'totp_confirmed_at', 'totp_secret'):
            batch_op.drop_column(column)
