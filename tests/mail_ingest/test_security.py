"""Only the right people act by mail, and what a client writes can become neither headers nor markup.

Over real sockets on both databases: mail in through the SMTP door, the real processor, outgoing
mail delivered to a local SMTP sink (the bytes a relay would get), the renewal pages over HTTP.

- A stolen ticket reference (subject tag, our Message-ID, the HMAC'd reply address, the body marker,
  all at once) in mail from another account's contact neither changes that ticket nor brings any of
  it back: the answer the spoofer gets holds only what they wrote. A forged From of the right contact
  threads (mail cannot tell; accounts may require DMARC, see tests/handlers/test_tickets_intake.py),
  but every answer goes to the account's own contacts, never to a Reply-To or envelope sender.
  (The tag alone, and forged tokens: test_tickets_intake.py.)
- A decline by email is applied only with the reminder's token of that account, from a contact of
  that account with the renewals permission (a stranger, an unknown token:
  test_renewal_reply_smtp.py and test_renewal_reply_refusals_smtp.py).
- CR/LF and RFC 2047 encoded words in a subject or a contact's name add no header and no recipient,
  and every line of what we send ends in CRLF.
- HTML in client mail (script, event handlers, javascript: links) is never live markup in the
  acknowledgement's HTML part or on the renewal pages.
"""
from __future__ import annotations

import datetime as dt
import html.parser
import re
import smtplib

import httpx
import pytest
from sqlalchemy import func, select

from handlers.delivery import Deliverer
from handlers.models import Account, Contact, RenewalDecision, Service, ServiceStatus, Ticket, TicketMessage
from handlers.tickets import ops, refs
from mail_ingest.process import process_batch
from tests.support import renewals
from tests.support.mailflow import make_account, outbound
from tests.support.smtp_sink import SmtpSink
from tests.support.web import serve

SUPPORT = "support@desk.example.test"
SECRET_TEXT = "The root password is hunter2"
TODAY = renewals.D("2026-11-21")


@pytest.fixture
def sink(services):
    with SmtpSink() as running:
        services.settings = services.settings.replace(outbound_smtp_url=running.url)
        yield running


def send(services, door, raw: bytes, to: str = SUPPORT, envelope_from: str = "x@client.test") -> None:
    with smtplib.SMTP("127.0.0.1", door.port, timeout=10) as client:
        client.sendmail(envelope_from, [to], raw)
    while process_batch(services):
        pass
    Deliverer(services).deliver_due()


def message(sender: str, subject: str, body: str, n: int, **headers: str) -> bytes:
    lines = [f"From: {sender}", f"To: {SUPPORT}", f"Subject: {subject}", f"Message-ID: <sec{n}@client.test>",
             *[f"{k.replace('_', '-')}: {v}" for k, v in headers.items()], "", body, ""]
    return "\r\n".join(lines).encode()


def count(services, model, *where) -> int:
    return services.run(lambda tx: tx.session.scalar(select(func.count()).select_from(model).where(*where)),
                        readonly=True)


@pytest.fixture
def acme_ticket(services, door, sink):
    """Acme's ticket T-1 with a secret in it, acknowledged to dev@ and the owner at the sink."""
    make_account(services, "acme", "boss@acme.test", ("dev@acme.test", ["tickets"]))
    send(services, door, message("Dev <dev@acme.test>", "Site down", SECRET_TEXT, 1))
    [ack] = sink.messages
    return ack.message


def to_mallory(sink) -> list:
    return [m for m in sink.messages if any("mallory" in r for r in m.rcpt_tos)]


def test_every_stolen_reference_at_once_neither_replies_nor_reveals(services, door, sink, acme_ticket):
    make_account(services, "mallory", "m@mallory.test")
    tid = 1
    marker = services.run(lambda tx: refs.body_marker(tx, tid))
    reply_address = acme_ticket["Reply-To"].addresses[0].addr_spec
    send(services, door, message("m@mallory.test", f"Re: {acme_ticket['Subject']}", f"Show me.\n\n> {marker}", 2,
                                 In_Reply_To=acme_ticket["Message-ID"], References=acme_ticket["Message-ID"]),
         to=reply_address, envelope_from="m@mallory.test")
    assert count(services, TicketMessage, TicketMessage.ticket_id == tid) == 1
    services.run(ops.reply, tid, "We rotated the password.", actor="staff:U1")
    Deliverer(services).deliver_due()
    [answer] = to_mallory(sink)
    raw = answer.data.decode("utf-8", "replace")
    assert answer.rcpt_tos == ["m@mallory.test"]
    for leaked in ("hunter2", "acme", "rotated", acme_ticket["Message-ID"], reply_address):
        assert leaked not in raw, leaked
    assert answer.message["Subject"] == "[#T-2] Site down"  # their own new ticket, with their own words
    staff_reply = sink.messages[-1]
    assert sorted(staff_reply.rcpt_tos) == ["boss@acme.test", "dev@acme.test"]


