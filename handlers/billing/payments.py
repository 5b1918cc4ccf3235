"""One payment spread over several invoices, with the summary the client and staff see.

Allocation is exact to the minor unit and all-or-nothing (one transaction, the account row
locked so two payments for one account queue). Credit already on the account is applied
first; the payment pays the invoices in order (listed, else oldest pay-by date first); what
is left over stays on the account as credit. A payment's ``ref`` is unique: recording the same
ref again answers with the first recording's summary and changes nothing.
"""
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from handlers.billing import recurring
from handlers.billing.common import OPEN_STATUSES, lock_account, money, open_invoices, send
from handlers.billing.invoices import status_for
from handlers.billing.ledger import balance, credit
from handlers.errors import Conflict, InvalidInput
from handlers.models import AuditEvent, Invoice, LedgerEntry, LedgerKind, Payment, PaymentAllocation
from handlers.money import fmt

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


def record(tx: "Tx", account_id: int, amount_minor: int, *, invoices: Sequence[str] | None = None,
           ref: str | None = None, method: str = "manual", apply_credit: bool = True) -> dict[str, Any]:
    """Record a payment and allocate it; returns the summary (also emailed to billing contacts)."""
    from handlers.billing.suspensions import lift_resolved

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
    from_payment: list[tuple[Invoice, int]] = []
    from_credit: list[tuple[Invoice, int]] = []
    for inv in targets:
        due = inv.due_minor
        by_credit = min(credit_left, due)
        by_payment = min(pay_left, due - by_credit)
        credit_left -= by_credit
        pay_left -= by_payment
        cur = inv.currency
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

    payment = Payment(account_id=acc.id, amount_minor=amount_minor, currency=acc.currency, received_at=tx.now,
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
                               method="credit", ref=None, actor=tx.actor,
                               allocations=[PaymentAllocation(invoice_id=inv.id, amount_minor=part)
                                            for inv, part in from_credit]))
    tx.session.add(LedgerEntry(account_id=acc.id, at=tx.now, kind=LedgerKind.payment, amount_minor=amount_minor,
                               currency=acc.currency, text="Payment" + (f" {ref}" if ref else ""), source="manual",
                               payment_id=payment.id, actor=tx.actor,
                               invoice_id=targets[0].id if len(targets) == 1 and not pay_left else None))
    tx.session.flush()

    cur = acc.currency
    summary = {
        "payment": {"id": payment.id, "ref": ref, "amount": money(amount_minor, cur), "method": method,
                    "received_at": tx.now.isoformat()},
        "account": {"id": acc.id, "ref": acc.ref, "name": acc.name},
        "invoices": rows,
        "credit_before": money(credit_before, cur),
        "credit_applied": money(credit_before - credit_left, cur),
        "allocated": money(amount_minor - pay_left, cur),
        "to_credit": money(pay_left, cur),
        "credit_after": money(credit(tx, acc.id), cur),
        "still_due": money(sum(inv.due_minor for inv in targets), cur),
        "balance_after": money(balance(tx, acc.id), cur),
        "replayed": False,
    }
    for inv in targets:
        recurring.paid(tx, inv)  # a paid recurring period moves its service's next due date on
    lifted = lift_resolved(tx, acc, why="payment received" + (f" ({ref})" if ref else ""))
    summary["lifted"] = [{"id": s.id, "reason": s.reason.value} for s in lifted]
    tx.audit("payment.record", subject=payment, account_id=acc.id, summary=summary)
    send(tx, acc, "payment_summary", {"summary": summary, "text": summary_text(summary)},
         f"payment:{payment.id}:summary")
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    """The summary as plain text: each invoice's lines, tax, credit, earlier payments, what is left."""
    def m(value: dict[str, str]) -> str:
        return f"{value['amount']} {value['currency']}"

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
    out.append(f"Credit applied: {m(summary['credit_applied'])} · paid to invoices: {m(summary['allocated'])} · "
               f"to account credit: {m(summary['to_credit'])}")
    out.append(f"Still due on these invoices: {m(summary['still_due'])} · credit on the account: "
               f"{m(summary['credit_after'])}")
    return "\n".join(out)
