"""The renewal lifecycle end to end: one renewal, one invoice (re-decided, declined, resubmitted, submitted
at once, renewed automatically), and a renewal that completes (paid or done by staff: the expiry moves, the
next cycle's reminders start, the sales contact is asked only then; unrenewed services become expired)."""
import datetime as dt

import pytest
from sqlalchemy import select

from handlers.billing import payments
from handlers.errors import Conflict, InvalidInput, NotAllowed, NotFound
from handlers.jobs import run_sweeps
from handlers.models import (AuditEvent, Invoice, InvoiceStatus, RenewalDecision, Role, Service, ServiceEvent,
                             SlackPost, StaffMember)
from handlers.renewals import pages, reminders
from handlers.renewals.occasions import add_months
from handlers.staff import execute
from tests.support.concurrency import at_once
from tests.support.renewals import D, make_account, outbound, reminder_token, text_of

UTC = dt.timezone.utc
TODAY = D("2026-11-21")             # the clock fixture's day
EXPIRY = TODAY + dt.timedelta(days=15)  # a reminder (-15d) goes today
NAMES = ("a.test", "b.test", "c.test", "d.test", "e.test")


@pytest.fixture
def acme(services):
    ids = make_account(services, "acme", {n: str(EXPIRY) for n in NAMES}, sales="sales@reseller.test")
    ids["token"] = reminder_token(services, TODAY)
    services.run(lambda tx: [tx.session.add(StaffMember(slack_user_id=u, role=Role(r), added_at=tx.now, added_by="t"))
                             for u, r in (("U0RO", "readonly"), ("U0BILL", "billing"))])
    return ids


def submit(services, ids, choices):
    """The renewal page's POST, as the client: {name: years | "decline"}."""
    form = {}
    for name, what in choices.items():
        sid = ids[name]
        form[f"decision_{sid}"] = "decline" if what == "decline" else "renew"
        if what != "decline":
            form[f"years_{sid}"] = str(what)
    return services.run(pages.submit_page, ids["token"], form, actor="web:renewal-page")


def invoices(services):
    """(number, status, total) of every invoice, oldest first."""
    return services.run(lambda tx: [(i.number, i.status.value, i.total_minor) for i in tx.session.scalars(
        select(Invoice).order_by(Invoice.id))], readonly=True)


def open_invoices(services):
    return [i for i in invoices(services) if i[1] in ("issued", "partially_paid")]


def service(services, sid):
    def op(tx):
        svc = tx.session.get(Service, sid)
        tx.session.expunge(svc)
        return svc
    return services.run(op, readonly=True)


def history(services, sid):
    return services.run(lambda tx: [(e.from_status, e.to_status, e.reason) for e in tx.session.scalars(
        select(ServiceEvent).where(ServiceEvent.service_id == sid).order_by(ServiceEvent.id))], readonly=True)


def pay(services, number, amount=None):
    return execute(services, f"invoice paid {number}" + (f" {amount}" if amount else ""), as_user="U0BILL")


def sweep(services, day):
    at = dt.datetime.combine(day, dt.time(8), tzinfo=UTC)
    services.clock.set(at)
    return run_sweeps(services, at)


# -- one renewal, one invoice ------------------------------------------------------------------------

def test_redeciding_replaces_the_invoice_and_declining_voids_it(services, acme):
    """The user's sequence: renew a.test 3 years, then all five 2 years, then decline all. Each new decision for
    the same expiry voids the invoice it replaces (the client is told which, once), so at most one renewal invoice
    is open at a time, and after the decline none is: nothing is left to dun for five cancelled services."""
    submit(services, acme, {"a.test": 3})
    ((first, _, total),) = open_invoices(services)
    assert total == 3600
    submit(services, acme, {n: 2 for n in NAMES})
    assert [(n, s) for n, s, _ in invoices(services)][0] == (first, "void")
    ((second, _, total),) = open_invoices(services)
    assert total == 5 * 2400
    replaced = text_of(outbound(services, "renewal_confirmation")[-1])
    assert f"replaces invoice {first}" in replaced and second in replaced
    submit(services, acme, {n: "decline" for n in NAMES})
    assert open_invoices(services) == []
    assert [s for _, s, _ in invoices(services)] == ["void", "void"]
    assert {service(services, acme[n]).status.value for n in NAMES} == {"cancelled"}
    declined = text_of(outbound(services, "renewal_confirmation")[-1])
    assert f"invoice {second} is void" in declined.replace("\n", " ")


