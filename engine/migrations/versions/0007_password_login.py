"""password login, statistics index

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 13:00:00

The local password login of the web pages (for the demo and companies without WeCom): a password hash
on users, and every attempt recorded (failed logins are audited and rate-limited from it); an index for the
auditor's per-version statistics.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import engine.models


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('users', sa.Column('password_hash', sa.String(length=255), nullable=True))
    op.create_table('login_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('login', sa.String(length=64), nullable=False),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_login_attempts_login_at', 'login_attempts', ['login', 'at'], unique=False)
    op.create_index('ix_login_attempts_client_ip_at', 'login_attempts', ['client_ip', 'at'], unique=False)
    op.create_index('ix_instances_version_status', 'instances', ['version_id', 'status'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_instances_version_status', table_name='instances')
    op.drop_index('ix_login_attempts_client_ip_at', table_name='login_attempts')
    op.drop_index('ix_login_attempts_login_at', table_name='login_attempts')
    op.drop_table('login_attempts')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('password_hash')
