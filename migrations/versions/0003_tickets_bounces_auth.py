"""Ticket statuses, automatic-answer counts, bounces linked to our mail, Authentication-Results,
the parsed sender and the account staff attach a held message to

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 22:05:09.777680
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('auto_answer',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('intent', sa.String(length=64), nullable=False),
    sa.Column('sent', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['ticket.id'], name=op.f('fk_auto_answer_ticket_id_ticket'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auto_answer'))
    )
    with op.batch_alter_table('auto_answer', schema=None) as batch_op:
        batch_op.create_index('ix_auto_answer_recipient_at', ['recipient', 'at'], unique=False)
        batch_op.create_index('ix_auto_answer_ticket_at', ['ticket_id', 'at'], unique=False)

    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('require_dmarc', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('inbound_mail', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sender', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('account_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_inbound_mail_account_id_account'), 'account', ['account_id'], ['id'], ondelete='SET NULL')
        batch_op.add_column(sa.Column('outbound_mail_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('auth_results', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_inbound_mail_outbound_mail_id_outbound_mail'), 'outbound_mail', ['outbound_mail_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.alter_column('require_dmarc', server_default=None)

    # "waiting" became "answered"; "customer_reply" and "on_hold" are new
    op.execute("UPDATE ticket SET status = 'answered' WHERE status = 'waiting'")



def downgrade() -> None:
    op.execute("UPDATE ticket SET status = 'waiting' WHERE status = 'answered'")
    op.execute("UPDATE ticket SET status = 'open' WHERE status IN ('customer_reply', 'on_hold')")
    with op.batch_alter_table('inbound_mail', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_inbound_mail_outbound_mail_id_outbound_mail'), type_='foreignkey')
        batch_op.drop_column('auth_results')
        batch_op.drop_column('outbound_mail_id')
        batch_op.drop_constraint(batch_op.f('fk_inbound_mail_account_id_account'), type_='foreignkey')
        batch_op.drop_column('account_id')
        batch_op.drop_column('sender')

    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_column('require_dmarc')

    with op.batch_alter_table('auto_answer', schema=None) as batch_op:
        batch_op.drop_index('ix_auto_answer_ticket_at')
        batch_op.drop_index('ix_auto_answer_recipient_at')

    op.drop_table('auto_answer')
