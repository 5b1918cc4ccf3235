"""Mail loops with a client's autoresponder: the exchange stops within the automatic-answer cap and
staff are told.

Real parts on loopback: our SMTP door, the inbox processor, the delivery worker sending to the
client's autoresponder (an SMTP sink that answers every mail into our door), the Slack delivery
to a local stand-in of Slack's API. One client mail starts it. A proper RFC 3834 auto-reply is
stored on the ticket and never answered; a bad autoresponder that quotes our subject threads onto
the ticket and is not answered either; one that keeps a subject of its own opens a ticket each
time, and renewdesk stops acknowledging at RENEWDESK_AUTO_ANSWER_CAP, with a note on the ticket,
an `auto_answer.capped` audit event and the note in the ticket's Slack thread.
"""
import smtplib

import pytest
from sqlalchemy import func, select

from bot.delivery import SlackDeliverer
from handlers.billing.digest import build
from handlers.delivery import Deliverer
from handlers.models import AuditEvent, InboundMail, MessageKind, Ticket, TicketMessage
from handlers.services import Services
from handlers.settings import load_settings
from mail_ingest.process import process_batch
from mail_ingest.smtp import DoorController
from tests.support.autoresponder import AutoResponder
from tests.support.mailflow import SUPPORT, mail, make_account
from tests.support.servers import free_port
from tests.support.slack_api import FakeSlack

CLIENT = "anna@acme.test"
CAP = 4
ROUNDS = 3 * CAP  # far more rounds than a stopped exchange needs: a loop that does not stop fails


@pytest.fixture
def fake_slack():
    with FakeSlack() as fake:
        yield fake
    assert not fake.violations, fake.violations


def _exchange(db_url, clock, fake_slack, style):
    """Run the exchange until nothing moves; returns (services, autoresponder, rounds it took)."""
    door_port = free_port()
    auto = AutoResponder(door_port, style, CLIENT)
    settings = load_settings({}, database_url=db_url, secret_key="loops", mail_domain="desk.example.test",
                             outbound_smtp_url=auto.sink.url, auto_answer_cap=CAP, slack_bot_token="xoxb-test",
                             slack_signing_secret="s", slack_channel="CSTAFF", slack_api_url=fake_slack.api_url)
    services = Services(settings, clock=clock)
    make_account(services, "acme", CLIENT)
    door = DoorController(services, host="127.0.0.1", port=door_port)
    door.start()
    try:
        with auto:
            with smtplib.SMTP("127.0.0.1", door_port, timeout=10) as smtp:
                smtp.sendmail(CLIENT, [SUPPORT], mail(CLIENT, "Help with my site", "My site is down."))
            for rounds in range(1, ROUNDS + 1):
                processed = 0
                while taken := process_batch(services):
                    processed += taken
                sent = Deliverer(services).deliver_due().sent
                auto.drained()          # every mail it got is answered into the door (stored: 250)
                SlackDeliverer(services).deliver_due()
                if not processed and not sent:
                    break
                clock.advance(seconds=20)  # the whole exchange stays inside the cap's window
            assert not auto.errors, auto.errors
    finally:
        door.stop()
    return services, auto, rounds


def _count(services, model, *where):
    return services.run(lambda tx: tx.session.scalar(select(func.count()).select_from(model).where(*where)),
                        readonly=True)


@pytest.mark.parametrize("style", ["rfc3834", "quoting"])
def test_an_autoresponder_that_threads_gets_one_acknowledgement_and_nothing_more(db_url, clock, fake_slack, style):
    services, auto, rounds = _exchange(db_url, clock, fake_slack, style)
    try:
        assert rounds < ROUNDS
        assert len(auto.sink.messages) == 1 and auto.answered == 1     # our acknowledgement, its one answer
        assert _count(services, Ticket) == 1
        kinds = services.run(lambda tx: [m.kind for m in tx.session.scalars(
            select(TicketMessage).order_by(TicketMessage.id))], readonly=True)
        # the answer is on the ticket for staff to see: as automatic mail, or as the client's reply
        assert kinds == [MessageKind.client, MessageKind.auto if style == "rfc3834" else MessageKind.client]
        assert _count(services, AuditEvent, AuditEvent.action == "auto_answer.capped") == 0
    finally:
        services.close()


def test_an_autoresponder_that_never_threads_is_stopped_at_the_cap_and_staff_are_told(db_url, clock, fake_slack):
    services, auto, rounds = _exchange(db_url, clock, fake_slack, "fixed")
    try:
        assert rounds < ROUNDS, "the exchange did not stop"
        sent = len(auto.sink.messages)
        assert sent == CAP and auto.answered == CAP                     # bounded by the cap, not by luck
        assert _count(services, InboundMail) == CAP + 1                 # the client's mail and CAP answers
        tickets = _count(services, Ticket)
        assert tickets == CAP + 1
        # the ticket whose acknowledgement was held back carries the note; the audit log the event
        notes = services.run(lambda tx: [(m.ticket_id, m.body) for m in tx.session.scalars(
            select(TicketMessage).where(TicketMessage.kind == MessageKind.note))], readonly=True)
        assert len(notes) == 1 and notes[0][1].startswith("Automatic answers paused")
        assert _count(services, AuditEvent, AuditEvent.action == "auto_answer.capped") == 1
        # and staff see it where they work: in the capped ticket's Slack thread
        posts = [c.body for c in fake_slack.of("chat.postMessage")]
        assert sum(1 for p in posts if "thread_ts" not in p or not p.get("thread_ts")) == tickets  # one card each
        assert any("Automatic answers paused" in p.get("text", "") and p.get("thread_ts") for p in posts)
        # and the daily digest lists the address answers were held back from
        digest = services.run(build, readonly=True)
        [section] = [s for s in digest["sections"] if s["title"].startswith("Automatic answers held back")]
        assert section["items"] == [f"{CLIENT}: 1 held back, last on T-{tickets}"]
    finally:
        services.close()
