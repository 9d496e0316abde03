"""statistics rollups

Per-version statistics read from rollups of the append-only history instead of aggregating every task
and history row of a version on each read (engine/services/rollups.py): per-node figures, a duration
histogram per node for the p90, flow counts, and the watermark row saying how far the history is folded.
The tables start empty: the statistics stay exact meanwhile (the unfolded history is read live), and the
sweep folds the history in (see engine.services.rollups.fold). Also an index on history_archive.id, as the
folds read archived history by id.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 10:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('statistics_watermark',
                    sa.Column('name', sa.String(length=32), nullable=False),
                    sa.Column('folded_to', sa.BigInteger(), nullable=False),
                    sa.Column('gaps', sa.JSON(), nullable=False),
                    sa.Column('epoch', sa.BigInteger(), nullable=False),
                    sa.Column('events', sa.BigInteger(), nullable=False),
                    sa.Column('folded_at', sa.DateTime(timezone=True), nullable=True),
                    sa.PrimaryKeyConstraint('name'))
    op.create_table('node_rollups',
                    sa.Column('version_id', sa.Integer(), nullable=False),
                    sa.Column('node_id', sa.String(length=128), nullable=False),
                    sa.Column('instances', sa.BigInteger(), nullable=False),
                    sa.Column('tokens', sa.BigInteger(), nullable=False),
                    sa.Column('decided', sa.BigInteger(), nullable=False),
                    sa.Column('rejected', sa.BigInteger(), nullable=False),
                    sa.Column('seconds', sa.Float(), nullable=False),
                    sa.ForeignKeyConstraint(['version_id'], ['process_versions.id']),
                    sa.PrimaryKeyConstraint('version_id', 'node_id'))
    op.create_table('node_duration_buckets',
                    sa.Column('version_id', sa.Integer(), nullable=False),
                    sa.Column('node_id', sa.String(length=128), nullable=False),
                    sa.Column('bucket', sa.Integer(), nullable=False),
                    sa.Column('tasks', sa.BigInteger(), nullable=False),
                    sa.ForeignKeyConstraint(['version_id'], ['process_versions.id']),
                    sa.PrimaryKeyConstraint('version_id', 'node_id', 'bucket'))
    op.create_table('flow_rollups',
                    sa.Column('version_id', sa.Integer(), nullable=False),
                    sa.Column('flow_id', sa.String(length=128), nullable=False),
                    sa.Column('taken', sa.BigInteger(), nullable=False),
                    sa.ForeignKeyConstraint(['version_id'], ['process_versions.id']),
                    sa.PrimaryKeyConstraint('version_id', 'flow_id'))
    with op.batch_alter_table('history_archive', schema=None) as batch_op:
        batch_op.create_index('ix_history_archive_id', ['id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('history_archive', schema=None) as batch_op:
        batch_op.drop_index('ix_history_archive_id')
    op.drop_table('flow_rollups')
    op.drop_table('node_duration_buckets')
    op.drop_table('node_rollups')
    op.drop_table('statistics_watermark')
