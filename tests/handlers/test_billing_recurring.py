"""Every service is invoiced: services billed by period get their invoice ahead of the due date exactly
once, paying it moves the due date on, a "new invoice" mail announces every invoice issued, staff
write ad-hoc invoices with tax, and charges (manual and month-end plan charges) are invoiced."""
import datetime as dt

import pytest
from sqlalchemy import select

from handlers.billing.recurring import paid
from handlers.errors import InvalidInput
from handlers.importer import import_document
from handlers.jobs import run_sweeps
from handlers.models import Invoice, LedgerEntry, Service
from handlers.staff import envelope, execute
from tests.handlers.billing_helpers import account, account_id, at, invoice, load, mails, sweep
from tests.support.concurrency import at_once


def hosting(ref="host", price="10.00", period="1m", due="2027-01-01", kind="hosting", **extra):
    return {"ref": ref, "kind": kind, "name": f"{kind.title()} {ref}", "status": "active", "price": price,
            "billing_period": period, "next_due_on": due, **extra}


def invoices(services, ref="acme"):
    """(number, issued_on, due_on, origin, [(text, amount, tax, period_start)]) of the account's invoices."""
    acc = account_id(services, ref)

    def op(tx):
        rows = tx.session.scalars(select(Invoice).where(Invoice.account_id == acc).order_by(Invoice.id))
        return [(i.number, i.issued_on.isoformat(), i.due_on.isoformat(), i.origin,
                 [(ln.text, ln.amount_minor, ln.tax_minor, ln.period_start and ln.period_start.isoformat())
                  for ln in i.lines]) for i in rows]
    return services.run(op, readonly=True)


def next_due(services, ref="host"):
    return services.run(lambda tx: tx.session.scalar(select(Service.next_due_on).where(Service.ref == ref))
                        .isoformat(), readonly=True)


def balance(services, ref="acme"):
    return execute(services, f"account show {ref}", as_user=None).data["balance"]["amount"]


# -- recurring invoices -----------------------------------------------------------------------

def test_monthly_hosting_invoiced_fourteen_days_ahead_exactly_once(services, clock):
    """A monthly service due 2027-01-01 is invoiced on 2026-12-18 (14 days ahead), not before, and once
    over repeated sweeps; the invoice's pay-by date is the due date and it is announced by mail."""
    load(services, account("acme", services=[hosting(product="Hosting Basic", server="web-3")]))
    assert not [line for line in sweep(services, clock, "2026-12-17") if "recurring_invoices: Acme" in line]
    assert invoices(services) == []
    lines = sweep(services, clock, "2026-12-18")
    assert any(line.startswith("recurring_invoices: Acme Ltd: invoice Hosting host for the period from 2027-01-01")
               and line.endswith("issued INV-1001") for line in lines)
    for day in ("2026-12-18", "2026-12-19", "2026-12-31", "2027-01-01", "2027-01-10"):
        sweep(services, clock, day)
    assert invoices(services) == [("INV-1001", "2026-12-18", "2027-01-01", "recurring", [
        ("Hosting host (hosting), 1 month: 2027-01-01 to 2027-01-31", 1000, 0, "2027-01-01")])]
    assert mails(services, "invoice_new") == [
        ("invoice_new", ["owner@acme.test", "bill@acme.test"], "New invoice INV-1001: 10.00 EUR to pay by 2027-01-01")]
    stored = services.run(lambda tx: [(s.product, s.server) for s in tx.session.scalars(select(Service))],
                          readonly=True)
    assert stored == [("Hosting Basic", "web-3")]


def test_two_services_due_the_same_day_share_one_invoice(services, clock):
    """A monthly hosting and a yearly SSL both due 2027-01-01 go on one invoice with two lines."""
    load(services, account("acme", services=[hosting(), hosting("ssl", "49.00", "1y", kind="ssl")]))
    sweep(services, clock, "2026-12-20")
    assert invoices(services) == [("INV-1001", "2026-12-20", "2027-01-01", "recurring", [
        ("Hosting host (hosting), 1 month: 2027-01-01 to 2027-01-31", 1000, 0, "2027-01-01"),
        ("Ssl ssl (ssl), 1 year: 2027-01-01 to 2027-12-31", 4900, 0, "2027-01-01")])]


