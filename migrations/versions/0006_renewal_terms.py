"""Renewal terms: one row per (service, expiry being renewed) holding the standing decision and its one
open invoice; decisions record the expiry they are about

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('renewal_term',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('expires_on', sa.Date(), nullable=False),
    sa.Column('decision_id', sa.Integer(), nullable=True),
    sa.Column('years', sa.Integer(), nullable=True),
    sa.Column('invoice_id', sa.Integer(), nullable=True),
    sa.Column('sales_told_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_by', sa.String(length=100), nullable=True),
    sa.Column('new_expires_on', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_renewal_term_account_id_account'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['decision_id'], ['renewal_decision.id'],
                            name=op.f('fk_renewal_term_decision_id_renewal_decision'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoice.id'], name=op.f('fk_renewal_term_invoice_id_invoice'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['service_id'], ['service.id'], name=op.f('fk_renewal_term_service_id_service'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_renewal_term')),
    sa.UniqueConstraint('service_id', 'expires_on', name=op.f('uq_renewal_term_service_id_expires_on'))
    )
    with op.batch_alter_table('renewal_term', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_renewal_term_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_renewal_term_invoice_id'), ['invoice_id'], unique=False)
    with op.batch_alter_table('renewal_decision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('for_expiry', sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('renewal_decision', schema=None) as batch_op:
        batch_op.drop_column('for_expiry')
    with op.batch_alter_table('renewal_term', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_renewal_term_invoice_id'))
        batch_op.drop_index(batch_op.f('ix_renewal_term_account_id'))
    op.drop_table('renewal_term')
