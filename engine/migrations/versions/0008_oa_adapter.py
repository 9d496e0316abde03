"""oa adapter

The OA adapter's tables: each instance's twin request, the calls made on it, the decisions taken in OA,
finflow user <-> OA user links and reconciliation runs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:59:41.394200

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import engine.models


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('oa_decisions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('dedupe_key', sa.String(length=128), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('oa_node', sa.String(length=64), nullable=False),
    sa.Column('oa_user', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('remark', sa.Text(), nullable=True),
    sa.Column('log_id', sa.String(length=64), nullable=True),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('instance_id', sa.String(length=36), nullable=True),
    sa.Column('task_id', sa.String(length=36), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('received_at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('applied_at', engine.models.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedupe_key')
    )
    with op.batch_alter_table('oa_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oa_decisions_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oa_decisions_request_id'), ['request_id'], unique=False)
        batch_op.create_index('ix_oa_decisions_status_received', ['status', 'received_at'], unique=False)

    op.create_table('oa_reconcile_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('fix', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('findings', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', engine.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('slot', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slot')
    )
    op.create_table('oa_requests',
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('workflow_id', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('creator', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('oa_node', sa.String(length=64), nullable=True),
    sa.Column('oa_node_name', sa.String(length=128), nullable=True),
    sa.Column('oa_state', sa.String(length=16), nullable=True),
    sa.Column('expected_node', sa.String(length=64), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('synced_at', engine.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('polled_at', engine.models.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('instance_id'),
    sa.UniqueConstraint('request_id')
    )
    with op.batch_alter_table('oa_requests', schema=None) as batch_op:
        batch_op.create_index('ix_oa_requests_state_polled', ['state', 'polled_at'], unique=False)

    op.create_table('oa_submissions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('outbox_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('task_id', sa.String(length=36), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('oa_node', sa.String(length=64), nullable=True),
    sa.Column('oa_user', sa.String(length=64), nullable=False),
    sa.Column('to_node', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('echoed', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', engine.models.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('outbox_id', 'kind')
    )
    with op.batch_alter_table('oa_submissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oa_submissions_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index('ix_oa_submissions_request', ['request_id'], unique=False)

    op.create_table('oa_user_links',
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('oa_user_id', sa.String(length=64), nullable=False),
    sa.Column('oa_login', sa.String(length=128), nullable=True),
    sa.Column('linked_at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id'),
    sa.UniqueConstraint('oa_user_id')
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('oa_user_links')
    with op.batch_alter_table('oa_submissions', schema=None) as batch_op:
        batch_op.drop_index('ix_oa_submissions_request')
        batch_op.drop_index(batch_op.f('ix_oa_submissions_instance_id'))

    op.drop_table('oa_submissions')
    with op.batch_alter_table('oa_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_oa_requests_state_polled')

    op.drop_table('oa_requests')
    op.drop_table('oa_reconcile_runs')
    with op.batch_alter_table('oa_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_oa_decisions_status_received')
        batch_op.drop_index(batch_op.f('ix_oa_decisions_request_id'))
        batch_op.drop_index(batch_op.f('ix_oa_decisions_instance_id'))

    op.drop_table('oa_decisions')
