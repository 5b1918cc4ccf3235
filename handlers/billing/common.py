"""What every billing operation shares: locking an account, its billing recipients, holds, notices, days."""
from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import make_transient_to_detached, selectinload

from handlers.clock import local_date
from handlers.db import insert_of
from handlers.errors import NotFound
from handlers.models import Account, Contact, Hold, Invoice, InvoiceStatus, Invoicing, Notice
from handlers.money import decimal_str, fmt
from handlers.outbox import Recipient, queue_soon

if TYPE_CHECKING:
    from handlers.services import Tx

SCHEDULER = "system:scheduler"
OPEN_STATUSES = (InvoiceStatus.issued, InvoiceStatus.partially_paid)
CHARGE_ORIGINS = ("charge", "plan")  # invoices of charges already on the ledger (they count against the limit)


def today(tx: "Tx") -> dt.date:
    return local_date(tx.now, tx.settings.tz)


def day_start(tx: "Tx", day: dt.date) -> dt.datetime:
    """Midnight at the start of ``day`` in the business's timezone, as UTC."""
    return dt.datetime.combine(day, dt.time(), tx.settings.tz).astimezone(dt.timezone.utc)


def transaction_set(tx: "Tx", key: str) -> set[int]:
    """A set of ids that lives as long as ``tx``'s outermost transaction (kept in ``session.info`` under
    ``key``, and started afresh when the session moves on to its next transaction)."""
    root = tx.session.get_transaction()
    mark = tx.session.info.get(key)
    if mark is None or mark[0] is not root:
        mark = tx.session.info[key] = (root, set())
    return mark[1]


def _locked(tx: "Tx") -> set[int]:
    """The accounts this transaction has locked (a lock taken in a savepoint is not counted: its rollback
    may release it)."""
    return transaction_set(tx, "billing.locked_accounts")


def lock_account(tx: "Tx", account_id: int) -> Account:
    """The account row, locked until the transaction ends: money operations on one account queue up.

    On PostgreSQL this is ``SELECT ... FOR UPDATE``; on SQLite every writer already holds the
    database's write lock (BEGIN IMMEDIATE). An account this transaction locked already is not
    read again: nobody else can have changed it since.
    """
    locked = _locked(tx)
    if account_id in locked:
        acc = tx.session.get(Account, account_id)
        if acc is not None:
            return acc
    acc = tx.session.scalar(select(Account).where(Account.id == account_id).with_for_update()
                            .execution_options(populate_existing=True))
    if acc is None:
        raise NotFound(f"no account #{account_id}")
    if not tx.session.in_nested_transaction():
        locked.add(account_id)
    return acc


def lock_accounts(tx: "Tx", account_ids: Sequence[int], *, lock: bool = True) -> list[Account]:
    """:func:`lock_account` for many accounts in one statement (ids ascending), their contacts loaded with
    them; ``lock=False`` only loads them (a dry run). Missing ones are left out."""
    q = select(Account).where(Account.id.in_(sorted(account_ids))).order_by(Account.id) \
        .options(selectinload(Account.contacts)).execution_options(populate_existing=True)
    accounts = list(tx.session.scalars(q.with_for_update(of=Account) if lock else q))
    if lock and not tx.session.in_nested_transaction():
        _locked(tx).update(a.id for a in accounts)
    return accounts


def money(minor: int, currency: str) -> dict[str, str]:
    """Exact JSON for an amount: ``{"amount": "12.50", "currency": "EUR"}``."""
    return {"amount": decimal_str(minor, currency), "currency": currency}


def open_invoices(tx: "Tx", account_id: int) -> list[Invoice]:
    """The account's invoices with something left to pay, oldest pay-by date first."""
    return list(tx.session.scalars(select(Invoice).where(
        Invoice.account_id == account_id, Invoice.status.in_(OPEN_STATUSES))
        .order_by(Invoice.due_on, Invoice.issued_on, Invoice.id)
        .execution_options(populate_existing=True)))  # fresh after the account lock, whatever was loaded before


def active_hold(tx: "Tx", account_id: int, at: dt.datetime | None = None) -> Hold | None:
    """The account's open hold at ``at`` (default now), if any."""
    at = at or tx.now
    return tx.session.scalars(select(Hold).where(
        Hold.account_id == account_id, Hold.lifted_at.is_(None), Hold.started_at <= at,
        or_(Hold.until.is_(None), Hold.until > at)).order_by(Hold.started_at)).first()


