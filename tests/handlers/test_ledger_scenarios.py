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


def test_credit_texts_say_the_limit_is_passed_and_threaten_no_suspension_that_will_not_come(services, clock):
    """With automatic suspension off, `charge add` past the limit and the client's warning say the limit is
    passed and promise no suspension; with it on, the suspension email names exactly what brings the account
    back (at the limit is within it, so 10.00 over needs 10.00, not 10.01)."""
    from tests.support.mailflow import body_text, outbound
    load(services, account("off", auto_suspend=False, credit_limit="100.00"),
         account("on", auto_suspend=True, credit_limit="100.00"))
    clock.set(at("2026-12-08", 7))
    for ref in ("off", "on"):
        reply = execute(services, f"charge add {ref} 110 Work", as_user=None)
        assert "the limit is passed by 10.00 EUR" in reply.text and "limit in 0.0 days" not in reply.text
    assert "automatic suspension is off, so the client is warned, not suspended" in \
        execute(services, "charge add off 0.01 more", as_user=None).text
    sweep(services, clock, "2026-12-08")
    warning = {m.account_id: body_text(m) for m in outbound(services, "credit_warning")}
    off, on = account_id(services, "off"), account_id(services, "on")
    assert "passed its credit limit by 10.01 EUR" in warning[off] and "suspended" not in warning[off]
    assert "Unless a payment of at least 10.00 EUR arrives, the account will be suspended." in warning[on]
    sweep(services, clock, "2026-12-09")
    notice = body_text(outbound(services, "suspension_notice")[0])
    assert "A payment of at least 10.00 EUR brings it back within the limit" in notice
    assert state(services, "off")["suspensions"] == [] and state(services, "on")["suspensions"] == [
        ("credit_limit", True)]


def test_the_new_invoice_email_asks_only_for_what_credit_left_to_pay(services, clock):
    """Credit 5.00: an invoice of 8.00 is announced as 3.00 to pay, one of 2.00 (issued after) as paid from credit
    once 5.00 more arrives; never "8.00 EUR to pay" for an invoice credit has paid."""
    from tests.support.mailflow import body_text, outbound
    acc = _late(services)
    services.run(payments.record, acc, 7200 + 500, actor="test")  # A-1 paid, 5.00 credit
    execute(services, "invoice create acme 8.00 Covered job", as_user=None)
    services.run(payments.record, acc, 300 + 500, actor="test")  # the rest of it, and 5.00 credit again
    execute(services, "invoice create acme 2.00 Small job", as_user=None)
    new = outbound(services, "invoice_new")
    assert [m.subject for m in new] == ["New invoice INV-1001: 3.00 EUR to pay by 2026-12-05",
                                        "New invoice INV-1002: 2.00 EUR, paid from your credit"]
    assert "paid 5.00 EUR of it; please pay the remaining 3.00 EUR" in body_text(new[0])
    assert "there is nothing to pay" in body_text(new[1])


def test_no_reminder_by_hand_for_an_invoice_credit_covers(services, clock):
    """An invoice imported beside 100.00 of credit is not reminded of by `invoice remind` (it used to send
    "40.00 EUR is still unpaid"); the next sweep pays it from the credit."""
    load(services, account("acme"))
    services.run(payments.record, account_id(services, "acme"), 10000, actor="test")
    load(services, account("acme", invoices=[invoice("L-1", "2026-11-01", "2026-11-15", [("Hosting", "40.00", "0")])]))
    with pytest.raises(Conflict, match="covers L-1"):
        execute(services, "invoice remind L-1", as_user=None)
    assert mails(services, "invoice_overdue") == []
    sweep(services, clock, "2026-11-22")
    assert state(services, "acme")["invoices"]["L-1"] == ("paid", 4000, 0)


def test_a_voided_payment_is_marked_in_invoice_show_and_account_history(services, clock):
    """After `payment void`, `invoice show` marks the payment VOID and `account history` lists its reversal
    (both used to show it as if it still paid the invoice)."""
    _late(services)
    pid = execute(services, "invoice paid A-1 --ref P1 --method cheque", as_user=None).data["payment"]["id"]
    execute(services, f"payment void {pid} bounced cheque", as_user=None)
    shown = execute(services, "invoice show A-1", as_user=None)
    assert shown.data["payments"][0]["voided"] is True and "VOID: bounced cheque" in shown.text
    history = execute(services, "account history acme", as_user=None)
    assert f"payment P-{pid} 72.00 EUR reversed: bounced cheque" in history.text


def test_invoice_paid_again_with_the_same_ref_answers_with_the_first_summary(services, clock):
    """A retried `invoice paid N --ref R` (the first answer was lost) changes nothing and says so, as
    `payment record` does; it used to answer "invoice N is paid; nothing is left to pay"."""
    _late(services)
    first = execute(services, "invoice paid A-1 --ref REN-1", as_user=None)
    again = execute(services, "invoice paid A-1 --ref REN-1", as_user=None)
    assert again.data["replayed"] is True and again.data["payment"]["id"] == first.data["payment"]["id"]
    assert "nothing changed" in again.text
    assert len(execute(services, "payment list acme", as_user=None).data["payments"]) == 1
    with pytest.raises(Conflict, match="nothing is left to pay"):
        execute(services, "invoice paid A-1 --ref OTHER", as_user=None)


