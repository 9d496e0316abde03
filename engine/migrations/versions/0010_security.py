"""security

Identity and access: scoped, expiring, revocable API tokens; roles x data scopes; TOTP; the security log.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 19:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import engine.models


revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('expires_at', engine.models.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_used_at', engine.models.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_used_ip', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('revoked_at', engine.models.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('revoked_by', sa.String(length=64), nullable=True))
    # Tokens issued before scopes existed keep doing what they did: everything their user's roles allow.
    op.execute("UPDATE api_tokens SET scopes = '[\"*\"]'")
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.alter_column('scopes', existing_type=sa.JSON(), nullable=False)
    op.create_table('role_scopes',
    sa.Column('role_id', sa.String(length=32), nullable=False),
    sa.Column('process_key', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['role_id'], ['roles.id'], ),
    sa.PrimaryKeyConstraint('role_id', 'process_key')
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('department_id', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_instances_department_id', ['department_id'], unique=False)
    op.execute("UPDATE instances SET department_id = (SELECT users.department_id FROM users "
               "WHERE users.id = instances.starter_id)")
    op.create_table('security_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=48), nullable=False),
    sa.Column('at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=True),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('subject_type', sa.String(length=32), nullable=True),
    sa.Column('subject_id', sa.String(length=128), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_security_events_kind_at', 'security_events', ['kind', 'at'])
    op.create_index('ix_security_events_subject', 'security_events', ['subject_type', 'subject_id'])


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index('ix_instances_department_id')
        batch_op.drop_column('department_id')
    op.drop_table('role_scopes')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        for column in ('revoked_by', 'revoked_at', 'last_used_ip', 'last_used_at', 'expires_at', 'scopes'):
            batch_op.drop_column(column)
    op.drop_index('ix_security_events_subject', table_name='security_events')
    op.drop_index('ix_security_events_kind_at', table_name='security_events')
    op.drop_table('security_events')
