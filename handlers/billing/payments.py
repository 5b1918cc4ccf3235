"""One payment spread over several invoices, with the summary the client and staff see.

Allocation is exact to the minor unit and all-or-nothing (one transaction, the account row
locked so two payments for one account queue). Credit already on the account is applied
first; the payment pays the invoices in order (listed, else oldest pay-by date first); what
is left over stays on the account as credit. A payment's ``ref`` is unique: recording the same
ref again answers with the first recording's summary and changes nothing.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from handlers.billing import recurring
from handlers.billing.common import OPEN_STATUSES, lock_account, money, open_invoices, send
from handlers.billing import credit as credit_ops
from handlers.billing.credit import CREDIT
from handlers.billing.invoices import status_for
from handlers.billing.ledger import balance, credit, unallocated
from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.models import (Account, AuditEvent, Invoice, InvoiceStatus, LedgerEntry, LedgerKind, Payment,
                             PaymentAllocation)
from handlers.money import exponent, fmt

if TYPE_CHECKING:
    from handlers.services import Tx


def _targets(tx: "Tx", account_id: int, numbers: Sequence[str] | None) -> list[Invoice]:
    if not numbers:
        return open_invoices(tx, account_id)
    chosen: list[Invoice] = []
    for number in numbers:
        inv = tx.session.scalar(select(Invoice).where(func.lower(Invoice.number) == number.strip().lower())
                                .execution_options(populate_existing=True))
        if inv is None or inv.account_id != account_id:
            raise InvalidInput(f"no invoice {number} on this account", path="--invoices")
        if inv.status not in OPEN_STATUSES:
            raise Conflict(f"invoice {inv.number} is {inv.status.value}; leave it out of --invoices")
        if inv not in chosen:
            chosen.append(inv)
    return chosen


def _replay(tx: "Tx", payment: Payment, account_id: int, amount_minor: int) -> dict[str, Any]:
    """The summary recorded with an earlier payment of the same ref, or a conflict if it differs."""
    if payment.account_id != account_id or payment.amount_minor != amount_minor:
        raise Conflict(f"payment ref {payment.ref} is already recorded for another account or amount "
                       f"({fmt(payment.amount_minor, payment.currency)})", hint="use a different --ref")
    event = tx.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "payment.record", AuditEvent.subject_type == "payment",
        AuditEvent.subject_id == str(payment.id)))
    summary = dict(event.detail["summary"]) if event else {"payment": {"id": payment.id, "ref": payment.ref}}
    return {**summary, "replayed": True}


METHODS = ("bank", "card", "cash", "cheque", "manual", "other")


def after_paid(tx: "Tx", acc: Account, invoices: Sequence[Invoice], *, why: str) -> list[Any]:
    """What follows money reaching invoices: paid renewal invoices complete their renewals, suspensions they
    resolve are lifted; the suspensions lifted."""
    from handlers.billing.suspensions import lift_resolved
    for inv in invoices:
        recurring.paid(tx, inv)  # a paid recurring period moves its service's next due date on
    _completed(tx, invoices)
    return lift_resolved(tx, acc, why=why)


def record(tx: "Tx", account_id: int, amount_minor: int, *, invoices: Sequence[str] | None = None,
           ref: str | None = None, method: str = "manual", apply_credit: bool = True,
           received_at: dt.datetime | None = None) -> dict[str, Any]:
    """Record a payment and allocate it; returns the summary (also emailed to billing contacts).

    ``method`` says how the money came (bank, card, cash, cheque...), ``received_at`` when it
    reached the business (default: now).
    """
    if method not in METHODS:
        raise InvalidInput(f"--method: one of {', '.join(METHODS)}")
    received_at = received_at or tx.now
    if received_at > tx.now:
        raise InvalidInput(f"--received: {received_at.date()} is in the future")
    if amount_minor <= 0:
        raise InvalidInput("AMOUNT: a payment must be more than zero")
    ref = ref.strip() if ref else None
    acc = lock_account(tx, account_id)
    if ref:
        earlier = tx.session.scalar(select(Payment).where(Payment.ref == ref))
        if earlier is not None:
            return _replay(tx, earlier, acc.id, amount_minor)
    targets = _targets(tx, acc.id, invoices)
    credit_left = credit(tx, acc.id) if apply_credit else 0
    credit_before, pay_left = credit_left, amount_minor
    rows: list[dict[str, Any]] = []
    reached: list[Invoice] = []
    from_payment: list[tuple[Invoice, int]] = []
    from_credit: list[tuple[Invoice, int]] = []
    for inv in targets:
        due = inv.due_minor
        by_credit = min(credit_left, due)
        by_payment = min(pay_left, due - by_credit)
        credit_left -= by_credit
        pay_left -= by_payment
        cur = inv.currency
        if not (by_credit or by_payment or invoices):
            continue  # an open invoice this payment did not reach is not part of its summary
        reached.append(inv)
        rows.append({
            "number": inv.number, "issued_on": inv.issued_on.isoformat(), "due_on": inv.due_on.isoformat(),
            "lines": [{"text": ln.text, "amount": money(ln.amount_minor, cur), "tax": money(ln.tax_minor, cur)}
                      for ln in inv.lines],
            "net": money(sum(ln.amount_minor for ln in inv.lines), cur),
            "tax": money(sum(ln.tax_minor for ln in inv.lines), cur),
            "total": money(inv.total_minor, cur), "paid_before": money(inv.paid_minor, cur),
            "credit_applied": money(by_credit, cur), "paid_now": money(by_payment, cur),
            "left": money(due - by_credit - by_payment, cur)})
        if by_credit:
            from_credit.append((inv, by_credit))
        if by_payment:
            from_payment.append((inv, by_payment))
        inv.paid_minor += by_credit + by_payment
        inv.status = status_for(inv.total_minor, inv.paid_minor)

    payment = Payment(account_id=acc.id, amount_minor=amount_minor, currency=acc.currency, received_at=received_at,
                      method=method, ref=ref, actor=tx.actor)
    payment.allocations = [PaymentAllocation(invoice_id=inv.id, amount_minor=part) for inv, part in from_payment]
    try:
        with tx.session.begin_nested():
            tx.session.add(payment)
    except IntegrityError:
        raise Conflict(f"payment ref {ref} was recorded by someone else just now", hint="run it again") from None
    if from_credit:
        # credit already on the ledger: its use is an allocation without new money (no ledger entry)
        used = sum(part for _, part in from_credit)
        tx.session.add(Payment(account_id=acc.id, amount_minor=used, currency=acc.currency, received_at=tx.now,
                               method=CREDIT, ref=None, actor=tx.actor,
                               allocations=[PaymentAllocation(invoice_id=inv.id, amount_minor=part)
                                            for inv, part in from_credit]))
    tx.session.add(LedgerEntry(account_id=acc.id, at=tx.now, kind=LedgerKind.payment, amount_minor=amount_minor,
                               currency=acc.currency, text="Payment" + (f" {ref}" if ref else ""), source="manual",
                               payment_id=payment.id, actor=tx.actor,
                               invoice_id=targets[0].id if len(targets) == 1 and not pay_left else None))
    tx.session.flush()
    then = credit_ops.apply_credit(tx, acc, why="payment received" + (f" ({ref})" if ref else "")) if pay_left else []

    cur = acc.currency
    summary = {
        "payment": {"id": payment.id, "ref": ref, "amount": money(amount_minor, cur),
                    "amount_text": fmt(amount_minor, cur), "method": method,
                    "received_at": received_at.isoformat()},
        "account": {"id": acc.id, "ref": acc.ref, "name": acc.name},
        "invoices": rows,
        "credit_before": money(credit_before, cur),
        "credit_applied": money(credit_before - credit_left, cur),
        "allocated": money(amount_minor - pay_left, cur),
        "to_credit": money(pay_left, cur),
        "credit_then_paid": [{"number": inv.number, "amount": money(part, cur)} for inv, part in then],
        "credit_after": money(credit(tx, acc.id), cur),
        "still_due": money(sum(inv.due_minor for inv in reached), cur),
        "balance_after": money(balance(tx, acc.id), cur),
        "replayed": False,
    }
    lifted = after_paid(tx, acc, targets, why="payment received" + (f" ({ref})" if ref else ""))
    summary["lifted"] = [{"id": s.id, "reason": s.reason.value} for s in lifted]
    tx.audit("payment.record", subject=payment, account_id=acc.id, summary=summary)
    send(tx, acc, "payment_summary", {"summary": summary, "text": summary_text(summary)},
         f"payment:{payment.id}:summary")
    return summary


def _completed(tx: "Tx", invoices: Sequence[Invoice]) -> None:
    """Tell the renewals an invoice is paid: a renewal invoice completes its renewals (idempotent)."""
    from handlers.renewals.completion import invoice_paid

    for inv in invoices:
        if inv.status == InvoiceStatus.paid:
            invoice_paid(tx, inv)


def summary_text(summary: dict[str, Any]) -> str:
    """The summary as plain text: each invoice's lines, tax, credit, earlier payments, what is left."""
    m = formatted

    pay = summary["payment"]
    out = [f"Payment {m(pay['amount'])}" + (f" (ref {pay['ref']})" if pay["ref"] else "")
           + f" for {summary['account']['name']}"]
    for row in summary["invoices"]:
        out.append(f"Invoice {row['number']} (issued {row['issued_on']}, pay by {row['due_on']})")
        out += [f"  {ln['text']}: {m(ln['amount'])} + tax {m(ln['tax'])}" for ln in row["lines"]]
        out.append(f"  net {m(row['net'])}, tax {m(row['tax'])}, total {m(row['total'])}")
        if Decimal(row["paid_before"]["amount"]):
            out.append(f"  paid earlier: {m(row['paid_before'])}")
        if Decimal(row["credit_applied"]["amount"]):
            out.append(f"  credit applied: {m(row['credit_applied'])}")
        out.append(f"  paid now: {m(row['paid_now'])}; left to pay: {m(row['left'])}")
    if not summary["invoices"]:
        out.append("No open invoice: the whole payment is credit on the account.")
    out += [f"Credit then paid {m(row['amount'])} of invoice {row['number']}"
            for row in summary.get("credit_then_paid", [])]
    out.append(f"Credit applied: {m(summary['credit_applied'])} · paid to invoices: {m(summary['allocated'])} · "
               f"to account credit: {m(summary['to_credit'])}")
    out.append(f"Still due on these invoices: {m(summary['still_due'])} · credit on the account: "
               f"{m(summary['credit_after'])}")
    return "\n".join(out)