def test_paying_moves_next_due_on_and_the_next_period_follows(services, clock):
    """Paying the invoice moves the service's next due date on by one period, once, even when paid again;
    the next month's invoice then comes 14 days before 2027-02-01."""
    load(services, account("acme", services=[hosting()]))
    sweep(services, clock, "2026-12-18")
    execute(services, "payment record acme 10 --ref BANK-1", as_user=None)
    assert next_due(services) == "2027-02-01"
    execute(services, "payment record acme 10 --ref BANK-1", as_user=None)  # the same ref: nothing changes
    services.run(lambda tx: paid(tx, tx.session.scalar(select(Invoice))))  # the hook itself, again
    assert next_due(services) == "2027-02-01"
    sweep(services, clock, "2027-01-17")
    assert len(invoices(services)) == 1
    sweep(services, clock, "2027-01-18")
    assert [i[4][0][3] for i in invoices(services)] == ["2027-01-01", "2027-02-01"]


def test_partial_payment_does_not_move_the_due_date(services, clock):
    """Only a paid invoice moves the due date: a part payment leaves it where it was."""
    load(services, account("acme", services=[hosting()]))
    sweep(services, clock, "2026-12-18")
    execute(services, "invoice paid INV-1001 4.00", as_user=None)
    assert next_due(services) == "2027-01-01"
    execute(services, "invoice paid INV-1001", as_user=None)
    assert next_due(services) == "2027-02-01"


def test_month_end_due_dates_clamp_and_come_back(services, clock):
    """Due on 31 January, monthly: the next due date is 28 February, and after that 31 March, not 28 March."""
    load(services, account("acme", services=[hosting(due="2027-01-31")]))
    sweep(services, clock, "2027-01-17")
    execute(services, "invoice paid INV-1001", as_user=None)
    assert next_due(services) == "2027-02-28"
    assert invoices(services)[0][4][0][0] == "Hosting host (hosting), 1 month: 2027-01-31 to 2027-02-27"
    sweep(services, clock, "2027-02-14")
    execute(services, "invoice paid INV-1002", as_user=None)
    assert next_due(services) == "2027-03-31"


def test_a_domain_is_never_invoiced_by_period(services, clock):
    """A domain with a price and a billing period keeps its renewal flow: no recurring invoice, ever. The
    import refuses the billing period on a domain; set on one all the same, the sweep leaves it alone."""
    with pytest.raises(InvalidInput, match="a domain renews through its renewal reminders"):
        load(services, account("acme", services=[hosting("acme.test", kind="domain", expires_on="2027-06-01")]))
    load(services, account("acme", services=[{"ref": "acme.test", "kind": "domain", "name": "acme.test",
                                              "status": "active", "price": "10.00", "expires_on": "2027-06-01"}]))

    def set_period(tx):
        svc = tx.session.scalar(select(Service).where(Service.ref == "acme.test"))
        svc.billing_period, svc.next_due_on = "1m", dt.date(2027, 1, 1)
    services.run(set_period)
    for day in ("2026-12-18", "2027-01-01", "2027-03-01"):
        sweep(services, clock, day)
    assert invoices(services) == []


def test_catch_up_after_three_months_down_issues_one_invoice(services, clock):
    """Down from before 2026-12-18 until 2027-03-20: one invoice, for the latest period due (April), not
    a backlog of four; its pay-by date is its due date."""
    load(services, account("acme", services=[hosting()]))
    sweep(services, clock, "2027-03-20")
    sweep(services, clock, "2027-03-21")
    assert invoices(services) == [("INV-1001", "2027-03-20", "2027-04-01", "recurring", [
        ("Hosting host (hosting), 1 month: 2027-04-01 to 2027-04-30", 1000, 0, "2027-04-01")])]
    execute(services, "invoice paid INV-1001", as_user=None)
    assert next_due(services) == "2027-05-01"


def test_catch_up_of_a_period_already_due_is_payable_from_today(services, clock):
    """A quarterly service whose due date passed while down: invoiced once, pay by the day it is issued."""
    load(services, account("acme", services=[hosting(period="3m", due="2027-01-01")]))
    sweep(services, clock, "2027-01-10")
    assert [(i[1], i[2]) for i in invoices(services)] == [("2027-01-10", "2027-01-10")]


