"""Indexes the billing sweeps' candidate queries use: a service's next due date, an open suspension's
removal moment, an account's credit limit

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 09:00:00.000000
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.create_index('ix_service_next_due_on', ['next_due_on'], unique=False)

    with op.batch_alter_table('suspension', schema=None) as batch_op:
        batch_op.create_index('ix_suspension_removal', ['lifted_at', 'remove_after'], unique=False)

    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_credit_limit_minor'), ['credit_limit_minor'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_account_credit_limit_minor'))

    with op.batch_alter_table('suspension', schema=None) as batch_op:
        batch_op.drop_index('ix_suspension_removal')

    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.drop_index('ix_service_next_due_on')