# -- reversing a payment ----------------------------------------------------------------------

def _reverse_allocations(tx: "Tx", row: Payment) -> list[tuple[Invoice, int]]:
    """Take a payment row's allocations off its invoices (they reopen); the invoices and parts."""
    out = []
    for alloc in row.allocations:
        inv = tx.session.scalars(select(Invoice).where(Invoice.id == alloc.invoice_id)
                                 .execution_options(populate_existing=True)).one()
        inv.paid_minor -= alloc.amount_minor
        if inv.status != InvoiceStatus.void:
            inv.status = status_for(inv.total_minor, inv.paid_minor)
        out.append((inv, alloc.amount_minor))
    return out


def _unwind_credit(tx: "Tx", acc: Account, shortfall: int) -> list[tuple[Invoice, int]]:
    """Reverse the newest credit applications until ``shortfall`` of credit that no longer exists is
    given back; the credit still there is applied again afterwards."""
    unwound: list[tuple[Invoice, int]] = []
    rows = tx.session.scalars(select(Payment).where(
        Payment.account_id == acc.id, Payment.method == CREDIT, Payment.voided_at.is_(None))
        .order_by(Payment.id.desc()))
    for row in rows:
        if shortfall <= 0:
            break
        row.voided_at, row.voided_by, row.void_reason = tx.now, tx.actor, "the credit behind it was reversed"
        unwound += _reverse_allocations(tx, row)
        shortfall -= row.amount_minor
    return unwound