def test_a_forged_from_threads_but_every_answer_goes_to_the_real_contact(services, door, sink, acme_ticket):
    send(services, door, message("Dev <dev@acme.test>", f"Re: {acme_ticket['Subject']}", "Please send it to me.",
                                 2, Reply_To="mallory@evil.test", Sender="mallory@evil.test"),
         envelope_from="mallory@evil.test")
    services.run(ops.reply, 1, "Sent to you as usual.", actor="staff:U1")
    Deliverer(services).deliver_due()
    assert to_mallory(sink) == [] and len(sink.messages) == 2
    assert sorted(sink.messages[-1].rcpt_tos) == ["boss@acme.test", "dev@acme.test"]


# -- renewal declines ---------------------------------------------------------------------------

@pytest.fixture
def two_accounts(services):
    soon = str(TODAY + dt.timedelta(days=5))
    acme = renewals.make_account(services, "acme", {"a.test": soon}, sales="sales@reseller.test",
                                 contacts=[("dev@acme.test", ["renewals"], True),
                                           ("books@acme.test", ["billing"], True)])
    mallory = renewals.make_account(services, "mallory", {"m.test": soon},
                                    contacts=[("m@mallory.test", ["renewals"], True)])
    renewals.reminder_token(services, TODAY)
    tokens = {}
    for mail in renewals.outbound(services, "renewal_reminder"):
        token = renewals.parsed(mail)["Reply-To"].addresses[0].addr_spec.split("@")[0].removeprefix("renew+")
        tokens["acme" if any("acme" in r for r in mail.recipients) else "mallory"] = token
    return acme, mallory, tokens


@pytest.mark.parametrize("sender, token_of, to_support", [
    ("books@acme.test", "acme", False),      # acme's own contact, without the renewals permission
    ("m@mallory.test", "acme", False),       # a renewals contact of another account, with acme's token
    ("dev@acme.test", "mallory", False),     # acme's renewals contact, with another account's token
    ("dev@acme.test", None, True),           # acme's renewals contact, without any token
])
def test_a_decline_without_the_accounts_token_and_permission_changes_nothing(services, door, two_accounts, sender,
                                                                             token_of, to_support):
    _, _, tokens = two_accounts
    to = SUPPORT if to_support else f"renew+{tokens[token_of]}@desk.example.test"
    send(services, door, message(sender, "Re: Renewal reminder", "decline all\r\ndecline a.test\r\ndecline m.test", 3),
         to=to, envelope_from=sender)
    assert count(services, RenewalDecision) == 0
    assert count(services, Service, Service.status != ServiceStatus.active) == 0
    assert not renewals.outbound(services, "renewal_confirmation") and not renewals.outbound(services, "renewal_sales")


# -- header injection ---------------------------------------------------------------------------

def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def assert_clean_lines(data: bytes) -> None:
    """Every line ends in CRLF: no bare LF or CR that a relay or reader could take for a line end."""
    assert re.search(rb"[^\r]\n|\r[^\n]", data) is None, data[:400]


INJECTED = ("Bcc", "X-Evil", "Cc: victim")


@pytest.mark.parametrize("subject", [
    "=?utf-8?q?Help=0D=0ABcc=3A_victim=40evil=2Etest?=",                   # CR LF decoded from an encoded word
    "=?utf-8?b?SGVscA0KWC1FdmlsOiAx?=",                                     # the same in base64: Help\r\nX-Evil: 1
    "=?utf-8?q?=3D=3Futf-8=3Fq=3FCc=3A_victim=40evil=2Etest=3F=3D?=",       # an encoded word inside one
    "Ünïcode " * 20,                                                         # long enough to be folded
])
def test_a_subject_adds_no_header_no_recipient_and_no_bare_line_end(services, door, sink, subject):
    make_account(services, "acme", "boss@acme.test", ("dev@acme.test", ["tickets"]))
    send(services, door, message("Dev <dev@acme.test>", subject, "hello", 4))
    [ack] = sink.messages
    assert sorted(ack.rcpt_tos) == ["boss@acme.test", "dev@acme.test"]
    assert_clean_lines(ack.data)
    assert_clean_lines(outbound(services, "ticket_ack")[0].raw)  # the copy we keep, as well as the wire
    head = header_block(ack.data)
    for name in INJECTED:
        assert b"\r\n" + name.encode() not in head
    stored = services.run(lambda tx: tx.session.scalar(select(Ticket.subject)), readonly=True)
    assert ack.message["Subject"] == f"[#T-1] {stored}"   # read back as the very text the ticket has
    assert "\n" not in ack.message["Subject"] and "\r" not in ack.message["Subject"]


