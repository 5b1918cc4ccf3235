"""The account ledger: balance, the running position the credit limit watches, manual charges, the limit.

Every movement is a :class:`LedgerEntry`: an invoice's charge when it is issued, payments in,
manual and usage charges, credits, and the reversal of a voided invoice. The balance is their
sum. Invoices follow their own pay-by dates (reminders, overdue notices, suspension of flagged
accounts); the credit limit watches the rest, the *position*: the balance with what is still
open on invoices left out. Money paid beyond the invoices is credit; usage and manual charges
eat into it. A charge is invoiced (its ledger entry becomes the invoice's charge), and still
counts against the credit limit until that invoice is paid: the position leaves out only the
other invoices.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, or_, select

from handlers.billing.common import CHARGE_ORIGINS, OPEN_STATUSES, lock_account, money, today
from handlers.errors import InvalidInput
from handlers.models import Account, Invoice, LedgerEntry, LedgerKind
from handlers.money import fmt

if TYPE_CHECKING:
    from handlers.services import Tx

CHARGE_SOURCES = ("manual", "plan")  # ledger charges that are spending, invoiced or not


def balance(tx: "Tx", account_id: int) -> int:
    """The ledger's sum: positive is in the client's favour, negative is owed."""
    return tx.session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
                             .where(LedgerEntry.account_id == account_id)) or 0


def open_due(tx: "Tx", account_id: int, *, charges: bool = True) -> int:
    """What is left to pay on the account's open invoices (``charges=False``: not counting invoiced charges)."""
    q = select(func.coalesce(func.sum(Invoice.total_minor - Invoice.paid_minor), 0)).where(
        Invoice.account_id == account_id, Invoice.status.in_(OPEN_STATUSES))
    if not charges:
        q = q.where(Invoice.origin.not_in(CHARGE_ORIGINS))
    return tx.session.scalar(q) or 0


def position(tx: "Tx", account_id: int) -> int:
    """The balance outside open invoices: credit when positive, charges and usage owed when negative.

    Invoiced charges stay in: a charge counts against the credit limit until it is paid.
    """
    return balance(tx, account_id) + open_due(tx, account_id, charges=False)


def unallocated(tx: "Tx", account_id: int) -> int:
    """Money paid and not yet used by any charge or invoice; negative when charges not yet invoiced exceed it."""
    return balance(tx, account_id) + open_due(tx, account_id)


def credit(tx: "Tx", account_id: int) -> int:
    """Money paid and not yet used by any charge or invoice: what credit applies to open invoices."""
    return max(0, unallocated(tx, account_id))


def daily_spending(tx: "Tx", account_id: int, at: dt.datetime | None = None) -> float:
    """Average charges per day (minor units) outside invoices over the configured past days."""
    at = at or tx.now
    days = tx.settings.credit_spending_days
    spent = tx.session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)).where(
        LedgerEntry.account_id == account_id, LedgerEntry.kind == LedgerKind.charge,
        or_(LedgerEntry.invoice_id.is_(None), LedgerEntry.source.in_(CHARGE_SOURCES)),
        LedgerEntry.at > at - dt.timedelta(days=days),
        LedgerEntry.at <= at)) or 0
    return max(0, -spent) / days


@dataclass(frozen=True)
class CreditState:
    """Where an account stands against its credit limit (``limit`` None: the account has none)."""

    position: int            # balance outside open invoices
    limit: int | None        # credit limit: may owe this much (negative: must keep this much)
    headroom: int | None     # what may still be spent before the limit is passed
    daily: float             # average daily spending
    days_left: float | None  # forecast days until the limit, None when nothing is being spent or no limit

    @property
    def reached(self) -> bool:
        """Past the limit. Exactly at it is within it, whatever the limit's sign: a limit of 100.00
        lets the client owe 100.00, a limit of -50.00 lets the client hold just 50.00."""
        return self.headroom is not None and self.headroom < 0


def credit_state(tx: "Tx", acc: Account, at: dt.datetime | None = None) -> CreditState:
    pos = position(tx, acc.id)
    if acc.credit_limit_minor is None:
        return CreditState(pos, None, None, 0.0, None)
    headroom = pos + acc.credit_limit_minor
    daily = daily_spending(tx, acc.id, at)
    days_left = None if daily <= 0 else max(0.0, headroom / daily)
    return CreditState(pos, acc.credit_limit_minor, headroom, daily, days_left)


def add_charge(tx: "Tx", account_id: int, amount_minor: int, text: str, *, source: str = "manual",
               ref: str | None = None) -> LedgerEntry:
    """A charge (money the client owes), invoiced at once: the entry is the invoice's charge, owed once."""
    from handlers.billing.invoices import PAY_WITHIN_DAYS, Line, issue

    acc = lock_account(tx, account_id)
    if amount_minor <= 0:
        raise InvalidInput("AMOUNT: a charge must be more than zero")
    if not text.strip():
        raise InvalidInput("TEXT: say what the charge is for")
    entry = LedgerEntry(account_id=acc.id, at=tx.now, kind=LedgerKind.charge, amount_minor=-amount_minor,
                        currency=acc.currency, text=text.strip(), source=source, ref=ref, actor=tx.actor)
    tx.session.add(entry)
    tx.session.flush()
    tx.audit("ledger.charge", subject=entry, account_id=acc.id, amount=money(amount_minor, acc.currency),
             text=entry.text)
    issue(tx, acc.id, [Line(entry.text, amount_minor)], today(tx) + dt.timedelta(days=PAY_WITHIN_DAYS),
          origin="charge", charges=[entry])
    return entry


def set_credit_limit(tx: "Tx", account_id: int, limit_minor: int | None) -> tuple[int | None, int | None]:
    """Set the limit (None: no limit); returns (previous, new). Raising it can lift a credit-limit suspension."""
    from handlers.billing.suspensions import lift_resolved

    acc = lock_account(tx, account_id)
    previous = acc.credit_limit_minor
    acc.credit_limit_minor = limit_minor
    tx.audit("account.credit_limit", subject=acc, account_id=acc.id,
             previous=None if previous is None else money(previous, acc.currency),
             limit=None if limit_minor is None else money(limit_minor, acc.currency))
    tx.session.flush()
    lift_resolved(tx, acc, why="credit limit raised")
    return previous, limit_minor


def limit_text(limit: int | None, currency: str) -> str:
    return "none" if limit is None else fmt(limit, currency)


def describe(state: CreditState, currency: str) -> str:
    """One line: position, limit, headroom and the forecast."""
    if state.limit is None or state.headroom is None:
        return f"position {fmt(state.position, currency)}, no credit limit"
    if state.headroom < 0:
        pace = f"the limit is passed by {fmt(-state.headroom, currency)}"
    elif state.days_left is None:
        pace = "no spending in the last days"
    else:
        pace = f"about {fmt(round(state.daily), currency)} a day, limit in {state.days_left:.1f} days"
    return (f"position {fmt(state.position, currency)}, limit {fmt(state.limit, currency)}, "
            f"headroom {fmt(state.headroom, currency)}; {pace}")
