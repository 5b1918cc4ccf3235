"""imap cursor

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 20:38:28.744232
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('imap_cursor',
    sa.Column('mailbox', sa.String(length=500), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('last_uid', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('mailbox', name=op.f('pk_imap_cursor'))
    )


def downgrade() -> None:
    op.drop_table('imap_cursor')
