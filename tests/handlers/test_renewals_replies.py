"""Renewal decisions by email reply: the grammar, who may decide, and that bad input changes nothing."""
import datetime as dt
import itertools
import re

import pytest
from sqlalchemy import select

from handlers.billing import payments
from handlers.mail_facts import MailFacts
from handlers.models import AuditEvent, Invoice, RenewalDecision, Service, ServiceEvent, ServiceStatus
from handlers.renewals.grammar import parse_reply
from handlers.renewals.replies import handle_reply
from tests.support.renewals import D, make_account, outbound, parsed, reminder_token, store_inbound, text_of

TODAY = D("2026-11-21")
_n = itertools.count(1)


@pytest.fixture
def acme(services):
    ids = make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=5)),
                                          "b.test": str(TODAY + dt.timedelta(days=5))},
                       sales="sales@reseller.test",
                       contacts=[("dev@acme.test", ["renewals"], True), ("web@acme.test", ["tickets"], True)])
    ids["token"] = reminder_token(services, TODAY)
    return ids


def reply(services, token, body, sender="dev@acme.test", automatic=False, auth=None, subject="Re: Renewal reminder"):
    n = next(_n)
    rcpt = f"renew+{token}@desk.example.test"
    raw = f"From: {sender}\r\nTo: {rcpt}\r\nMessage-ID: <r{n}@client.test>\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    inbound = store_inbound(services, raw.encode(), rcpt)
    facts = MailFacts(inbound_id=inbound, recipient=rcpt, sender=sender, sender_name="", subject=subject,
                      message_id=f"<r{n}@client.test>", in_reply_to=None, references=(), text=body, reply_text=body,
                      received_at=services.clock.now(), automatic=automatic, auth=auth or {})
    return services.run(handle_reply, facts, token, actor="system:inbox")


def decisions(services):
    with services.db.transaction(readonly=True) as s:
        return s.execute(select(RenewalDecision.service_id, RenewalDecision.action, RenewalDecision.period_years,
                                RenewalDecision.actor, RenewalDecision.auth_method, RenewalDecision.channel,
                                RenewalDecision.inbound_mail_id).order_by(RenewalDecision.id)).all()


def statuses(services):
    with services.db.transaction(readonly=True) as s:
        return dict(s.execute(select(Service.name, Service.status)).all())


def sent_after_reminders(services):
    return [m for m in outbound(services) if m.intent != "renewal_reminder"]


def test_grammar_lines():
    """Each documented form, in any case; periods 1 to 10; greetings ignored; the rest not understood."""
    p = parse_reply("Hi,\nRENEW a.test\nrenew B.test 3 years\ndecline c.test\n- renew all 2 years\nThanks, Ann")
    assert [(d.action.value, d.targets, d.years) for d in p.decisions] == [
        ("renew", ("a.test",), None), ("renew", ("b.test",), 3), ("decline", ("c.test",), None),
        ("renew", ("*",), 2)]
    assert p.problems == []
    bad = parse_reply("renew a.test 11 years\nrenew a.test 0 years\ndecline a.test 2 years\nplease renew it")
    assert len(bad.problems) == 4 and bad.decisions == []