def test_the_same_form_submitted_again_is_one_decision(services, acme):
    """Back and submit again on the renewal page: the second submit records nothing new, raises no second invoice
    and sends no second confirmation; it still shows what is recorded."""
    form = {"a.test": 2, "b.test": "decline"}
    submit(services, acme, form)
    again = submit(services, acme, form)
    assert again.status == "applied" and again.applied == ["renewed a.test for 2 years", "declined b.test"]
    assert len(invoices(services)) == 1 and len(open_invoices(services)) == 1
    assert services.run(lambda tx: len(tx.session.scalars(select(RenewalDecision)).all()), readonly=True) == 2
    assert len(outbound(services, "renewal_confirmation")) == 1


def test_concurrent_submits_of_one_form_are_one_decision(services, acme):
    """Four submits of the same form at the same instant (threads on the page's POST path, on SQLite and on
    PostgreSQL): one decision per service and one invoice, and none of the submits fails."""
    errors = at_once(lambda: submit(services, acme, {"a.test": 1, "b.test": 1}), n=4)
    assert errors == []
    assert len(invoices(services)) == 1
    assert services.run(lambda tx: len(tx.session.scalars(select(RenewalDecision)).all()), readonly=True) == 2


def test_an_automatic_renewal_is_replaced_like_any_other_decision(services):
    """Auto-renew raises the term's invoice; when the client then renews for 3 years instead, the automatic
    invoice is voided and the new one is the only open invoice for that expiry."""
    expiry = add_months(TODAY, 3)
    ids = make_account(services, "acme", {"a.test": str(expiry)})
    services.run(lambda tx: setattr(tx.session.get(Service, ids["a.test"]), "auto_renew", True))
    sweep(services, TODAY)
    ((auto, _, _),) = open_invoices(services)
    token = execute(services, "renewal link acme", as_user=None).data["url"].rsplit("/", 1)[1]
    services.run(pages.submit_page, token, {f"decision_{ids['a.test']}": "renew", f"years_{ids['a.test']}": "3"},
                 actor="web:renewal-page")
    assert invoices(services)[0][:2] == (auto, "void")
    ((_, _, total),) = open_invoices(services)
    assert total == 3 * 1200


def test_a_decline_after_a_part_payment_voids_the_invoice_and_tells_staff(services, acme):
    """A decline voids the renewal invoice even when part of it was paid: the part paid becomes credit on the
    account, and staff are told in the staff channel to settle it with the client."""
    services.settings = services.settings.replace(slack_channel="C0STAFF", slack_bot_token="xoxb-test")
    submit(services, acme, {"a.test": 2})
    ((number, _, _),) = open_invoices(services)
    pay(services, number, "10.00")
    submit(services, acme, {"a.test": "decline"})
    assert invoices(services) == [(number, "void", 2400)]
    from handlers.billing.ledger import position
    assert services.run(position, acme["account"], readonly=True) == 1000
    posts = services.run(lambda tx: [p.payload["text"] for p in tx.session.scalars(select(SlackPost))],
                         readonly=True)
    told = [t for t in posts if number in t and "credit" in t]
    assert len(told) == 1 and "10.00 EUR" in told[0]


# -- a renewal completes -------------------------------------------------------------------------------

def test_a_paid_renewal_moves_the_expiry_once_and_starts_the_next_cycle(services, acme):
    """Paying the renewal invoice completes the renewal: the expiry moves forward by the years chosen, the
    service's history says so, the decision is marked completed, and the next cycle's reminders go out from
    the new date. Completing again (the hook run twice, or `renewal done` after payment) moves nothing."""
    submit(services, acme, {"a.test": 2})
    ((number, _, _),) = open_invoices(services)
    pay(services, number)
    new = add_months(EXPIRY, 24)
    svc = service(services, acme["a.test"])
    assert (svc.expires_on, svc.status.value) == (new, "active")
    assert any(f"renewed for 2 years: expires {new} (was {EXPIRY})" in r for _, _, r in history(services, svc.id))
    assert services.run(lambda tx: tx.session.scalar(select(RenewalDecision.completed_at)), readonly=True)
    from handlers.renewals.completion import invoice_paid
    services.run(lambda tx: invoice_paid(tx, tx.session.scalar(select(Invoice))))
    with pytest.raises(Conflict, match="completed"):
        execute(services, "renewal done a.test", as_user="U0BILL")
    assert service(services, acme["a.test"]).expires_on == new
    three_months_before = add_months(new, -3)
    services.clock.set(dt.datetime.combine(three_months_before, dt.time(8), tzinfo=UTC))
    reminders.sweep(services, services.clock.now())
    assert "a.test" in text_of(outbound(services, "renewal_reminder")[-1])


