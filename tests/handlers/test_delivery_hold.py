"""The delivery loop holds back while the inbox has a backlog, but no due mail waits longer than the setting."""
import datetime as dt
import time

from handlers.delivery import Deliverer
from handlers.outbox import queue_email
from mail_ingest.process import process_batch
from mail_ingest.receive import receive
from renewdesk.runtime import delivery_loop
from tests.support.smtp_sink import SmtpSink

CLIENT_MAIL = (b"From: Zed <zed@nowhere.test>\r\nTo: support@desk.example.test\r\nSubject: Hello\r\n"
               b"Message-ID: <burst-1@nowhere.test>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\nA question.\r\n")


def _queue(services, not_before=None):
    return services.run(lambda tx: queue_email(
        tx, "staff_message", {"subject": "Hi", "body": "Hello", "recipient_name": "Ann"}, to=["ann@acme.test"],
        not_before=not_before).id)


def _arrive(services):
    receive(services, CLIENT_MAIL, door="smtp", mail_from="zed@nowhere.test", recipients=["support@desk.example.test"])


def test_due_mail_is_held_while_the_inbox_has_a_backlog_and_for_no_longer_than_the_setting(services, clock):
    """hold() is 0 with an idle inbox; with unprocessed mail it is what is left of the setting's
    seconds, counted from the oldest due mail's due time; 0 once that mail has waited them all."""
    deliverer = Deliverer(services)
    assert deliverer.hold() == 0  # nothing due at all
    _queue(services)
    assert deliverer.hold() == 0  # due mail, idle inbox: go now
    _arrive(services)
    assert deliverer.hold() == services.settings.outbox_burst_hold_seconds == 5.0
    clock.advance(seconds=3)
    assert deliverer.hold() == 2.0
    clock.advance(seconds=2)
    assert deliverer.hold() == 0  # waited the whole 5 s: the burst no longer holds it
    _queue(services)              # a fresh mail does not hold the overdue one back either
    assert deliverer.hold() == 0


def test_only_due_mail_counts_and_the_hold_is_off_at_zero_or_once_the_inbox_is_drained(services, clock):
    """Mail due later does not start a hold; the setting 0 turns the hold off; processing the
    inbox ends it."""
    _arrive(services)
    _queue(services, not_before=clock.now() + dt.timedelta(minutes=5))
    assert Deliverer(services).hold() == 0
    _queue(services)
    assert Deliverer(services).hold() == 5.0
    services.settings = services.settings.replace(outbox_burst_hold_seconds=0)
    assert Deliverer(services).hold() == 0
    services.settings = services.settings.replace(outbox_burst_hold_seconds=5)
    process_batch(services)
    assert Deliverer(services).hold() == 0


def test_the_delivery_loop_sends_nothing_during_a_burst_and_everything_once_it_is_processed(services):
    """The running loop: with a message waiting in the inbox a queued mail stays at us (it would
    go within milliseconds otherwise); once the inbox is processed it reaches the relay."""
    _queue(services)
    _arrive(services)
    with SmtpSink() as sink:
        services.settings = services.settings.replace(outbound_smtp_url=sink.url)
        loop = delivery_loop(services)
        loop.start()
        try:
            time.sleep(0.8)  # four looks at the inbox; the frozen clock keeps the hold from running out
            assert sink.messages == []
            process_batch(services)
            deadline = time.monotonic() + 10
            while not sink.messages and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            loop.stop()
    assert [m.rcpt_tos for m in sink.messages] == [["ann@acme.test"]]