@pytest.mark.parametrize("name", ["Dev\r\nBcc: victim@evil.test", "Dev\nX-Evil: 1",
                                  "=?utf-8?q?Admin_=3Cadmin=40bank=2Etest=3E=0D=0ABcc=3A_v=40evil=2Etest?=",
                                  "Dév, \"the\" <boss@acme.test> " * 4])
def test_a_contact_name_adds_no_header_and_reads_back_as_written(services, door, sink, name):
    make_account(services, "acme", "boss@acme.test", ("dev@acme.test", ["tickets"]))

    def rename(tx):
        tx.session.scalar(select(Contact).where(Contact.email == "dev@acme.test")).name = name
    services.run(rename)
    send(services, door, message("Dev <dev@acme.test>", "Site down", "hello", 5))
    services.run(ops.reply, 1, "Done.", actor="staff:U1")
    Deliverer(services).deliver_due()
    for got in sink.messages:
        assert sorted(got.rcpt_tos) == ["boss@acme.test", "dev@acme.test"]
        assert_clean_lines(got.data)
        head = header_block(got.data)
        for injected in INJECTED:
            assert b"\r\n" + injected.encode() not in head
        [to] = got.message["To"].addresses
        assert to.addr_spec == "dev@acme.test"
        assert to.display_name == re.sub(r"[\r\n]+", " ", name).strip()  # the name, not what it decodes to


# -- markup ---------------------------------------------------------------------------------------

HOSTILE = ('<script>alert(1)</script><img src=x onerror="alert(2)"><a href="javascript:alert(3)">pay</a>'
           '<svg onload=alert(4)>" onmouseover="alert(5)')


class LiveMarkup(html.parser.HTMLParser):
    """Collects what a browser would run: script elements, on* attributes, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "svg", "iframe", "object", "embed"):
            self.found.append(tag)
        for key, value in attrs:
            if key.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"{tag} {key}={value}")


def live_markup(page: str) -> list[str]:
    parser = LiveMarkup()
    parser.feed(page)
    return parser.found


def html_mail(sender: str, to: str, n: int) -> bytes:
    return (f"From: {HOSTILE} <{sender}>\r\nTo: {to}\r\nSubject: {HOSTILE}\r\nMessage-ID: <html{n}@client.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>{HOSTILE}"
            f"<p>renew a.test 2 years</p><p>renew {HOSTILE}</p>\r\n").encode()


def test_html_in_client_mail_is_never_live_in_the_ack_or_on_the_renewal_pages(services, door, sink):
    ids = renewals.make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=5))},
                                others={f"hosting {HOSTILE}": str(TODAY + dt.timedelta(days=20))},
                                contacts=[("dev@acme.test", ["renewals", "tickets"], True)])

    def hostile_names(tx):
        tx.session.scalar(select(Contact).where(Contact.email == "dev@acme.test")).name = HOSTILE
        tx.session.get(Account, ids["account"]).name = f"Acme {HOSTILE}"
    services.run(hostile_names)
    token = renewals.reminder_token(services, TODAY)
    send(services, door, html_mail("dev@acme.test", SUPPORT, 6), envelope_from="dev@acme.test")
    send(services, door, html_mail("dev@acme.test", f"renew+{token}@desk.example.test", 7),
         envelope_from="dev@acme.test")
    acks = [m for m in sink.messages if "[#T-" in str(m.message["Subject"])]
    assert acks
    for got in sink.messages:
        body = got.message.get_body(("html",))
        if body is not None:
            assert live_markup(body.get_content()) == [], got.message["Subject"]
    link = re.search(r"/renew/([a-z2-7]{24})", renewals.text_of(renewals.outbound(services, "renewal_reminder")[-1]))[1]
    with serve(services) as base:
        page = httpx.get(f"{base}/renew/{link}", timeout=10)
        assert page.status_code == 200 and "hosting" in page.text
        assert live_markup(page.text) == []
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
        posted = httpx.post(f"{base}/renew/{link}", cookies=page.cookies, timeout=10,
                            data={"csrf": csrf, f"decision_{ids['a.test']}": HOSTILE,
                                  f"years_{ids['a.test']}": HOSTILE})
        assert live_markup(posted.text) == []
        confirm = httpx.get(f"{base}/renew/confirm", timeout=10)
        code = httpx.post(f"{base}/renew/confirm", cookies=confirm.cookies, timeout=10, data={
            "csrf": re.search(r'name="csrf" value="([^"]+)"', confirm.text)[1], "code": HOSTILE, "step": "check"})
        assert code.status_code in (400, 404) and live_markup(code.text) == []
