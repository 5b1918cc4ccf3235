"""Recurring invoicing: a service's billing period and next due date, its product and server; where an
invoice came from; the recurring period an invoice line bills, unique per service

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.add_column(sa.Column('billing_period', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('next_due_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('due_day', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('product', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('server', sa.String(length=200), nullable=True))

    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.String(length=16), server_default='invoice', nullable=False))

    with op.batch_alter_table('invoice_line', schema=None) as batch_op:
        batch_op.add_column(sa.Column('period_start', sa.Date(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_invoice_line_service_id_period_start'),
                                          ['service_id', 'period_start'])


def downgrade() -> None:
    with op.batch_alter_table('invoice_line', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_invoice_line_service_id_period_start'), type_='unique')
        batch_op.drop_column('period_start')

    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.drop_column('origin')

    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.drop_column('server')
        batch_op.drop_column('product')
        batch_op.drop_column('due_day')
        batch_op.drop_column('next_due_on')
        batch_op.drop_column('billing_period')