def overdue_key(tx: "Tx", invoice_id: int) -> str:
    """The exactly-once key of an invoice's automatic overdue suspension.

    A payment that was voided reopens the invoice: the normal rules may then suspend for it
    again, under a new key, instead of being blocked by the suspension the payment lifted.
    """
    return overdue_keys(tx, [invoice_id])[invoice_id]


def overdue_keys(tx: "Tx", invoice_ids: Sequence[int]) -> dict[int, str]:
    """:func:`overdue_key` of many invoices with one statement: invoice id → key."""
    reopened = dict(tx.session.execute(
        select(PaymentAllocation.invoice_id, func.count()).join(Payment).where(
            PaymentAllocation.invoice_id.in_(list(invoice_ids)), Payment.voided_at.is_not(None),
            Payment.method != CREDIT).group_by(PaymentAllocation.invoice_id)).all()) if invoice_ids else {}
    return {i: f"overdue:invoice:{i}" + (f":reopened:{reopened[i]}" if reopened.get(i) else "") for i in invoice_ids}


def void(tx: "Tx", payment_id: int, reason: str) -> dict[str, Any]:
    """Reverse a payment by another ledger entry: its invoices reopen, credit it brought is taken back.

    Suspensions the payment lifted are not put back here; the sweeps' normal rules decide again
    (with their warnings). The client's billing contacts are told.
    """
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("REASON: say why the payment is voided (it is kept in the ledger and the audit)")
    found = tx.session.get(Payment, payment_id)
    if found is None:
        raise NotFound(f"no payment P-{payment_id}", hint="payment list ACCOUNT shows an account's payments")
    acc = lock_account(tx, found.account_id)
    row = tx.session.scalars(select(Payment).where(Payment.id == payment_id)
                             .execution_options(populate_existing=True)).one()
    if row.method == CREDIT:
        raise Conflict(f"P-{row.id} is credit applied from the account, not money in",
                       hint="void the payment that brought the credit")
    if row.voided_at is not None:
        from handlers.actors import actor_name
        raise Conflict(f"P-{row.id} was voided already on {row.voided_at.date()} by "
                       f"{actor_name(tx, row.voided_by or '')}: {row.void_reason}")
    before, credit_before = unallocated(tx, acc.id), credit(tx, acc.id)
    reopened = _reverse_allocations(tx, row)
    row.voided_at, row.voided_by, row.void_reason = tx.now, tx.actor, reason
    tx.session.add(LedgerEntry(account_id=acc.id, at=tx.now, kind=LedgerKind.payment, amount_minor=-row.amount_minor,
                               currency=row.currency, text=f"Payment #{row.id} voided: {reason}", source="manual",
                               payment_id=row.id, actor=tx.actor))
    tx.session.flush()
    shortfall = max(0, -unallocated(tx, acc.id)) - max(0, -before)
    reopened += _unwind_credit(tx, acc, shortfall)
    reapplied = credit_ops.apply_credit(tx, acc, why=f"payment #{row.id} voided")
    cur = acc.currency
    result = {"payment": payment_json(row), "reason": reason,
              "reopened": [{"number": inv.number, "amount": money(part, cur), "status": inv.status.value}
                           for inv, part in reopened],
              "credit_reapplied": [{"number": inv.number, "amount": money(part, cur)} for inv, part in reapplied],
              "balance_after": money(balance(tx, acc.id), cur),
              "credit_before": money(credit_before, cur), "credit_after": money(credit(tx, acc.id), cur),
              "owed_after_credit": money(sum(i.due_minor for i in open_invoices(tx, acc.id)), cur)}
    tx.audit("payment.void", subject=row, account_id=acc.id, **result)
    send(tx, acc, "payment_void", {"void": result, "text": void_text(result, for_client=True)},
         f"payment:{row.id}:void")
    return result