def test_the_sales_contact_is_asked_to_renew_only_once_paid(services, acme):
    """By default the sales contact hears of a renewal only when its invoice is paid (once, however it is paid);
    with RENEWDESK_RENEW_BEFORE_PAYMENT=on they are asked at the decision, and not again on payment."""
    submit(services, acme, {"a.test": 1})
    assert outbound(services, "renewal_sales") == []
    ((number, _, _),) = open_invoices(services)
    pay(services, number)
    (sales,) = outbound(services, "renewal_sales")
    assert "a.test" in text_of(sales) and "paid" in text_of(sales)
    services.settings = services.settings.replace(renew_before_payment="on")
    submit(services, acme, {"b.test": 1})
    assert len(outbound(services, "renewal_sales")) == 2
    ((number, _, _),) = open_invoices(services)
    pay(services, number)
    assert len(outbound(services, "renewal_sales")) == 2


def test_staff_complete_a_renewal_billed_by_hand(services, acme):
    """With renewal invoices off, `renewal done SERVICE` moves the expiry by the years decided, once; `--expires`
    sets the new expiry for a service renewed without a decision; readonly staff are refused; bad input is a
    clear error; every completion is in the audit log."""
    services.settings = services.settings.replace(renewal_invoices="off")
    submit(services, acme, {"a.test": 3})
    assert invoices(services) == []
    with pytest.raises(NotAllowed):
        execute(services, "renewal done a.test", as_user="U0RO")
    reply = execute(services, "renewal done a.test", as_user="U0BILL")
    assert service(services, acme["a.test"]).expires_on == add_months(EXPIRY, 36)
    assert str(add_months(EXPIRY, 36)) in reply.text
    with pytest.raises(Conflict):
        execute(services, "renewal done a.test", as_user="U0BILL")
    with pytest.raises(Conflict, match="--expires"):
        execute(services, "renewal done b.test", as_user="U0BILL")
    with pytest.raises(InvalidInput, match="--expires"):
        execute(services, "renewal done b.test --expires 2028-13-01", as_user="U0BILL")
    with pytest.raises(InvalidInput, match="after"):
        execute(services, f"renewal done b.test --expires {EXPIRY}", as_user="U0BILL")
    execute(services, "renewal done b.test --expires 2028-06-30", as_user="U0BILL")
    assert service(services, acme["b.test"]).expires_on == D("2028-06-30")
    audit = services.run(lambda tx: [a.detail for a in tx.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "renewal.done"))], readonly=True)
    assert [a["new_expiry"] for a in audit] == [str(add_months(EXPIRY, 36)), "2028-06-30"]


def test_renewal_done_names_who_completed_it_not_their_actor_id(services, acme):
    """`renewal done` refused for a renewal already completed says who completed it in words (the staff member's
    name, or "our staff" for the command line), never the actor id (`cli`, `staff:U...`); so does the history."""
    services.settings = services.settings.replace(renewal_invoices="off")
    services.run(lambda tx: tx.session.add(StaffMember(slack_user_id="U0ANN", role=Role.billing, name="Ann Staff",
                                                       added_at=tx.now, added_by="t")))
    submit(services, acme, {"a.test": 1, "b.test": 1})
    execute(services, "renewal done a.test", as_user=None)
    execute(services, "renewal done b.test", as_user="U0ANN")
    with pytest.raises(Conflict) as by_cli:
        execute(services, "renewal done a.test", as_user="U0BILL")
    with pytest.raises(Conflict) as by_ann:
        execute(services, "renewal done b.test", as_user="U0BILL")
    assert f"was completed on {TODAY} by our staff (command line);" in by_cli.value.message
    assert f"was completed on {TODAY} by Ann Staff;" in by_ann.value.message
    reasons = [r for sid in (acme["a.test"], acme["b.test"]) for _, _, r in history(services, sid)]
    assert any(r.endswith("completed by hand by our staff (command line)") for r in reasons)
    assert any(r.endswith("completed by hand by Ann Staff") for r in reasons)
    for text in (by_cli.value.message, by_ann.value.message, *reasons):
        assert "(cli)" not in text and "U0ANN" not in text