def test_concurrent_sweeps_issue_one_invoice(services, clock):
    """Two schedulers sweeping at the same moment issue one invoice and one mail."""
    load(services, account("acme", services=[hosting(), hosting("ssl", "49.00", "1y", kind="ssl")]))
    moment = at("2026-12-18")
    clock.set(moment)
    assert at_once(lambda: run_sweeps(services, moment), n=3) == []
    assert [i[0] for i in invoices(services)] == ["INV-1001"]
    assert len(mails(services, "invoice_new")) == 1


def test_forecast_and_dry_run_show_the_invoice_without_issuing_it(services, clock):
    """The forecast lists the recurring invoice on its day, once; a dry run issues nothing."""
    load(services, account("acme", services=[hosting()]))
    clock.set(at("2026-12-15", 9))
    days = execute(services, "forecast --days 5", as_user=None).data["days"]
    found = [(d["day"], a["rule"]) for d in days for a in d["actions"] if a["rule"] == "recurring_invoices"]
    assert found == [("2026-12-18", "recurring_invoices")]
    lines = sweep(services, clock, "2026-12-18", dry_run=True)
    assert any(line.startswith("recurring_invoices: Acme Ltd: invoice Hosting host") for line in lines)
    assert invoices(services) == []


def test_import_refuses_a_bad_billing_period_with_its_path(services):
    """A billing period must be months or years; a period needs its next due date."""
    with pytest.raises(InvalidInput, match=r"services\[0\]\.billing_period: not a billing period"):
        load(services, account("acme", services=[hosting(period="fortnightly")]))
    bad = hosting()
    del bad["next_due_on"]
    with pytest.raises(InvalidInput, match=r"services\[0\]\.next_due_on"):
        load(services, account("acme", services=[bad]))


# -- the "new invoice" mail -------------------------------------------------------------------

def test_new_invoice_mail_once_per_invoice_and_never_for_imports(services, clock):
    """An imported invoice (history) mails nobody; each invoice issued here is announced once; paper
    invoicing gets no mail."""
    load(services, account("acme", invoices=[invoice("OLD-1", "2026-10-01", "2026-10-15", [("Old", "5.00", "0")])],
                           services=[hosting()]),
         account("paper", invoicing="paper", services=[hosting()]))
    assert mails(services, "invoice_new") == []
    assert services.run(lambda tx: tx.session.scalar(select(Invoice.origin)), readonly=True) == "import"
    sweep(services, clock, "2026-12-18")
    sweep(services, clock, "2026-12-19")
    sent = mails(services, "invoice_new")
    assert [m[1] for m in sent] == [["owner@acme.test", "bill@acme.test"]]
    assert len(invoices(services, "paper")) == 1


def test_renewal_invoices_are_announced_too(services, clock):
    """The invoice a renewal decision raises goes through the same issue: one "new invoice" mail."""
    from handlers.billing.invoices import Line, issue

    load(services, account("acme"))
    acc = account_id(services, "acme")
    services.run(lambda tx: issue(tx, acc, [Line("Renewal", 1000)], dt.date(2026, 12, 5), origin="renewal"))
    assert [m[2] for m in mails(services, "invoice_new")] == ["New invoice INV-1001: 10.00 EUR to pay by 2026-12-05"]


# -- invoice create ---------------------------------------------------------------------------

def test_invoice_create_with_tax(services, clock):
    """`invoice create` with --tax 21 on 19.99 adds 4.20 tax (4.1979 half up, integer cents), pay by --due."""
    load(services, account("acme"))
    reply = execute(services, ["invoice", "create", "acme", "19.99", "Design", "work", "--tax", "21",
                               "--due", "2026-12-10"], as_user=None)
    answer = envelope(reply)["result"]  # what --json prints
    assert answer["number"] == "INV-1001" and answer["total"] == {"amount": "24.19", "currency": "EUR"}
    assert answer["tax"] == {"amount": "4.20", "currency": "EUR"} and answer["tax_rate"] == "21"
    assert invoices(services) == [("INV-1001", "2026-11-21", "2026-12-10", "invoice", [("Design work", 1999, 420,
                                                                                         None)])]
    assert balance(services) == "-24.19"
    assert len(mails(services, "invoice_new")) == 1
    half = execute(services, 'invoice create acme 10.10 "Half up" --tax 7.5', as_user=None)  # 0.7575 -> 0.76
    assert half.data["tax"] == {"amount": "0.76", "currency": "EUR"}
    assert half.data["due_on"] == "2026-12-05"  # 14 days unless --due says otherwise


