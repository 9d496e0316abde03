"""list indexes

Indexes the scoped lists and searches need so they do not grow with the tables (issue 19): an
applicant's, a department's and one status's instances newest first, a user's candidate tasks as an
index-only scan, the tasks a user decided (已办). Each replaces the single-column index it extends.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 17:40:00

"""
from typing import Sequence, Union

from alembic import op


revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index('ix_instances_starter_started', ['starter_id', 'started_at'], unique=False)
        batch_op.create_index('ix_instances_department_started', ['department_id', 'started_at'], unique=False)
        batch_op.create_index('ix_instances_status_started', ['status', 'started_at'], unique=False)
        batch_op.drop_index('ix_instances_starter_id')
        batch_op.drop_index('ix_instances_department_id')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_assignee_completed', ['assignee_id', 'completed_at'], unique=False)
    with op.batch_alter_table('task_candidates', schema=None) as batch_op:
        batch_op.create_index('ix_task_candidates_user_task', ['user_id', 'task_id'], unique=False)
        batch_op.drop_index('ix_task_candidates_user_id')


def downgrade() -> None:
    with op.batch_alter_table('task_candidates', schema=None) as batch_op:
        batch_op.create_index('ix_task_candidates_user_id', ['user_id'], unique=False)
        batch_op.drop_index('ix_task_candidates_user_task')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_assignee_completed')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index('ix_instances_department_id', ['department_id'], unique=False)
        batch_op.create_index('ix_instances_starter_id', ['starter_id'], unique=False)
        batch_op.drop_index('ix_instances_status_started')
        batch_op.drop_index('ix_instances_department_started')
        batch_op.drop_index('ix_instances_starter_started')