def test_renew_and_decline_are_recorded_confirmed_and_sent_to_sales(services, acme):
    """Decisions carry actor, auth method, channel and the message; the decline moves the service to
    cancelled in its history; the sender gets exactly what was recorded; the sales contact is told."""
    reason = reply(services, acme["token"], "renew a.test 2 years\ndecline b.test")
    assert reason == "renewal reply: renewed a.test for 2 years; declined b.test"
    rows = decisions(services)
    assert [(r.service_id, r.action.value, r.period_years, r.auth_method, r.channel) for r in rows] == [
        (acme["a.test"], "renew", 2, "reply_token", "email"), (acme["b.test"], "decline", None, "reply_token", "email")]
    assert rows[0].actor.startswith("contact:") and rows[0].inbound_mail_id is not None
    assert statuses(services) == {"a.test": ServiceStatus.active, "b.test": ServiceStatus.cancelled}
    with services.db.transaction(readonly=True) as s:
        events = s.scalars(select(ServiceEvent).order_by(ServiceEvent.id)).all()
        assert [(e.from_status, e.to_status) for e in events] == [("active", "active"), ("active", "cancelled")]
        assert events[0].reason == "renewal requested for 2 years (reply_token, by email)"
    by_intent = {m.intent: m for m in sent_after_reminders(services)}
    assert sorted(by_intent) == ["invoice_new", "renewal_confirmation", "renewal_sales"]  # the renewal's invoice
    confirmation, sales = by_intent["renewal_confirmation"], by_intent["renewal_sales"]
    assert confirmation.recipients == ["dev@acme.test"]
    text = text_of(confirmation)
    assert "- renewed a.test for 2 years (expires 2026-11-26)" in text and "- declined b.test (expires" in text
    assert parsed(confirmation)["In-Reply-To"].endswith("@client.test>")  # threaded under the client's reply
    # the decline is news now; the renewal is asked for once its invoice is paid
    assert sales.recipients == ["sales@reseller.test"] and "declined b.test" in text_of(sales)
    assert "renewed a.test" not in text_of(sales)


def test_confirmations_keep_each_sentence_apart_and_answer_with_one_re(services, acme):
    """Every confirmation (an invoice raised, one replacing a void one, a decline voiding a partly paid one) puts
    each of its sentences where it belongs: "...pay it by DATE.", "...which is void.", "...in touch about it."
    each end their line, and "To change a decision" starts its own. Its subject has one "Re:", whatever
    prefixes the client's reply had; so do the answers to a reply not understood."""
    reply(services, acme["token"], "renew a.test 2 years")
    reply(services, acme["token"], "renew a.test 3 years", subject="RE: Re: Renewal reminder")
    number = services.run(lambda tx: tx.session.scalar(select(Invoice.number).order_by(Invoice.id.desc())),
                          readonly=True)
    services.run(payments.record, acme["account"], 500, invoices=[number], actor="staff:U0BILL")
    reply(services, acme["token"], "decline a.test", subject="Aw: Renewal reminder")
    reply(services, acme["token"], "please call me", subject="Re: Re: Renewal reminder")
    mails = outbound(services, "renewal_confirmation")
    assert len(mails) == 3
    texts = [text_of(m) for m in mails]
    assert re.search(r"please pay it by \d{4}-\d\d-\d\d\.\n", texts[0])
    assert re.search(r"It replaces invoice \S+, which is void\.\n", texts[1])
    assert re.search(r"\nThe renewal invoice \S+ is void: there is nothing to pay on it\.\n", texts[2])
    assert re.search(r"\nThe 5\.00 EUR paid on invoice \S+ is credit on your account; we will be in touch about it\.\n",
                     texts[2])
    for text in texts:
        assert re.search(r"\n\nTo change a decision, visit http://\S+/renew/[a-z2-7]{24}\n", text)
        assert not re.search(r"[.:;][A-Z]", text), text
    (unclear,) = outbound(services, "renewal_reply_unclear")
    assert [parsed(m)["Subject"] for m in [*mails, unclear]] == ["Re: Renewal reminder"] * 4


def test_renew_all_uses_the_reminders_period_and_covers_its_services(services, acme):
    assert reply(services, acme["token"], "renew all") == ("renewal reply: renewed a.test for 1 year; "
                                                            "renewed b.test for 1 year")


