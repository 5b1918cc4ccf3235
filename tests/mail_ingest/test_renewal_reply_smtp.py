"""A reply to a renewal reminder, sent to its `renew+<token>@` address through the real SMTP door,
is decided by the inbox processor: the decisions are applied, recorded with the inbound message,
and confirmed by email; the same reply from a stranger changes nothing."""
import datetime as dt
import smtplib

from sqlalchemy import select

from handlers.models import InboundMail, InboundStatus, RenewalDecision
from mail_ingest.process import process_batch
from tests.support.renewals import D, make_account, outbound, reminder_token

TODAY = D("2026-11-21")


def send(services, door, sender, rcpt, body, n):
    raw = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: Re: Renewal reminder\r\nMessage-ID: <rr{n}@client.test>\r\n"
           f"\r\n{body}\r\n").encode()
    with smtplib.SMTP("127.0.0.1", door.port, timeout=10) as client:
        client.sendmail(sender, [rcpt], raw)
    while process_batch(services):
        pass


def test_a_renewal_reply_through_the_door_is_decided_once_and_confirmed(services, door):
    ids = make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=5))},
                       contacts=[("dev@acme.test", ["renewals"], True)])
    token = reminder_token(services, TODAY)
    rcpt = f"renew+{token}@desk.example.test"
    send(services, door, "mallory@evil.test", rcpt, "decline all", 1)
    send(services, door, "dev@acme.test", rcpt, "renew a.test 2 years", 2)
    with services.db.transaction(readonly=True) as s:
        rows = list(s.scalars(select(InboundMail).order_by(InboundMail.id)))
        got = s.execute(select(RenewalDecision.service_id, RenewalDecision.action, RenewalDecision.period_years,
                               RenewalDecision.inbound_mail_id)).all()
    assert [(r.status, r.rule) for r in rows] == [(InboundStatus.done, "renewal_reply")] * 2
    assert [(sid, str(action), years, mail) for sid, action, years, mail in got] == [
        (ids["a.test"], "renew", 2, rows[1].id)]
    [confirmation] = outbound(services, "renewal_confirmation")
    assert confirmation.recipients == ["dev@acme.test"] and "a.test" in confirmation.subject + confirmation.raw.decode()
    assert not any("mallory@evil.test" in m.recipients for m in outbound(services))
