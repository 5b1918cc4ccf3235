"""Payments over several invoices: exact allocation, credit first, overpayment to credit, all-or-nothing,
idempotent refs, and two payments at once not double-allocating."""
import threading

import pytest
from sqlalchemy import func, select

from handlers.billing import invoices as inv_ops
from handlers.billing import ledger, payments
from handlers.errors import Conflict, InvalidInput
from handlers.models import Invoice, LedgerEntry, Payment, PaymentAllocation
from handlers.staff import execute
from tests.handlers.billing_helpers import account, account_id, invoice, load, mails, state


def _acme(services):
    load(services, account("acme", invoices=[
        invoice("A-0", "2026-08-01", "2026-08-15", [("Old fee", "3.33", "0.00")], paid="3.33"),
        invoice("A-1", "2026-09-01", "2026-09-15", [("Hosting", "10.00", "1.90"), ("Setup", "0.01", "0.00")],
                paid="5.00"),
        invoice("A-2", "2026-10-01", "2026-10-15", [("Domain", "12.00", "2.28"), ("Design 1/3 h", "33.33", "6.33")]),
        invoice("A-3", "2026-11-01", "2026-11-15", [("VPS", "24.99", "4.75")]),
    ]))
    return account_id(services, "acme")


def _amounts(rows, *keys):
    return [tuple(r[k]["amount"] for k in keys) for r in rows]


def test_one_payment_over_three_invoices_applies_credit_first_exact_to_the_cent(services):
    """A voided paid invoice leaves 3.33 credit, which pays the oldest open invoice at once; 70.00 then pays
    the rest of A-1 (partly paid) and A-2 and part of A-3."""
    acc = _acme(services)
    services.run(inv_ops.void, "A-0", "issued twice", actor="test")
    assert services.run(ledger.position, acc, readonly=True) == 0
    assert state(services, "acme")["invoices"]["A-1"] == ("partially_paid", 833, 358)
    summary = services.run(payments.record, acc, 7000, actor="test")
    assert [r["number"] for r in summary["invoices"]] == ["A-1", "A-2", "A-3"]
    assert _amounts(summary["invoices"], "total", "paid_before", "credit_applied", "paid_now", "left") == [
        ("11.91", "8.33", "0.00", "3.58", "0.00"),
        ("53.94", "0.00", "0.00", "53.94", "0.00"),
        ("29.74", "0.00", "0.00", "12.48", "17.26")]
    assert _amounts(summary["invoices"], "net", "tax") == [("10.01", "1.90"), ("45.33", "8.61"), ("24.99", "4.75")]
    assert (summary["credit_applied"]["amount"], summary["allocated"]["amount"], summary["to_credit"]["amount"],
            summary["still_due"]["amount"], summary["credit_after"]["amount"]) == ("0.00", "70.00", "0.00",
                                                                                  "17.26", "0.00")
    st = state(services, "acme")["invoices"]
    assert st["A-1"] == ("paid", 1191, 0) and st["A-2"] == ("paid", 5394, 0)
    assert st["A-3"] == ("partially_paid", 1248, 1726)
    # the invariant the history relies on: an invoice's paid amount is the sum of its allocations
    def check(tx):
        for inv in tx.session.scalars(select(Invoice)):
            allocated = tx.session.scalar(select(func.coalesce(func.sum(PaymentAllocation.amount_minor), 0))
                                          .where(PaymentAllocation.invoice_id == inv.id))
            assert allocated == inv.paid_minor, inv.number
    services.run(check, readonly=True)
    assert services.run(ledger.balance, acc, readonly=True) == -1726


def test_overpayment_becomes_credit_and_the_summary_is_emailed_to_billing_contacts(services):
    acc = _acme(services)
    summary = services.run(payments.record, acc, 3000, invoices=["a-3"], actor="test")
    assert (summary["invoices"][0]["left"]["amount"], summary["to_credit"]["amount"],
            summary["credit_after"]["amount"]) == ("0.00", "0.26", "0.00")
    assert summary["credit_then_paid"] == [{"number": "A-1", "amount": {"amount": "0.26", "currency": "EUR"}}]
    sent = mails(services, "payment_summary")
    assert sent == [("payment_summary", ["owner@acme.test", "bill@acme.test"],
                     "Payment received: 30.00 EUR for A-3")]
    # the credit paid the oldest open invoice at once
    nxt = services.run(payments.record, acc, 100, invoices=["A-1"], actor="test")
    assert _amounts(nxt["invoices"], "paid_before", "credit_applied", "paid_now", "left") == [
        ("5.26", "0.00", "1.00", "5.65")]


