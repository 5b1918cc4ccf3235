"""Billing from the staff side: roles, the digest, real delivery of dunning mail, and `renewdesk sweep --dry-run`."""
import datetime as dt

import pytest
from sqlalchemy import func, select

from handlers.billing import digest
from handlers.delivery import Deliverer
from handlers.errors import Conflict, InvalidInput, NotAllowed
from handlers.models import Notice, OutboundMail, Role, StaffMember
from handlers.staff import execute
from tests.handlers.billing_helpers import account, invoice, load, mails, state, sweep
from tests.support.proc import env_for, run
from tests.support.smtp_sink import SmtpSink

LINES = [("Hosting, one month", "10.00", "1.90")]


def _team(services):
    def op(tx):
        for uid, role in (("UADMIN", "admin"), ("UBILL", "billing"), ("USUP", "support"), ("UREAD", "readonly")):
            tx.session.add(StaffMember(slack_user_id=uid, role=Role(role), added_at=tx.now, added_by="test"))
    services.run(op)


def _accounts(services):
    load(services, account("acme", invoices=[invoice("A-1", "2026-11-01", "2026-11-15", LINES)]),
         account("paper", invoicing="paper", invoices=[invoice("P-1", "2026-11-01", "2026-11-18", LINES)]))


@pytest.mark.parametrize("words", ["invoice paid A-1", "invoice void A-1 dup", "invoice remind A-1",
                                   "payment record acme 5", "charge add acme 5 fee", "credit-limit acme 5",
                                   "suspend acme", "unsuspend acme", "hold acme", "unhold acme", "digest"])
def test_readonly_and_support_staff_are_refused_every_billing_change(services, words):
    _team(services)
    _accounts(services)
    before = state(services, "acme")
    for uid, role in (("UREAD", "readonly"), ("USUP", "support")):
        with pytest.raises(NotAllowed, match=f"needs the admin or billing role; you are {role}"):
            execute(services, words, as_user=uid)
    assert state(services, "acme") == before


def test_readonly_staff_may_look_and_billing_staff_may_act(services):
    _team(services)
    _accounts(services)
    assert execute(services, "invoice list --overdue", as_user="UREAD").data["invoices"][0]["number"] == "A-1"
    assert execute(services, "forecast --days 2", as_user="UREAD").data["days"]
    reply = execute(services, "payment record acme 11.90 --ref BANK-1", as_user="UBILL")
    assert reply.data["invoices"][0]["left"]["amount"] == "0.00"
    audit = services.run(lambda tx: tx.session.scalar(select(func.count()).select_from(OutboundMail)), readonly=True)
    assert audit == 1


def test_suspend_names_the_service_or_the_account_and_refuses_twice(services):
    _accounts(services)
    execute(services, "suspend 'Hosting acme' abuse complaint", as_user=None)
    assert state(services, "acme")["services"] == {"Hosting acme": "suspended"}
    assert state(services, "acme")["status"] == "active"
    with pytest.raises(InvalidInput, match="`host` names several services") as err:
        execute(services, "suspend host", as_user=None)  # both accounts have a service with the ref "host"
    assert "ACCOUNT/SERVICE" in err.value.hint
    with pytest.raises(Conflict, match="suspended by staff already"):
        execute(services, "suspend acme/host", as_user=None)
    with pytest.raises(Conflict, match="has no open suspension"):
        execute(services, "unsuspend acme", as_user=None)
    reply = execute(services, "unsuspend acme/host", as_user=None)
    assert reply.data["restored"] == ["Hosting acme"]
    with pytest.raises(InvalidInput, match="must not be empty"):
        execute(services, "suspend ''", as_user=None)
    with pytest.raises(InvalidInput, match="is in the past"):
        execute(services, "hold acme --until 2026-01-01", as_user=None)


def test_dunning_mail_is_delivered_to_billing_contacts_only(services, clock):
    """The overdue notice leaves through a real SMTP server, to the owner and the billing contact, as
    automatic mail (RFC 3834); the paper account's notice goes nowhere."""
    _accounts(services)
    sweep(services, clock, "2026-11-20")
    with SmtpSink() as sink:
        services.settings = services.settings.replace(outbound_smtp_url=sink.url)
        report = Deliverer(services).deliver_due()
        assert report.sent == 1
        [got] = sink.messages
    msg = got.message
    assert sorted(got.rcpt_tos) == ["bill@acme.test", "owner@acme.test"]
    assert msg["Subject"] == "Overdue: invoice A-1, 11.90 EUR unpaid since 2026-11-15"
    assert msg["Auto-Submitted"] == "auto-generated" and msg["From"].addresses[0].username == "billing"
    body = msg.get_body(("plain",)).get_content()
    assert "Hosting, one month: 10.00 EUR + tax 1.90 EUR" in body and "Left to pay: 11.90 EUR" in body


def test_daily_digest_is_emailed_once_and_lists_what_needs_a_person(services, clock):
    services.settings = services.settings.replace(staff_email="desk@reseller.test")
    _accounts(services)
    clock.set(dt.datetime(2026, 11, 19, 9, tzinfo=dt.timezone.utc))
    execute(services, "hold acme --until 2026-11-30 waiting for the bank", as_user=None)
    sweep(services, clock, "2026-11-20")
    sweep(services, clock, "2026-11-20")
    sent = mails(services, "staff_digest")
    assert sent == [("staff_digest", ["desk@reseller.test"],
                     "Daily digest 2026-11-20: 2 overdue, 0 action(s) tomorrow, 0 new ticket(s)")]
    content = services.run(digest.build, readonly=True)
    by_title = {s["title"]: s["items"] for s in content["sections"]}
    assert by_title["Held accounts"] == ["Acme Ltd until 2026-12-01 00:00: waiting for the bank"]
    assert by_title["Notices to send by hand (letter or call)"] == [
        "Paper Ltd: invoice overdue +1d for P-1 (paper invoicing)"]
    assert [i.split(":")[0] for i in by_title["Invoices falling due and overdue"]] == ["A-1 Acme Ltd", "P-1 Paper Ltd"]
    manual = execute(services, "digest", as_user=None)
    assert manual.data["emailed_to"] == ["desk@reseller.test"] and "Held accounts:" in manual.text
    assert len(mails(services, "staff_digest")) == 2


def test_sweep_dry_run_from_the_command_line_changes_nothing(services, settings, tmp_path):
    if not settings.is_sqlite:
        pytest.skip("one database is enough for the command line")
    _accounts(services)
    env = env_for(DATABASE_URL=settings.database_url, RENEWDESK_SECRET_KEY="x")
    out = run("sweep", "--dry-run", "--at", "2026-11-21T08:00:00+00:00", env=env)
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    assert "sweep as of 2026-11-21T08:00+00:00 (dry run):" in text
    assert "invoice_notices: Acme Ltd: overdue notice +5d for A-1" in text
    assert "no email: paper invoicing, listed in the digest" in text
    counts = services.run(lambda tx: (tx.session.scalar(select(func.count()).select_from(OutboundMail)),
                                      tx.session.scalar(select(func.count()).select_from(Notice))), readonly=True)
    assert counts == (0, 0)
