"""audit chain

The tamper-evident audit trail: hash-chained history, daily anchors, the archive.

Existing history is chained here, instance by instance in seq order (engine.audit.chain), before the
column becomes NOT NULL: what was in the table before this migration is taken as it stands.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 19:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import engine.models


revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BATCH = 500  # instances chained per round trip during the backfill

HISTORY_COLUMNS = (
    ('id', sa.Integer), ('instance_id', sa.String), ('seq', sa.Integer), ('type', sa.String),
    ('at', engine.models.UtcDateTime), ('actor_id', sa.String), ('channel', sa.String), ('client_ip', sa.String),
    ('user_agent', sa.String), ('task_id', sa.String), ('node_id', sa.String), ('payload', sa.JSON),
    ('hash', sa.String),
)


def upgrade() -> None:
    op.add_column('instances', sa.Column('chain_head', sa.String(length=64), nullable=True))
    op.add_column('instances', sa.Column('archived_at', engine.models.UtcDateTime(timezone=True), nullable=True))
    op.add_column('history_events', sa.Column('hash', sa.String(length=64), nullable=True))
    _backfill_chains(op.get_bind())
    with op.batch_alter_table('history_events', schema=None) as batch_op:
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index('ix_history_events_at', ['at'], unique=False)

    op.create_table('history_archive',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=48), nullable=False),
    sa.Column('at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=True),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('task_id', sa.String(length=36), nullable=True),
    sa.Column('node_id', sa.String(length=128), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ),
    sa.PrimaryKeyConstraint('instance_id', 'seq')
    )
    op.create_index('ix_history_archive_at', 'history_archive', ['at'], unique=False)
    op.create_table('audit_anchors',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('events', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('previous', sa.String(length=64), nullable=False),
    sa.Column('computed_at', engine.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('day')
    )


def downgrade() -> None:
    """Archived history goes back to history_events first (the archived instances' workflow state is gone
    for good), then the chain columns and tables are dropped."""
    history = _history_table('history_events')
    archive = _history_table('history_archive')
    names = [c.name for c in archive.c if c.name != 'id']  # new ids: an archived id may be in use again
    op.get_bind().execute(sa.insert(history).from_select(names, sa.select(*(archive.c[n] for n in names))))
    op.drop_table('audit_anchors')
    op.drop_index('ix_history_archive_at', table_name='history_archive')
    op.drop_table('history_archive')
    with op.batch_alter_table('history_events', schema=None) as batch_op:
        batch_op.drop_index('ix_history_events_at')
        batch_op.drop_column('hash')
    # Plain ALTER TABLE DROP COLUMN (SQLite >= 3.35): rebuilding `instances` would trip the foreign keys
    # that point at it.
    op.drop_column('instances', 'archived_at')
    op.drop_column('instances', 'chain_head')


def _history_table(name: str) -> sa.TableClause:
    return sa.table(name, *(sa.column(column, type_) for column, type_ in HISTORY_COLUMNS))


def _backfill_chains(connection) -> None:
    """Chain every instance's existing events in seq order and store each instance's head."""
    from engine.audit.chain import GENESIS, event_hash

    events = _history_table('history_events')
    instances = sa.table('instances', sa.column('id', sa.String), sa.column('chain_head', sa.String))
    set_hash = (sa.update(events).where(events.c.id == sa.bindparam('event_id'))
                .values(hash=sa.bindparam('event_hash')))
    set_head = (sa.update(instances).where(instances.c.id == sa.bindparam('instance'))
                .values(chain_head=sa.bindparam('head')))
    after = None
    while True:
        query = sa.select(instances.c.id).order_by(instances.c.id).limit(BATCH)
        ids = list(connection.scalars(query if after is None else query.where(instances.c.id > after)))
        if not ids:
            return
        after = ids[-1]
        rows = connection.execute(sa.select(*events.c).where(events.c.instance_id.in_(ids))
                                  .order_by(events.c.instance_id, events.c.seq)).mappings().all()
        hashes, heads = [], {}
        for row in rows:
            digest = event_hash(heads.get(row['instance_id'], GENESIS), row)
            heads[row['instance_id']] = digest
            hashes.append({'event_id': row['id'], 'event_hash': digest})
        if hashes:
            connection.execute(set_hash, hashes)
            connection.execute(set_head, [{'instance': i, 'head': h} for i, h in heads.items()])