def test_a_bad_invoice_in_the_list_changes_nothing(services):
    """All or nothing: one unknown or already-paid invoice refuses the whole payment."""
    acc = _acme(services)
    before = state(services, "acme")
    with pytest.raises(InvalidInput, match="--invoices: no invoice NOPE on this account"):
        services.run(payments.record, acc, 5000, invoices=["A-2", "NOPE"], actor="test")
    with pytest.raises(Conflict, match="invoice A-0 is paid"):
        services.run(payments.record, acc, 5000, invoices=["A-2", "A-0"], actor="test")
    with pytest.raises(InvalidInput):
        services.run(payments.record, acc, 0, actor="test")
    assert state(services, "acme") == before
    assert services.run(lambda tx: tx.session.scalar(select(func.count()).select_from(Payment)
                                                     .where(Payment.method == "manual")), readonly=True) == 0


def test_the_same_ref_is_recorded_once(services):
    """Recording a bank reference again answers with the first summary; a different amount is a conflict."""
    acc = _acme(services)
    first = services.run(payments.record, acc, 2000, ref="BANK-7", actor="test")
    again = services.run(payments.record, acc, 2000, ref="BANK-7", actor="test")
    assert again["replayed"] and again["invoices"] == first["invoices"]
    with pytest.raises(Conflict, match="BANK-7 is already recorded"):
        services.run(payments.record, acc, 2500, ref="BANK-7", actor="test")
    count = services.run(lambda tx: (tx.session.scalar(select(func.count()).select_from(Payment).where(
        Payment.ref == "BANK-7")), tx.session.scalar(select(func.count()).select_from(LedgerEntry).where(
            LedgerEntry.kind == "payment", LedgerEntry.source == "manual"))), readonly=True)
    assert count == (1, 1)
    assert len(mails(services, "payment_summary")) == 1


def test_invoice_paid_with_a_partial_amount_leaves_the_rest_due(services):
    _acme(services)
    reply = execute(services, "invoice paid A-2 20.00 --ref CHQ-1", as_user=None)
    assert reply.data["invoices"][0]["left"]["amount"] == "33.94"
    assert state(services, "acme")["invoices"]["A-2"] == ("partially_paid", 2000, 3394)
    rest = execute(services, "invoice paid A-2", as_user=None)
    assert rest.data["payment"]["amount"]["amount"] == "33.94"
    assert state(services, "acme")["invoices"]["A-2"] == ("paid", 5394, 0)
    with pytest.raises(Conflict, match="nothing is left to pay"):
        execute(services, "invoice paid A-2", as_user=None)


def test_two_payments_at_once_never_allocate_more_than_is_due(services):
    """Two staff record 10.00 for the same 29.74 invoice at the same moment, five times over: the account
    lock makes them queue, so allocations never exceed the invoice and the rest is credit."""
    acc = _acme(services)
    barrier = threading.Barrier(2)
    errors = []

    def pay(n):
        try:
            barrier.wait()
            services.run(payments.record, acc, 1000, invoices=["A-3"], ref=f"T{n}", actor="test")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    for round_ in range(5):
        threads = [threading.Thread(target=pay, args=(f"{round_}-{i}",)) for i in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        barrier.reset()
    kinds = {type(e).__name__ for e in errors}
    assert kinds <= {"Conflict"}, errors  # an invoice paid by the other thread is refused, never overpaid
    st = state(services, "acme")["invoices"]["A-3"]
    assert st == ("paid", 2974, 0)
    allocated = services.run(lambda tx: tx.session.scalar(select(func.sum(PaymentAllocation.amount_minor)).join(
        Invoice).where(Invoice.number == "A-3")), readonly=True)
    paid_in = services.run(lambda tx: tx.session.scalar(select(func.sum(Payment.amount_minor)).where(
        Payment.method == "manual")), readonly=True)
    assert allocated == 2974
    # what was paid beyond A-3 became credit, and the credit paid the oldest open invoice (A-1, 5.00 paid before)
    assert services.run(ledger.position, acc, readonly=True) == 0
    assert state(services, "acme")["invoices"]["A-1"][1] == 500 + paid_in - 2974