def billing_contacts(acc: Account) -> list[Contact]:
    """Contacts allowed to see billing who want billing mail (the owner has every permission)."""
    return [c for c in acc.contacts if c.may("billing") and c.wants("billing")]


def billing_recipients(acc: Account) -> list[Recipient]:
    """Who gets the account's billing mail; nobody on paper invoicing (staff write those letters)."""
    if acc.invoicing == Invoicing.paper:
        return []
    return [Recipient(c.email, c.name) for c in billing_contacts(acc)]


def why_no_email(acc: Account, *, dunning: bool) -> str | None:
    """Why an account gets no billing email, or None when it does.

    ``dunning`` marks reminders and overdue notices, which ``overdue_notices`` turns off.
    """
    if acc.invoicing == Invoicing.paper:
        return "paper_invoicing"
    if dunning and not acc.overdue_notices:
        return "notices_off"
    if not billing_contacts(acc):
        return "no_recipient"
    return None


def account_context(tx: "Tx", acc: Account) -> dict[str, Any]:
    return {"account": {"id": acc.id, "name": acc.name, "ref": acc.ref, "currency": acc.currency},
            "pay_to": f"billing@{tx.settings.mail_domain}"}


def claim_notice(tx: "Tx", *, kind: str, subject_type: str, subject_id: int, occasion: str,
                 occasion_date: dt.date, account_id: int, outcome: str = "sent",
                 detail: str | None = None) -> Notice | None:
    """Insert the notice row: the claim. None when it exists already (sent before, or by another worker).

    One ``INSERT ... ON CONFLICT DO NOTHING`` on the notices' unique key; the row returned is in the
    session as if loaded (a caller may still change it, e.g. its ``detail``).
    """
    values = {"kind": kind, "subject_type": subject_type, "subject_id": subject_id, "occasion": occasion,
              "occasion_date": occasion_date, "account_id": account_id, "created_at": tx.now, "outcome": outcome,
              "detail": detail}
    new_id = tx.session.execute(_claim_statement(tx.session.get_bind().dialect.name), values).scalar()
    if new_id is None:
        return None  # claimed before, or by a second scheduler meanwhile
    row = Notice(id=new_id, **values)
    make_transient_to_detached(row)
    tx.session.add(row)
    return row


@functools.lru_cache(maxsize=4)
def _claim_statement(dialect: str) -> Any:
    table = Notice.__table__
    return insert_of(dialect)(table).on_conflict_do_nothing(
        index_elements=["kind", "subject_type", "subject_id", "occasion", "occasion_date"]).returning(table.c.id)


def notified(tx: "Tx", kind: str, subject_type: str, subject_id: int) -> set[tuple[str, dt.date]]:
    """The (occasion, occasion_date) pairs already claimed for a subject."""
    return set(tx.session.execute(select(Notice.occasion, Notice.occasion_date).where(
        Notice.kind == kind, Notice.subject_type == subject_type, Notice.subject_id == subject_id)).all())


def send(tx: "Tx", acc: Account, intent: str, context: dict[str, Any], dedupe_key: str, *,
         dunning: bool = False) -> str:
    """Email the account's billing recipients (exactly once by ``dedupe_key``); the outcome word."""
    reason = why_no_email(acc, dunning=dunning)
    if reason is not None:
        return reason
    queue_soon(tx, intent, {**account_context(tx, acc), **context}, to=billing_recipients(acc),
               dedupe_key=dedupe_key, account_id=acc.id, from_local="billing")
    return "sent"


def invoice_context(inv: Invoice, day: dt.date) -> dict[str, Any]:
    """What templates show of an invoice."""
    return {"number": inv.number, "issued_on": inv.issued_on.isoformat(), "due_on": inv.due_on.isoformat(),
            "total": fmt(inv.total_minor, inv.currency), "paid": fmt(inv.paid_minor, inv.currency),
            "due": fmt(inv.due_minor, inv.currency), "days": (inv.due_on - day).days,
            "partly_paid": inv.paid_minor > 0, "due_minor": inv.due_minor,
            "lines": [{"text": ln.text, "amount": fmt(ln.amount_minor, inv.currency),
                       "tax": fmt(ln.tax_minor, inv.currency)} for ln in inv.lines]}


def names(items: Iterable[Any]) -> str:
    return ", ".join(str(i) for i in items)
