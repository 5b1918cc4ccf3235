"""The ledger's defects as a new user met them, each replayed: payments reversible, credit that pays,
credit limits as the seeds describe them.

- A payment recorded by mistake is voided by another ledger entry: its invoice reopens, the
  client is told, `payment list` shows who voided it and why, and the overdue suspension the
  payment lifted may come back through the normal rule (not at once).
- Credit brought by a payment that already paid another invoice is taken back from that invoice
  when the payment is voided; credit applications themselves cannot be voided.
- An account holding 110.00 of credit and a 72.00 invoice is never reminded, dunned or
  suspended: the credit pays the invoice.
- A charge on an account with no credit limit set never suspends it, whatever auto_suspend says.
- A payment carries its method and the date it was received.
"""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from handlers.billing import payments
from handlers.errors import Conflict, InvalidInput
from handlers.models import Invoice, LedgerEntry, Payment, PaymentAllocation
from handlers.staff import execute
from tests.handlers.billing_helpers import account, account_id, at, invoice, load, mails, state, sweep


def _late(services, **extra):
    """Acme, auto-suspend on, one 72.00 invoice due 2026-11-01 (overdue and suspendable by the 5th)."""
    load(services, account("acme", auto_suspend=True, invoices=[
        invoice("A-1", "2026-10-15", "2026-11-01", [("Hosting", "60.00", "12.00")])], **extra))
    return account_id(services, "acme")


def _paid_equals_allocations(services):
    """Each invoice's paid amount is the sum of its allocations from payments that are not voided."""
    def op(tx):
        for inv in tx.session.scalars(select(Invoice)):
            allocated = tx.session.scalar(select(func.coalesce(func.sum(PaymentAllocation.amount_minor), 0))
                                          .join(Payment).where(PaymentAllocation.invoice_id == inv.id,
                                                               Payment.voided_at.is_(None)))
            assert allocated == inv.paid_minor, inv.number
    services.run(op, readonly=True)


def test_a_voided_payment_reopens_its_invoice_tells_the_client_and_is_listed(services, clock):
    _late(services)
    reply = execute(services, "invoice paid A-1 --ref BANK-1 --method bank --received 2026-11-02", as_user=None)
    pid = reply.data["payment"]["id"]
    assert state(services, "acme")["invoices"]["A-1"] == ("paid", 7200, 0)
    with pytest.raises(InvalidInput, match="REASON"):
        execute(services, f"payment void P-{pid} ", as_user=None)
    out = execute(services, f"payment void P-{pid} the bank returned it", as_user=None)
    assert out.data["reopened"] == [{"number": "A-1", "amount": {"amount": "72.00", "currency": "EUR"},
                                     "status": "issued"}]
    assert state(services, "acme")["invoices"]["A-1"] == ("issued", 0, 7200)
    assert mails(services, "payment_void") == [("payment_void", ["owner@acme.test", "bill@acme.test"],
                                                "Payment reversed: 72.00 EUR (ref BANK-1)")]
    listed = execute(services, "payment list acme", as_user=None).data["payments"]
    assert [(p["method"], p["received_at"][:10], p["voided"]["reason"]) for p in listed] == [
        ("bank", "2026-11-02", "the bank returned it")]
    with pytest.raises(Conflict, match="voided already"):
        execute(services, f"payment void {pid} again", as_user=None)
    # the ledger says it twice: the payment in, and its reversal; the balance is what is owed again
    entries = services.run(lambda tx: [(e.kind.value, e.amount_minor) for e in tx.session.scalars(
        select(LedgerEntry).where(LedgerEntry.payment_id == pid).order_by(LedgerEntry.id))], readonly=True)
    assert entries == [("payment", 7200), ("payment", -7200)]
    _paid_equals_allocations(services)


def test_the_suspension_a_voided_payment_lifted_comes_back_only_through_the_rule(services, clock):
    _late(services)
    sweep(services, clock, "2026-11-05")
    assert state(services, "acme")["suspensions"] == [("overdue", True)]
    pid = execute(services, "invoice paid A-1", as_user=None).data["payment"]["id"]
    assert state(services, "acme")["suspensions"] == [("overdue", False)]
    execute(services, f"payment void {pid} cheque bounced", as_user=None)
    assert state(services, "acme")["suspensions"] == [("overdue", False)]  # not put back by the void itself
    sweep(services, clock, "2026-11-06")
    assert state(services, "acme")["suspensions"] == [("overdue", False), ("overdue", True)]