def test_an_account_overdue_on_two_invoices_gets_one_suspension_email_naming_both(services, clock):
    """Two invoices past the grace period on the same day: one suspension email and one Slack card that name
    both and the total that lifts it (there used to be one email and one card per invoice)."""
    from handlers.models import SlackPost
    from tests.support.mailflow import body_text, outbound
    load(services, account("acme", auto_suspend=True, invoices=[
        invoice("A-1", "2026-10-15", "2026-11-01", [("Hosting", "60.00", "12.00")]),
        invoice("A-2", "2026-10-20", "2026-11-02", [("Domain", "10.00", "0.00")])]))
    sweep(services, clock, "2026-11-06")
    assert state(services, "acme")["suspensions"] == [("overdue", True), ("overdue", True)]
    sent = outbound(services, "suspension_notice")
    assert len(sent) == 1
    assert sent[0].subject == "Suspended: your account and all its services (invoices A-1, A-2 unpaid)"
    text = body_text(sent[0])
    assert "A-1" in text and "A-2" in text and "Paying the 82.00 EUR left on them lifts the suspension" in text
    cards = services.run(lambda tx: [p for p in tx.session.scalars(select(SlackPost)) if "uspen" in str(p.payload)],
                         readonly=True)
    assert len(cards) <= 1


def test_mail_of_a_sweep_run_as_of_a_later_moment_is_due_at_once(services, clock):
    """`sweep --at` a week ahead used to queue billing mail for that moment, so `outbox flush` could not send
    it (renewal mail was due at once); now every mail it queues is due now."""
    from handlers.billing import dunning
    from handlers.models import OutboundMail
    _late(services)
    clock.set(at("2026-11-20"))
    dunning.run_rules(services, ["invoice_notices"], at("2026-11-27"), False)
    due = services.run(lambda tx: [m.next_attempt_at for m in tx.session.scalars(select(OutboundMail))],
                       readonly=True)
    assert due and all(when <= at("2026-11-20") for when in due)


def test_the_digest_lists_only_suspensions_and_removals_under_tomorrows_suspensions_and_removals(services, clock):
    """A credit warning due tomorrow used to be listed under "Tomorrow's suspensions and removals"; an overdue
    suspension due tomorrow is listed there, the warning is not."""
    from handlers.billing import digest
    _late(services)  # A-1 due 2026-11-01: suspended on the 4th (three days' grace)
    load(services, account("meter", auto_suspend=False, credit_limit="10.00"))
    clock.set(at("2026-11-03", 7))
    execute(services, "charge add meter 9 usage", as_user=None)  # 1.00 left at 0.30 a day: warned tomorrow
    clock.set(at("2026-11-03", 9))
    built = services.run(digest.build, readonly=True)
    tomorrow = next(sec for sec in built["sections"] if sec["title"] == "Tomorrow's suspensions and removals")
    assert [item for item in tomorrow["items"] if "Acme" in item and "suspend" in item]
    assert not [item for item in tomorrow["items"] if "credit warning" in item]
    assert built["counts"]["tomorrow"] == len(tomorrow["items"])


def test_a_client_link_decider_and_every_way_of_deciding_read_as_words(services):
    """The sales contact used to read "Decided by account:1, authenticated by reply_token"."""
    from handlers.actors import actor_name, auth_words
    acc = _late(services)
    assert services.run(lambda tx: actor_name(tx, f"account:{acc}"), readonly=True) == "the client (Acme Ltd)"
    assert [auth_words(m) for m in ("reply_token", "page_link", "activation_code", "staff")] == [
        "the signed link or address of our email", "a renewal page link", "an activation code", "staff's own login"]


def test_reimporting_an_invoice_that_credit_has_paid_since_changes_nothing(services, clock):
    """The file still says 0.00 paid on an invoice the account's credit paid after the first import: the
    re-import is a no-op (it used to be refused as "0.00 is less than the 72.00 already paid")."""
    load(services, account("acme"))
    services.run(payments.record, account_id(services, "acme"), 10000, actor="test")  # no invoice: credit
    doc = account("acme", invoices=[invoice("A-1", "2026-10-15", "2026-11-01", [("Hosting", "60.00", "12.00")])])
    load(services, doc)
    sweep(services, clock, "2026-11-02")
    assert state(services, "acme")["invoices"]["A-1"] == ("paid", 7200, 0)
    load(services, doc)  # the same file again
    assert state(services, "acme")["invoices"]["A-1"] == ("paid", 7200, 0)
    assert execute(services, "account show acme", as_user=None).data["credit"]["amount"] == "28.00"


def test_the_payment_email_subject_writes_the_amount_as_the_body_does(services, clock):
    """"Payment received: 1000.00 EUR" in the subject beside "1,000.00 EUR" in the body: now both "1,000.00 EUR"."""
    acc = _late(services)
    services.run(payments.record, acc, 100000, actor="test")
    assert mails(services, "payment_summary")[0][2] == "Payment received: 1,000.00 EUR for A-1"