def void_text(result: dict[str, Any], *, for_client: bool = False) -> str:
    """The reversal in words: which invoices are due again, what credit did, what is due now. Staff read
    the payment's id and the invoices' status; the client reads neither, and the reason once (above)."""
    pay = result["payment"]
    ref = f" (ref {pay['ref']})" if pay["ref"] else ""
    if for_client:
        out = [f"The payment of {formatted(pay['amount'])}{ref} received on {pay['received_at'][:10]} "
               "no longer counts."]
    else:
        out = [f"P-{pay['id']} of {formatted(pay['amount'])}{ref} is reversed: {result['reason']}"]
    for r in result["reopened"]:
        out.append(f"  Invoice {r['number']}: {formatted(r['amount'])} is due again"
                   + ("." if for_client else f" ({r['status']})"))
    if result["credit_before"] != result["credit_after"]:
        out.append(f"  Credit on {'your' if for_client else 'the'} account: {formatted(result['credit_after'])} "
                   f"(it was {formatted(result['credit_before'])})")
    out += [f"  Credit paid {formatted(r['amount'])} of invoice {r['number']}" for r in result["credit_reapplied"]]
    owed = formatted(result["owed_after_credit"])
    out.append(f"Now due on {'your' if for_client else 'the'} open invoices: {owed}")
    return "\n".join(out)


def formatted(value: dict[str, str]) -> str:
    """An amount of a summary as the client reads it elsewhere: ``1,234.50 EUR``."""
    return fmt(int(Decimal(value["amount"]).scaleb(exponent(value["currency"]))), value["currency"])


# -- listing ----------------------------------------------------------------------------------

def payment_json(row: Payment) -> dict[str, Any]:
    return {"id": row.id, "amount": money(row.amount_minor, row.currency), "method": row.method, "ref": row.ref,
            "received_at": row.received_at.isoformat(), "recorded_by": row.actor,
            "voided": None if row.voided_at is None else {"at": row.voided_at.isoformat(), "by": row.voided_by,
                                                          "reason": row.void_reason}}


def listing(tx: "Tx", account_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The account's payments, newest first, each with the invoices it went to."""
    rows = list(tx.session.scalars(select(Payment).where(Payment.account_id == account_id)
                                   .order_by(Payment.received_at.desc(), Payment.id.desc()).limit(limit)))
    numbers = dict(tx.session.execute(select(Invoice.id, Invoice.number).where(
        Invoice.id.in_({a.invoice_id for r in rows for a in r.allocations}))).all()) if rows else {}
    return [payment_json(r) | {"allocations": [{"invoice": numbers.get(a.invoice_id),
                                                "amount": money(a.amount_minor, r.currency)}
                                               for a in r.allocations]} for r in rows]
