"""sealed secrets

Secrets at rest sealed with FINFLOW_SECRET_KEY (webhook HMAC keys): the column is widened (a sealed value
is ~150 characters) and the plain rows written before this revision are sealed in place; the downgrade
opens them again. The helpers take a connection so a test can run them on rows it inserted.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 19:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.engine import Connection

import engine.models  # noqa: F401  (what every revision imports)
from engine import crypto


revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

PURPOSE = "webhook"  # adapters.events.models.SECRET_PURPOSE, fixed here as this revision wrote it
_subscriptions = sa.table("event_subscriptions", sa.column("id", sa.String), sa.column("secret", sa.Text))


def upgrade() -> None:
    with op.batch_alter_table('event_subscriptions') as batch_op:
        batch_op.alter_column('secret', existing_type=sa.String(length=128), type_=sa.Text(), existing_nullable=True)
    seal_plain_rows(op.get_bind())


def downgrade() -> None:
    unseal_rows(op.get_bind())
    with op.batch_alter_table('event_subscriptions') as batch_op:
        batch_op.alter_column('secret', existing_type=sa.Text(), type_=sa.String(length=128), existing_nullable=True)


def seal_plain_rows(connection: Connection) -> int:
    """Seal every webhook secret still stored plain; returns how many. Run again, it changes nothing."""
    return _rewrite(connection, lambda s: None if crypto.is_sealed(s) else crypto.seal(s, PURPOSE))


def unseal_rows(connection: Connection) -> int:
    """Open every sealed webhook secret (the keys that sealed them must be configured); returns how many."""
    return _rewrite(connection, lambda s: crypto.unseal(s, PURPOSE) if crypto.is_sealed(s) else None)


def _rewrite(connection: Connection, change) -> int:
    t = _subscriptions
    rows = connection.execute(sa.select(t.c.id, t.c.secret).where(t.c.secret.is_not(None))).all()
    changed = [(row.id, change(row.secret)) for row in rows]
    for subscription_id, value in changed:
        if value is not None:
            connection.execute(sa.update(t).where(t.c.id == subscription_id).values(secret=value))
    return sum(value is not None for _, value in changed)