def test_mixed_understood_and_not_understood_applies_nothing(services, acme):
    """One line not understood (or a name not in the reminder): nothing applied, the answer lists both."""
    reason = reply(services, acme["token"], "renew a.test 2 years\nand please call me\ndecline other.test")
    assert reason.startswith("renewal reply not understood: applied nothing (2 line(s) not understood, 1 understood)")
    assert decisions(services) == []
    assert statuses(services) == {"a.test": ServiceStatus.active, "b.test": ServiceStatus.active}
    (answer,) = sent_after_reminders(services)
    text = text_of(answer)
    assert answer.recipients == ["dev@acme.test"] and "nothing was changed" in text
    assert '"and please call me": not a decision' in text and "other.test: not among the services" in text
    assert "We understood:\n- renew a.test for 2 years" in text
    assert f"/renew/{acme['token']}" in text


def test_contradicting_lines_apply_nothing(services, acme):
    assert reply(services, acme["token"], "renew a.test\ndecline a.test").startswith("renewal reply not understood")
    assert decisions(services) == []


def test_unknown_sender_decline_is_refused_silently(services, acme):
    """A stranger holding the token (a forwarded reminder, a guess) changes nothing and hears nothing."""
    reason = reply(services, acme["token"], "decline all", sender="mallory@evil.test")
    assert reason == "renewal reply refused: mallory@evil.test is not a contact of the account; nothing changed"
    assert decisions(services) == [] and sent_after_reminders(services) == []
    assert statuses(services)["a.test"] == ServiceStatus.active


def test_spoofed_from_failing_dmarc_is_refused(services, acme):
    reason = reply(services, acme["token"], "decline all", auth={"dmarc": "fail"})
    assert "failed DMARC" in reason
    assert decisions(services) == [] and sent_after_reminders(services) == []


def test_auto_reply_changes_nothing_and_sends_nothing(services, acme):
    reason = reply(services, acme["token"], "I am out of the office until Monday. decline all", automatic=True)
    assert reason == "renewal reply: automatic reply, nothing changed and nothing sent"
    assert decisions(services) == [] and sent_after_reminders(services) == []


def test_expired_token_is_refused_without_revealing_anything(services, acme, clock):
    """After the token's expiry a known contact is told to use a newer reminder; no service is named."""
    clock.set(dt.datetime(2027, 1, 30, 9, tzinfo=dt.timezone.utc))
    reason = reply(services, acme["token"], "renew all")
    assert reason == "renewal reply refused: expired reply address; the contact was told to use a newer reminder"
    (answer,) = sent_after_reminders(services)
    text = text_of(answer)
    assert "a.test" not in text and "b.test" not in text and "Acme" not in text
    assert decisions(services) == []


def test_foreign_and_made_up_tokens_are_refused(services, acme):
    """Another account's token used by acme's contact, or a made-up one: nothing changes, nothing is revealed."""
    other = make_account(services, "other", {"o.test": str(TODAY + dt.timedelta(days=15))})
    token = reminder_token(services, TODAY)
    assert reply(services, token, "decline all").startswith("renewal reply refused: dev@acme.test is not a contact")
    made_up = reply(services, "a" * 24, "decline all", sender="stranger@evil.test")
    assert made_up == "renewal reply refused: unknown reply address; nothing changed, no answer to an unknown sender"
    assert decisions(services) == [] and sent_after_reminders(services) == []
    assert other["o.test"] and statuses(services)["o.test"] == ServiceStatus.active


def test_contact_without_the_permission_is_told_what_they_may_do_and_whom_to_ask(services, acme):
    reason = reply(services, acme["token"], "renew all", sender="web@acme.test")
    assert reason.endswith("lacks the renewals permission; answered, nothing changed")
    (answer,) = sent_after_reminders(services)
    text = text_of(answer)
    assert "You may use: tickets." in text and "owner@acme.test" in text
    assert decisions(services) == []


def test_sales_contact_may_renew_but_not_decline(services, acme):
    assert reply(services, acme["token"], "decline b.test", sender="sales@reseller.test").startswith(
        "renewal reply not understood")
    assert decisions(services) == []
    assert reply(services, acme["token"], "renew b.test 3 years", sender="sales@reseller.test") == \
        "renewal reply: renewed b.test for 3 years"
    assert decisions(services)[0].actor == "sales_contact"


