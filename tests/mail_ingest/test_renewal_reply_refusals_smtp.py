"""Renewal replies that must change nothing, through the real SMTP door: a reply with a line not understood
applies none of its lines and is answered with what was understood and the page link; a reply to an unknown
token is answered only when it comes from a known contact, and names no service."""
import datetime as dt

from sqlalchemy import select

from handlers.models import InboundMail, InboundStatus, Invoice, RenewalDecision
from tests.mail_ingest.test_renewal_reply_smtp import send
from tests.support.renewals import D, count, make_account, outbound, reminder_token, text_of

TODAY = D("2026-11-21")


def inbound(services):
    with services.db.transaction(readonly=True) as s:
        return s.execute(select(InboundMail.status, InboundMail.rule, InboundMail.reason)
                         .order_by(InboundMail.id)).all()


def test_a_partly_understood_reply_applies_nothing_and_answers_with_the_page(services, door):
    """One good line, an unknown name and a bad period: no decision, no invoice, no sales mail; the sender is
    told what was understood and what was not, with the renewal page's link."""
    make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=5)),
                                    "b.test": str(TODAY + dt.timedelta(days=5))},
                 contacts=[("dev@acme.test", ["renewals"], True)])
    token = reminder_token(services, TODAY)
    send(services, door, "dev@acme.test", f"renew+{token}@desk.example.test",
         "renew a.test 2 years\r\ndecline nothere.test\r\nrenew b.test 11 years", 1)
    assert count(services, RenewalDecision) == 0 and count(services, Invoice) == 0
    [(status, rule, outcome)] = inbound(services)
    assert (status, rule) == (InboundStatus.done, "renewal_reply") and "applied nothing" in outcome
    [answer] = outbound(services, "renewal_reply_unclear")
    assert answer.recipients == ["dev@acme.test"]
    text = text_of(answer)
    assert "renew a.test for 2 years" in text and "nothere.test" in text and "11 years" in text
    assert f"http://127.0.0.1:8000/renew/{token}" in text
    assert not outbound(services, "renewal_confirmation") and not outbound(services, "renewal_sales")


def test_an_unknown_token_changes_nothing_and_answers_only_a_known_contact(services, door):
    """"decline all" to a well-formed but unknown token: nothing changes; the stranger hears nothing, the
    account's contact is told to use a newer reminder without any service named."""
    make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=5))},
                 contacts=[("dev@acme.test", ["renewals"], True)])
    token = reminder_token(services, TODAY)
    wrong = "a" * 24 if token != "a" * 24 else "b" * 24
    rcpt = f"renew+{wrong}@desk.example.test"
    send(services, door, "mallory@evil.test", rcpt, "decline all", 1)
    send(services, door, "dev@acme.test", rcpt, "decline all", 2)
    assert count(services, RenewalDecision) == 0
    outcomes = [o for _, _, o in inbound(services)]
    assert "no answer to an unknown sender" in outcomes[0] and "told to use a newer reminder" in outcomes[1]
    [answer] = outbound(services, "renewal_reply_refused")
    assert answer.recipients == ["dev@acme.test"] and "a.test" not in text_of(answer)
    assert not any("mallory@evil.test" in m.recipients for m in outbound(services))
