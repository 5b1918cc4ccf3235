"""Invoices: issue with a unique number, look up, void, and the reminder or overdue notice about one.

An invoice's charge goes on the ledger when it is issued; an invoice that bills charges already
on the ledger (a manual charge, a month's plan charges) takes those entries over instead, so the
amount is owed once. Issuing emails the "new invoice" mail (not for imported history). Voiding
keeps the number, the lines and the payments, and reverses the charge: what was already paid
becomes credit.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from handlers.billing import credit as credit_ops
from handlers.billing.common import claim_notice, invoice_context, lock_account, money, send, today, why_no_email
from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.money import fmt
from handlers.models import (Account, AppSetting, Invoice, InvoiceLine, InvoiceStatus, LedgerEntry, LedgerKind,
                             Payment, PaymentAllocation)

if TYPE_CHECKING:
    from handlers.services import Tx

NUMBER_PREFIX = "INV-"
NUMBER_START = 1000       # the first number issued is INV-1001
_SEQUENCE_KEY = "invoice_number"
PAY_WITHIN_DAYS = 14      # a charge's invoice (manual or month-end plan charges) is due this many days after issue
NEW_INVOICE = "invoice_new"


@dataclass(frozen=True)
class Line:
    text: str
    amount_minor: int
    tax_minor: int = 0
    service_id: int | None = None
    period_start: dt.date | None = None  # a recurring line: the due date of the period it bills


_COUNTER = "billing.invoice_counter"  # session.info: (the transaction, the locked counter row, numbers known taken)
_BLOCK = 100  # numbers above the counter checked for imports' numbers in one query


def next_number(tx: "Tx") -> str:
    """The next free invoice number, unique even when two processes issue at once.

    The counter is one row locked ``FOR UPDATE`` until the issuing transaction ends, so a second
    issuer waits and then sees the first one's number; numbers taken by imports are skipped. A
    transaction locks and reads the counter once: later numbers continue from the row it holds,
    and the numbers above it are checked against imports' numbers a block at a time, one query
    each (what a rolled-back savepoint took is read back from the row, as the rollback left it).
    """
    root = tx.session.get_transaction()
    held = tx.session.info.get(_COUNTER)
    if held is not None and held[0] is root and held[1] in tx.session:
        row, taken = held[1], held[2]
    else:
        row, taken = _lock_counter(tx), {}
        tx.session.info[_COUNTER] = (root, row, taken)
    n = int(row.value)
    while True:
        n += 1
        if n not in taken:
            block = [f"{NUMBER_PREFIX}{k}" for k in range(n, n + _BLOCK)]
            found = set(tx.session.scalars(select(Invoice.number).where(Invoice.number.in_(block))))
            taken.clear()
            taken.update({k: f"{NUMBER_PREFIX}{k}" in found for k in range(n, n + _BLOCK)})
        if not taken[n]:
            break
    row.value = str(n)  # written with the invoice that takes the number
    return f"{NUMBER_PREFIX}{n}"


def _lock_counter(tx: "Tx") -> AppSetting:
    for _ in range(5):
        row = tx.session.scalar(select(AppSetting).where(AppSetting.key == _SEQUENCE_KEY).with_for_update()
                                .execution_options(populate_existing=True))
        if row is not None:
            return row
        try:
            with tx.session.begin_nested():
                tx.session.add(AppSetting(key=_SEQUENCE_KEY, value=str(NUMBER_START)))
        except IntegrityError:
            pass  # another process created the counter: lock theirs on the next pass
    raise Conflict("could not take an invoice number; try again")


def issue(tx: "Tx", account_id: int, lines: Sequence[Line], due_on: dt.date, *,
          issued_on: dt.date | None = None, number: str | None = None, origin: str = "invoice",
          charges: Sequence[LedgerEntry] = (), notify: bool = True, use_credit: bool = True) -> Invoice:
    """Issue an invoice with its lines and tax, put its charge on the ledger, let credit pay it, and email it.

    ``charges``: ledger charges the invoice bills (they must add up to its total); they become the
    invoice's charge instead of a new one. ``notify=False`` sends no "new invoice" mail (history).
    Credit on the account pays it (and any older open invoice) at once unless ``use_credit`` is off.
    """
    acc = lock_account(tx, account_id)
    _check(tx, lines, due_on, issued_on := issued_on or today(tx), number)
    inv = Invoice(account_id=acc.id, number=number or next_number(tx), currency=acc.currency,
                  issued_on=issued_on, due_on=due_on, total_minor=sum(ln.amount_minor + ln.tax_minor for ln in lines),
                  paid_minor=0, status=InvoiceStatus.issued, origin=origin, created_at=tx.now)
    inv.lines = [InvoiceLine(position=i, text=ln.text, amount_minor=ln.amount_minor, tax_minor=ln.tax_minor,
                             service_id=ln.service_id, period_start=ln.period_start)
                 for i, ln in enumerate(lines, start=1)]
    tx.session.add(inv)
    tx.session.flush()
    if charges:
        if -sum(e.amount_minor for e in charges) != inv.total_minor:
            raise InvalidInput("lines: the invoice must add up to the charges it bills")
        for entry in charges:
            entry.invoice_id = inv.id
    else:
        tx.session.add(LedgerEntry(account_id=acc.id, at=tx.now, kind=LedgerKind.charge,
                                   amount_minor=-inv.total_minor, currency=acc.currency, text=f"Invoice {inv.number}",
                                   source="invoice", invoice_id=inv.id, actor=tx.actor))
    tx.audit("invoice.issue", subject=inv, account_id=acc.id, number=inv.number, origin=origin,
             total=money(inv.total_minor, inv.currency), due_on=due_on.isoformat())
    # an account known to have had no credit still has none (this invoice's own charge leaves none), unless
    # the invoice takes over charges already on the ledger
    if use_credit and (charges or acc.id not in credit_ops.known_none(tx)):
        credit_ops.apply_credit(tx, acc, why=f"invoice {inv.number} issued")
    if notify:
        announce(tx, acc, inv)
    return inv


def _check(tx: "Tx", lines: Sequence[Line], due_on: dt.date, issued_on: dt.date, number: str | None) -> None:
    if not lines:
        raise InvalidInput("lines: an invoice needs at least one line")
    for i, ln in enumerate(lines):
        if ln.amount_minor < 0 or ln.tax_minor < 0:
            raise InvalidInput("must not be negative", path=f"lines[{i}]")
    if due_on < issued_on:
        raise InvalidInput(f"the pay-by date {due_on} is before the issue date {issued_on}", path="due_on")
    if number is not None and tx.session.scalar(select(Invoice.id).where(Invoice.number == number)):
        raise Conflict(f"invoice {number} exists already")


def announce(tx: "Tx", acc: Account, inv: Invoice) -> str:
    """The "new invoice" mail to the billing recipients, once per invoice; the outcome word."""
    return send(tx, acc, NEW_INVOICE, {"invoice": invoice_context(inv, today(tx))}, f"invoice:{inv.id}:new")


def find(tx: "Tx", number: str) -> Invoice:
    """The invoice with this number (any case)."""
    inv = tx.session.scalar(select(Invoice).where(func.lower(Invoice.number) == number.strip().lower()))
    if inv is None:
        raise NotFound(f"no invoice {number}", hint="invoice list --all shows every invoice")
    return inv


def payments_of(tx: "Tx", inv: Invoice) -> list[tuple[Payment, int]]:
    """Each payment that went to this invoice, with the part it took, oldest first."""
    return list(tx.session.execute(select(Payment, PaymentAllocation.amount_minor).join(PaymentAllocation)
                                   .where(PaymentAllocation.invoice_id == inv.id)
                                   .order_by(Payment.received_at, Payment.id)).all())


def status_for(total: int, paid: int) -> InvoiceStatus:
    if paid >= total:
        return InvoiceStatus.paid
    return InvoiceStatus.partially_paid if paid else InvoiceStatus.issued


def void(tx: "Tx", number: str, reason: str = "") -> Invoice:
    """Void an invoice: it keeps its number and history; its charge is reversed on the ledger."""
    from handlers.billing.suspensions import lift_resolved

    inv = find(tx, number)
    acc = lock_account(tx, inv.account_id)
    tx.session.refresh(inv)
    if inv.status == InvoiceStatus.void:
        raise Conflict(f"invoice {inv.number} is void already" + (f" ({inv.void_reason})" if inv.void_reason else ""))
    previous = inv.status
    inv.status, inv.void_reason = InvoiceStatus.void, reason.strip() or None
    tx.session.add(LedgerEntry(account_id=acc.id, at=tx.now, kind=LedgerKind.adjustment, amount_minor=inv.total_minor,
                               currency=inv.currency, text=f"Invoice {inv.number} voided" +
                               (f": {reason.strip()}" if reason.strip() else ""), source="invoice",
                               invoice_id=inv.id, actor=tx.actor))
    tx.audit("invoice.void", subject=inv, account_id=acc.id, number=inv.number, reason=reason,
             previous_status=previous.value, paid=money(inv.paid_minor, inv.currency))
    tx.session.flush()
    lift_resolved(tx, acc, why=f"invoice {inv.number} voided")
    if inv.paid_minor:
        credit_ops.apply_credit(tx, acc, why=f"invoice {inv.number} voided")
    return inv


def notice_kind(inv: Invoice, day: dt.date) -> str:
    """A reminder before and on the pay-by date, an overdue notice after it."""
    return "invoice_reminder" if day <= inv.due_on else "invoice_overdue"


def send_notice(tx: "Tx", acc: Account, inv: Invoice, *, occasion: str, kind: str | None = None,
                manual: bool = False) -> tuple[bool, str]:
    """Claim the notice (invoice, occasion, pay-by date) and email it; (claimed, outcome).

    Paper invoicing, overdue notices turned off, or no billing contact: the notice is recorded
    with that outcome and no email, and the staff digest lists it.
    """
    day = today(tx)
    kind = kind or notice_kind(inv, day)
    occasion_date = day if manual else inv.due_on
    outcome = why_no_email(acc, dunning=not manual) or "sent"
    if manual and outcome == "notices_off":
        outcome = "sent"
    notice = claim_notice(tx, kind=kind, subject_type="invoice", subject_id=inv.id, occasion=occasion,
                          occasion_date=occasion_date, account_id=acc.id, outcome=outcome)
    if notice is None:
        return False, "already"
    if outcome == "sent":
        send(tx, acc, kind, notices_context(acc, [(inv, kind, occasion)], day), f"notice:{notice.id}",
             dunning=not manual)
    tx.audit(f"{kind}.{'sent' if outcome == 'sent' else 'recorded'}", subject=inv, account_id=acc.id,
             occasion=occasion, outcome=outcome)
    return True, outcome


def notices_context(acc: Account, claimed: Sequence[tuple[Invoice, str, str]], day: dt.date) -> dict[str, Any]:
    """What the reminder and overdue templates show: every invoice of one mail, overdue ones first."""
    invoices = [{**invoice_context(inv, day), "occasion": occasion, "overdue": kind == "invoice_overdue"}
                for inv, kind, occasion in claimed]
    invoices.sort(key=lambda i: (not i["overdue"], i["due_on"]))
    total = sum(inv.due_minor for inv, _, _ in claimed)
    return {"invoices": invoices, "invoice": invoices[0], "occasion": invoices[0]["occasion"],
            "overdue": [i for i in invoices if i["overdue"]], "upcoming": [i for i in invoices if not i["overdue"]],
            "total_due": fmt(total, acc.currency)}


def send_notices(tx: "Tx", acc: Account, items: Sequence[tuple[Any, ...]]) -> str | None:
    """Claim each invoice's notice (exactly once each) and send the account's billing contacts one email
    listing every invoice claimed; None when nothing was left to claim."""
    day, claimed, first = today(tx), [], None
    outcome = why_no_email(acc, dunning=True) or "sent"
    for kind, _, inv_id, occasion, _ in items:
        inv = tx.session.get(Invoice, inv_id)
        if inv.due_minor <= 0 or inv.status not in (InvoiceStatus.issued, InvoiceStatus.partially_paid):
            continue
        notice = claim_notice(tx, kind=kind, subject_type="invoice", subject_id=inv.id, occasion=occasion,
                              occasion_date=inv.due_on, account_id=acc.id, outcome=outcome)
        if notice is None:
            continue
        first = first or notice
        claimed.append((inv, kind, occasion))
        tx.audit(f"{kind}.{'sent' if outcome == 'sent' else 'recorded'}", subject=inv, account_id=acc.id,
                 occasion=occasion, outcome=outcome)
    if not claimed:
        return None
    if outcome == "sent":
        intent = "invoice_overdue" if any(k == "invoice_overdue" for _, k, _ in claimed) else "invoice_reminder"
        send(tx, acc, intent, notices_context(acc, claimed, day), f"notice:{first.id}", dunning=True)
    return ""


def remind(tx: "Tx", number: str) -> tuple[Invoice, str]:
    """Staff's `invoice remind N`: the reminder (or overdue notice) now, once per invoice and day."""
    from handlers.billing.credit import covered

    inv = find(tx, number)
    acc = lock_account(tx, inv.account_id)
    tx.session.refresh(inv)
    if inv.status not in (InvoiceStatus.issued, InvoiceStatus.partially_paid):
        raise Conflict(f"invoice {inv.number} is {inv.status.value}; there is nothing to remind of")
    if covered(tx, acc.id).get(inv.id, 0) >= inv.due_minor:  # never remind of what credit pays
        raise Conflict(f"the credit on {acc.name}'s account covers {inv.number}; there is nothing to remind of",
                       hint="the next sweep applies the credit to it")
    reason = why_no_email(acc, dunning=False)
    if reason == "paper_invoicing":
        raise Conflict(f"{acc.name} is on paper invoicing: send the reminder by post",
                       hint="the daily digest lists invoices that need a letter")
    if reason == "no_recipient":
        raise Conflict(f"{acc.name} has no contact with the billing permission who wants billing mail",
                       hint="account show lists its contacts")
    claimed, outcome = send_notice(tx, acc, inv, occasion="manual", manual=True)
    if not claimed:
        raise Conflict(f"a reminder for {inv.number} went out today already")
    return inv, notice_kind(inv, today(tx))