@pytest.mark.parametrize("words, problem", [
    ("invoice create acme 10 Work --tax abc", "--tax: not a tax rate in percent"),
    ("invoice create acme 10 Work --tax 150", "--tax: not a tax rate in percent"),
    ("invoice create acme 0 Work", "AMOUNT"),
    ("invoice create acme 10", "needs TEXT"),
    ("invoice create acme 10 Work --due 2026-11-01", "before the issue date"),
])
def test_invoice_create_refuses_bad_input_with_the_usage_line(services, words, problem):
    """Bad input is a clear error with the usage line, and nothing is written."""
    load(services, account("acme"))
    with pytest.raises(InvalidInput) as caught:
        execute(services, words, as_user=None)
    assert problem in str(caught.value)
    assert caught.value.hint == "usage: invoice create ACCOUNT AMOUNT TEXT [--tax RATE] [--due DATE]"
    assert invoices(services) == []


def test_invoice_create_needs_the_billing_role(services):
    """Support staff may not write invoices."""
    from handlers.errors import NotAllowed
    load(services, account("acme"))
    execute(services, "team add U0SUPPORT support", as_user=None)
    with pytest.raises(NotAllowed):
        execute(services, "invoice create acme 10 Work", as_user="U0SUPPORT")


# -- charges are invoiced ---------------------------------------------------------------------

def test_charge_add_makes_an_invoice_owed_once(services, clock):
    """`charge add` issues a one-line invoice that takes the ledger charge over: the balance counts it once,
    the credit limit still sees it, and paying the invoice settles it."""
    load(services, account("acme", credit_limit="100.00"))
    reply = execute(services, 'charge add acme 5 "fee"', as_user=None)
    assert reply.data["invoice"] == "INV-1001"
    assert invoices(services) == [("INV-1001", "2026-11-21", "2026-12-05", "charge", [("fee", 500, 0, None)])]
    assert balance(services) == "-5.00"
    assert reply.data["position"] == {"amount": "-5.00", "currency": "EUR"}
    entries = services.run(lambda tx: [(e.amount_minor, e.source, e.invoice_id is not None)
                                       for e in tx.session.scalars(select(LedgerEntry))], readonly=True)
    assert entries == [(-500, "manual", True)]
    execute(services, "payment record acme 5", as_user=None)
    assert balance(services) == "0.00"
    assert execute(services, "invoice show INV-1001", as_user=None).data["status"] == "paid"


def test_credit_pays_a_charge_invoice_without_counting_it_twice(services, clock):
    """Credit of 50, then a charge of 30: the credit pays the charge's invoice when it is issued; a payment
    of 10 then leaves 30 of credit (50 - 30 + 10), not 20 and not 60."""
    load(services, account("acme"))
    execute(services, "payment record acme 50", as_user=None)
    execute(services, 'charge add acme 30 "Setup"', as_user=None)
    assert execute(services, "account show acme", as_user=None).data["owed_after_credit"]["amount"] == "0.00"
    summary = execute(services, "payment record acme 10", as_user=None).data
    assert summary["credit_applied"]["amount"] == "0.00" and summary["credit_after"]["amount"] == "30.00"
    assert balance(services) == "30.00"


def test_plan_charges_of_a_month_go_on_one_invoice(services, clock):
    """November's plan fee and usage become one invoice for November, issued on the 1st, lines as charged;
    the balance owes them once."""
    plan = {"ref": "pro", "name": "Pro", "currency": "EUR",
            "fees": [{"ref": "base", "text": "Pro monthly fee", "amount": "19.99"}],
            "usage": [{"metric": "bandwidth_gb", "text": "Bandwidth", "unit": "GB", "unit_price": "0.01"}]}
    acc = account("acme", services=[], plan={"ref": "pro", "from": "2026-11-01"},
                  usage=[{"ref": "bw-1", "metric": "bandwidth_gb", "quantity": "150", "at": "2026-11-12T10:00:00Z"}])
    services.run(import_document, {"plans": [plan], "accounts": [acc]}, actor="test")
    sweep(services, clock, "2026-12-01")
    sweep(services, clock, "2026-12-02")
    assert invoices(services) == [("INV-1001", "2026-12-01", "2026-12-15", "plan", [
        ("Pro monthly fee, 2026-11", 1999, 0, None), ("Bandwidth, 2026-11: 150 GB at 0.01 EUR", 150, 0, None)])]
    assert balance(services) == "-21.49"
    assert len(mails(services, "invoice_new")) == 1
