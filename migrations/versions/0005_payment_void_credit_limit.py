"""Payments can be voided (who, when, why); an account's credit limit may be unset (no limit)

Accounts whose limit was the old default of 0.00 get no limit: nothing used to tell a limit
set to 0.00 from one never set, and the default suspended an account on its first charge.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 21:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


# The decimals each currency had before this revision (our own table then; Babel's CLDR data since).
_BEFORE = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}


def _refuse_changed_decimals() -> None:
    """Amounts are stored in minor units: a currency whose decimals changed would be read 100 times too
    large or too small. Refuse the upgrade (nothing changes) while such a currency is in use."""
    from babel.numbers import get_currency_precision

    from handlers.errors import Conflict

    used = op.get_bind().execute(sa.text("SELECT DISTINCT currency FROM account UNION "
                                         "SELECT DISTINCT currency FROM plan")).scalars()
    changed = sorted({c.upper() for c in used if c and get_currency_precision(c.upper()) != _BEFORE.get(c.upper(), 2)})
    if changed:
        raise Conflict(f"not upgrading: accounts or plans in {', '.join(changed)} hold amounts written with "
                       "different decimals than this version reads for that currency",
                       hint="convert those amounts first (see CHANGELOG.md), then run the upgrade again")


def upgrade() -> None:
    _refuse_changed_decimals()
    with op.batch_alter_table('payment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('voided_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('voided_by', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('void_reason', sa.Text(), nullable=True))
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.alter_column('credit_limit_minor', existing_type=sa.BigInteger(), nullable=True)
    op.execute("UPDATE account SET credit_limit_minor = NULL WHERE credit_limit_minor = 0")


def downgrade() -> None:
    op.execute("UPDATE account SET credit_limit_minor = 0 WHERE credit_limit_minor IS NULL")
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.alter_column('credit_limit_minor', existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table('payment', schema=None) as batch_op:
        batch_op.drop_column('void_reason')
        batch_op.drop_column('voided_by')
        batch_op.drop_column('voided_at')
