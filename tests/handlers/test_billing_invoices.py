"""Invoices: numbers unique when two processes issue at once, void keeps the history, reminders on demand."""
import datetime as dt
import threading

import pytest
from sqlalchemy import select

from handlers.billing import invoices as inv_ops
from handlers.billing import ledger
from handlers.errors import Conflict, NotFound
from handlers.models import LedgerEntry
from handlers.staff import execute
from tests.handlers.billing_helpers import account, account_id, invoice, load, mails, notices

D = dt.date.fromisoformat


def test_invoice_numbers_are_unique_when_two_threads_issue_at_once(services):
    """Two threads issue 10 invoices each at the same time; an imported INV-1002 is skipped, not reused."""
    load(services, account("acme", invoices=[invoice("INV-1002", "2026-11-01", "2026-11-15", [("x", "1.00", "0")])]))
    acc = account_id(services, "acme")
    barrier, numbers, errors = threading.Barrier(2), [], []

    def issue_many():
        barrier.wait()
        for _ in range(10):
            try:
                inv = services.run(inv_ops.issue, acc, [inv_ops.Line("Hosting", 1000, 190)], D("2026-12-05"),
                                   actor="test")
                numbers.append(inv.number)
            except Exception as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

    threads = [threading.Thread(target=issue_many) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert len(numbers) == 20 and len(set(numbers)) == 20
    assert "INV-1002" not in numbers
    assert sorted(numbers, key=lambda n: int(n[4:])) == [f"INV-{n}" for n in [1001, *range(1003, 1022)]]


def test_issuing_puts_the_charge_on_the_ledger_and_void_reverses_it_keeping_the_history(services):
    load(services, account("acme"))
    acc = account_id(services, "acme")
    inv = services.run(inv_ops.issue, acc, [inv_ops.Line("Hosting", 1000, 190), inv_ops.Line("Domain", 1200, 228)],
                       D("2026-12-05"), actor="test")
    assert (inv.total_minor, services.run(ledger.balance, acc, readonly=True)) == (2618, -2618)
    execute(services, f"invoice paid {inv.number} 10.00", as_user=None)
    reply = execute(services, f"invoice void {inv.number} sent to the wrong client", as_user=None)
    assert "10.00 EUR paid on it is now credit" in reply.text
    shown = execute(services, f"invoice show {inv.number}", as_user=None).data
    assert (shown["status"], shown["void_reason"], shown["due"]["amount"]) == ("void", "sent to the wrong client",
                                                                               "0.00")
    assert [ln["text"] for ln in shown["lines"]] == ["Hosting", "Domain"]
    assert [p["amount"]["amount"] for p in shown["payments"]] == ["10.00"]
    assert services.run(ledger.balance, acc, readonly=True) == 1000  # what was paid is credit now
    kinds = services.run(lambda tx: [(e.kind.value, e.amount_minor) for e in tx.session.scalars(
        select(LedgerEntry).where(LedgerEntry.invoice_id == inv.id).order_by(LedgerEntry.id))], readonly=True)
    assert kinds == [("charge", -2618), ("payment", 1000), ("adjustment", 2618)]
    with pytest.raises(Conflict, match="is void already"):
        execute(services, f"invoice void {inv.number}", as_user=None)
    with pytest.raises(Conflict):
        execute(services, f"invoice paid {inv.number}", as_user=None)


def test_invoice_list_filters_and_show_of_an_unknown_number(services, clock):
    load(services, account("acme", invoices=[
        invoice("A-1", "2026-10-01", "2026-10-15", [("a", "10.00", "0")]),
        invoice("A-2", "2026-11-10", "2026-11-30", [("b", "20.00", "0")]),
        invoice("A-3", "2026-09-01", "2026-09-15", [("c", "5.00", "0")], paid="5.00")]))
    numbers = lambda words: [i["number"] for i in execute(services, words, as_user=None).data["invoices"]]  # noqa: E731
    assert numbers("invoice list") == ["A-1", "A-2"]
    assert numbers("invoice list --overdue") == ["A-1"]
    assert numbers("invoice list --paid --account acme") == ["A-3"]
    assert numbers("invoice list --all") == ["A-3", "A-1", "A-2"]
    with pytest.raises(NotFound, match="no invoice A-9"):
        execute(services, "invoice show A-9", as_user=None)


def test_invoice_remind_sends_now_once_a_day_and_refuses_paper_invoicing(services, clock):
    load(services, account("acme", invoices=[invoice("A-1", "2026-11-10", "2026-11-30", [("a", "10.00", "0")])]),
         account("paper", invoicing="paper", invoices=[invoice("P-1", "2026-11-10", "2026-11-30",
                                                                [("a", "10.00", "0")])]))
    reply = execute(services, "invoice remind A-1", as_user=None)
    assert reply.data == {"number": "A-1", "kind": "invoice_reminder", "to": ["owner@acme.test", "bill@acme.test"]}
    with pytest.raises(Conflict, match="went out today already"):
        execute(services, "invoice remind A-1", as_user=None)
    clock.advance(days=11)  # past the pay-by date: the manual reminder is an overdue notice
    assert execute(services, "invoice remind A-1", as_user=None).data["kind"] == "invoice_overdue"
    with pytest.raises(Conflict, match="paper invoicing"):
        execute(services, "invoice remind P-1", as_user=None)
    assert [m[0] for m in mails(services)] == ["invoice_reminder", "invoice_overdue"]
    assert notices(services) == [("invoice_reminder", "manual", "sent"), ("invoice_overdue", "manual", "sent")]