def test_renewal_done_names_a_removed_or_unknown_service_as_a_service(services, acme):
    """`renewal done` takes a SERVICE: a removed one is refused as removed (nothing to complete), a name that is
    no service as no service, each with the SERVICE hint; neither is answered as if an account were missing."""
    make_account(services, "fox", {"f.test": (str(EXPIRY), "removed")})
    with pytest.raises(Conflict) as removed:
        execute(services, "renewal done f.test", as_user="U0BILL")
    with pytest.raises(NotFound) as unknown:
        execute(services, "renewal done nope.test", as_user="U0BILL")
    assert removed.value.message == "f.test (Fox Ltd) was removed; there is nothing to complete"
    assert unknown.value.message == "no service matches `nope.test`"
    for err in (removed.value, unknown.value):
        assert "account" not in err.message and err.hint.startswith("renewal done SERVICE")
        assert "ACCOUNT is an account id" not in err.hint


def test_a_service_past_its_expiry_and_not_renewed_is_expired_until_renewed(services):
    """The daily sweep marks an active service whose expiry has passed `expired`, with a history entry; paying
    its renewal afterwards brings it back to active with the new expiry."""
    gone = TODAY - dt.timedelta(days=2)
    ids = make_account(services, "acme", {"late.test": str(gone)})
    sweep(services, TODAY)
    assert service(services, ids["late.test"]).status.value == "expired"
    assert history(services, ids["late.test"])[-1][:2] == ("active", "expired")
    token = execute(services, "renewal link acme", as_user=None).data["url"].rsplit("/", 1)[1]
    services.run(pages.submit_page, token, {f"decision_{ids['late.test']}": "renew",
                                            f"years_{ids['late.test']}": "1"}, actor="web:renewal-page")
    ((number, _, _),) = open_invoices(services)
    services.run(payments.record, ids["account"], 1200, invoices=[number], actor="staff:U0BILL")
    svc = service(services, ids["late.test"])
    assert (svc.status.value, svc.expires_on) == ("active", add_months(gone, 12))
    assert services.run(lambda tx: tx.session.scalar(select(Invoice.status)), readonly=True) == InvoiceStatus.paid


def test_declining_one_domain_of_a_shared_invoice_carries_the_other_onto_a_new_invoice(services, acme):
    """a.test and b.test renewed on one invoice, then b.test declined on its own: the shared invoice is void
    and a.test's renewal, which nobody changed, is invoiced again on its own (it used to be left with no
    invoice at all, so it could never complete by payment)."""
    submit(services, acme, {"a.test": 1, "b.test": 1})
    assert [(status, total) for _, status, total in invoices(services)] == [("issued", 2400)]
    submit(services, acme, {"b.test": "decline"})
    assert [(status, total) for _, status, total in invoices(services)] == [("void", 2400), ("issued", 1200)]
    number = open_invoices(services)[0][0]
    services.run(payments.record, acme["account"], 1200, invoices=[number], actor="test")
    assert service(services, acme["a.test"]).expires_on == add_months(EXPIRY, 12)


def test_a_renewal_invoice_that_credit_pays_when_it_is_raised_completes_the_renewal(services, acme):
    """Credit on the account pays the renewal invoice as it is raised: the renewal completes (the expiry
    moves) as it would for a payment. It used to stay paid but never completed, because credit paid it before
    its term held it; a later decline then left the invoice held by no term (found by the ledger model)."""
    services.run(payments.record, acme["account"], 5000, actor="test")  # no invoice open: all credit
    submit(services, acme, {"a.test": 1})
    assert [(status, total) for _, status, total in invoices(services)] == [("paid", 1200)]
    assert service(services, acme["a.test"]).expires_on == add_months(EXPIRY, 12)