def test_a_message_processed_twice_applies_once(services, acme):
    body = "renew a.test"
    n = next(_n)
    rcpt = f"renew+{acme['token']}@desk.example.test"
    inbound = store_inbound(services, f"From: dev@acme.test\r\nMessage-ID: <x{n}@c>\r\n\r\n{body}\r\n".encode(), rcpt)
    facts = MailFacts(inbound, rcpt, "dev@acme.test", "", "Re", f"<x{n}@c>", None, (), body, body,
                      services.clock.now())
    first = services.run(handle_reply, facts, acme["token"])
    again = services.run(handle_reply, facts, acme["token"])
    assert first == "renewal reply: renewed a.test for 1 year"
    assert again == "renewal reply: already applied (this message was processed before)"
    assert len(decisions(services)) == 1


def test_every_refusal_is_audited(services, acme):
    reply(services, acme["token"], "decline all", sender="mallory@evil.test")
    with services.db.transaction(readonly=True) as s:
        (event,) = s.scalars(select(AuditEvent).where(AuditEvent.action == "renewal.reply_refused")).all()
        assert event.detail["reason"] == "not a contact of the account"


def _facts_from_raw(services, raw: bytes, rcpt: str) -> MailFacts:
    """What the inbox processor hands over, built the processor's way: parse, classify, strip."""
    from mail_ingest.classify import Envelope, classify
    from mail_ingest.parse import parse
    from mail_ingest.strip import strip_reply
    inbound = store_inbound(services, raw, rcpt)
    mail = parse(raw)
    verdict = classify(mail, Envelope(mail.from_addr or "", rcpt), services.settings)
    return MailFacts(inbound_id=inbound, recipient=rcpt, sender=(mail.from_addr or "").lower(),
                     sender_name=mail.from_name or "", subject=mail.subject, message_id=mail.message_id,
                     in_reply_to=mail.in_reply_to, references=tuple(mail.references), text=mail.text,
                     reply_text=strip_reply(mail.text), received_at=services.clock.now(),
                     automatic=verdict.kind in ("auto_reply", "bulk", "list"))


def test_a_real_reply_quoting_the_reminder_is_read_above_the_quote(services, acme):
    """From raw bytes: the quoted reminder (which itself shows "renew ..." examples) and the signature
    are cut; only the client's two lines are decisions. The same reply marked Auto-Submitted changes nothing."""
    reminder = next(m for m in outbound(services, "renewal_reminder") if m.recipients == ["dev@acme.test"])
    quoted = "\n".join("> " + line for line in text_of(reminder).splitlines())
    rcpt = f"renew+{acme['token']}@desk.example.test"

    def raw(extra=""):
        n = next(_n)
        return (f"From: Dana Devi <Dev@Acme.test>\nTo: {rcpt}\nSubject: Re: {reminder.subject}\n"
                f"Message-ID: <p{n}@acme.test>\nIn-Reply-To: {reminder.message_id}\n{extra}"
                "Content-Type: text/plain; charset=utf-8\n\n"
                "Renew a.test 2 years\ndecline b.test\n\nThanks,\nDana\n\n"
                "On Sat, 21 Nov 2026 at 08:00, Example Hosting <support@desk.example.test> wrote:\n"
                f"{quoted}\n").encode()

    auto = _facts_from_raw(services, raw("Auto-Submitted: auto-replied\n"), rcpt)
    assert auto.automatic
    assert services.run(handle_reply, auto, acme["token"]) == ("renewal reply: automatic reply, "
                                                                "nothing changed and nothing sent")
    facts = _facts_from_raw(services, raw(), rcpt)
    assert not facts.automatic
    assert services.run(handle_reply, facts, acme["token"]) == ("renewal reply: renewed a.test for 2 years; "
                                                                 "declined b.test")
