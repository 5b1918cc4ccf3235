"""End to end over real sockets: a contact's mail through the SMTP door becomes a ticket on the
master account, the acknowledgement reaches a local SMTP sink, the client's reply to it (sent to
its Reply-To address) threads, and an out-of-office reply to it is stored and answered by nothing."""
import smtplib

from sqlalchemy import select

from handlers.delivery import Deliverer
from handlers.models import InboundMail, InboundStatus, MessageKind, Ticket
from mail_ingest.process import process_batch
from tests.support.mailflow import make_account, ticket
from tests.support.smtp_sink import SmtpSink


def send(door, raw: bytes, to: str, sender: str = "dev@acme.test") -> None:
    with smtplib.SMTP("127.0.0.1", door.port, timeout=10) as client:
        client.sendmail(sender, [to], raw)


def settle(services) -> None:
    while process_batch(services):
        pass
    Deliverer(services).deliver_due()


def test_ticket_acknowledgement_reply_and_out_of_office_over_smtp(services, door):
    acme = make_account(services, "acme", "boss@acme.test", ("dev@acme.test", ["tickets"]))
    with SmtpSink() as sink:
        services.settings = services.settings.replace(outbound_smtp_url=sink.url)
        send(door, b"From: Dev <dev@acme.test>\r\nTo: support@desk.example.test\r\nSubject: Site down\r\n"
                   b"Message-ID: <first@acme.test>\r\n\r\nOur site is down.\r\n", "support@desk.example.test")
        settle(services)
        [ack] = sink.messages
        ack_msg = ack.message
        with services.db.transaction(readonly=True) as s:
            t = s.scalar(select(Ticket))
            tid, account_id = t.id, t.account_id
        assert account_id == acme
        assert sorted(ack.rcpt_tos) == ["boss@acme.test", "dev@acme.test"]
        assert ack_msg["Subject"] == f"[#T-{tid}] Site down" and ack_msg["In-Reply-To"] == "<first@acme.test>"

        reply_to = ack_msg["Reply-To"].addresses[0].addr_spec
        reply = (f"From: Dev <dev@acme.test>\r\nTo: {reply_to}\r\nSubject: Re: {ack_msg['Subject']}\r\n"
                 f"Message-ID: <second@acme.test>\r\nIn-Reply-To: {ack_msg['Message-ID']}\r\n"
                 f"References: <first@acme.test> {ack_msg['Message-ID']}\r\n\r\nIt is back, thanks!\r\n\r\n"
                 f"On Sat, Support wrote:\r\n> we have your message\r\n").encode()
        send(door, reply, reply_to)
        ooo = (f"From: Boss <boss@acme.test>\r\nTo: support@desk.example.test\r\nSubject: Out of office: "
               f"{ack_msg['Subject']}\r\nAuto-Submitted: auto-replied\r\nMessage-ID: <ooo@acme.test>\r\n"
               f"In-Reply-To: {ack_msg['Message-ID']}\r\n\r\nI am away until Monday.\r\n").encode()
        send(door, ooo, "support@desk.example.test", sender="boss@acme.test")
        settle(services)
        assert len(sink.messages) == 1                      # neither the reply nor the auto-reply is answered

    t = ticket(services, tid)
    assert [(m.kind, m.body) for m in t.messages] == [
        (MessageKind.client, "Our site is down."), (MessageKind.client, "It is back, thanks!"),
        (MessageKind.auto, "I am away until Monday.")]
    with services.db.transaction(readonly=True) as s:
        rows = list(s.scalars(select(InboundMail).order_by(InboundMail.id)))
        assert [(r.status, r.ticket_id) for r in rows] == [(InboundStatus.done, tid)] * 3
        assert rows[1].recipient == reply_to and "address" in rows[1].reason