def test_voiding_a_payment_takes_back_the_credit_it_brought(services, clock):
    """100.00 paid against A-1 (72.00) leaves 28.00 credit, which pays B-1 when it is issued; voiding the
    payment reopens both."""
    from handlers.billing import invoices as inv_ops
    acc = _late(services)
    pid = services.run(payments.record, acc, 10000, actor="test")["payment"]["id"]
    services.run(inv_ops.issue, acc, [inv_ops.Line("Design", 2800)], dt.date(2026, 12, 1), actor="test")
    inv = state(services, "acme")["invoices"]
    assert inv["A-1"] == ("paid", 7200, 0) and inv["INV-1001"] == ("paid", 2800, 0)
    credit_row = services.run(lambda tx: tx.session.scalar(select(Payment.id).where(Payment.method == "credit")),
                              readonly=True)
    with pytest.raises(Conflict, match="credit applied from the account"):
        execute(services, f"payment void {credit_row} mistake", as_user=None)
    execute(services, f"payment void {pid} recorded on the wrong account", as_user=None)
    inv = state(services, "acme")["invoices"]
    assert inv["A-1"] == ("issued", 0, 7200) and inv["INV-1001"] == ("issued", 0, 2800)
    _paid_equals_allocations(services)


def test_credit_that_covers_an_invoice_pays_it_and_nothing_is_sent_about_it(services, clock):
    """110.00 of credit and a 72.00 overdue invoice: no reminder, no overdue notice, no suspension, no removal."""
    load(services, account("acme", auto_suspend=True))
    services.run(payments.record, account_id(services, "acme"), 11000, actor="test")  # no invoice open: credit
    _late(services)  # the invoice arrives by import, which leaves it open beside the credit
    for day in ("2026-10-27", "2026-11-02", "2026-11-05", "2026-11-20", "2026-12-10"):
        sweep(services, clock, day)
    st = state(services, "acme")
    assert st["invoices"]["A-1"] == ("paid", 7200, 0) and st["suspensions"] == []
    assert [m[0] for m in mails(services) if m[0] not in ("new_invoice", "payment_summary")] == []
    shown = execute(services, "account show acme", as_user=None)
    assert shown.data["credit"]["amount"] == "38.00" and shown.data["owed_after_credit"]["amount"] == "0.00"


def test_a_charge_without_a_credit_limit_never_suspends(services, clock):
    doc = account("acme", auto_suspend=False)
    del doc["credit_limit"]  # never set
    load(services, doc)
    assert execute(services, "account show acme", as_user=None).data["credit_limit"] is None
    execute(services, "charge add acme 5 fee", as_user=None)
    for day in ("2026-12-08", "2026-12-09", "2026-12-30"):
        sweep(services, clock, day)
    assert state(services, "acme")["suspensions"] == []
    assert [m[0] for m in mails(services) if m[0] in ("credit_warning", "suspension_notice")] == []


def test_a_limit_set_to_none_lifts_a_credit_suspension(services, clock):
    load(services, account("acme", auto_suspend=True, credit_limit="0.00"))
    clock.set(at("2026-12-08", 7))
    execute(services, "charge add acme 5 fee", as_user=None)  # invoiced, pay by 2026-12-22
    sweep(services, clock, "2026-12-08")
    assert state(services, "acme")["suspensions"] == []  # the warning first
    assert [m[0] for m in mails(services) if m[0] == "credit_warning"] == ["credit_warning"]
    sweep(services, clock, "2026-12-09")
    assert state(services, "acme")["suspensions"] == [("credit_limit", True)]
    reply = execute(services, "credit-limit acme none", as_user=None)
    assert reply.data["limit"] is None and state(services, "acme")["suspensions"] == [("credit_limit", False)]


@pytest.mark.parametrize("limit,position,reached", [("100.00", -10000, False), ("100.00", -10001, True),
                                                    ("-50.00", 5000, False), ("-50.00", 4999, True),
                                                    ("0.00", 0, False), ("0.00", -1, True)])
def test_the_limit_boundary_is_the_same_for_either_sign(limit, position, reached):
    from handlers.billing.ledger import CreditState
    lim = int(limit.replace(".", ""))
    assert CreditState(position, lim, position + lim, 0.0, None).reached is reached


def test_a_payment_method_must_be_known_and_the_received_date_not_in_the_future(services, clock):
    _late(services)
    with pytest.raises(InvalidInput, match="--method: one of bank, card"):
        execute(services, "invoice paid A-1 --method bitcoin", as_user=None)
    with pytest.raises(InvalidInput, match="in the future"):
        execute(services, "invoice paid A-1 --received 2099-01-01", as_user=None)
