"""Delivering the outbox to a real SMTP server on loopback: reuse, retry, failure, TLS and auth."""
import datetime as dt

import pytest
from sqlalchemy import select

from handlers.delivery import DeliveryReport, Deliverer, backoff
from handlers.models import OutboundMail, OutboxStatus
from handlers.outbox import queue_email
from tests.support.smtp_sink import SmtpSink, self_signed_cert


def _queue(services, n=1, to="ann@acme.test"):
    def op(tx):
        return [queue_email(tx, "staff_message", {"subject": f"Message {i}", "body": "Hello", "recipient_name": "Ann"},
                            to=[to]).id for i in range(n)]
    return services.run(op)


def _rows(services):
    with services.db.transaction(readonly=True) as s:
        return {r.id: r for r in s.scalars(select(OutboundMail))}


def _deliver(services, sink):
    services.settings = services.settings.replace(outbound_smtp_url=sink.url)
    return Deliverer(services).deliver_due()


def test_due_mail_is_sent_once_over_one_connection(services):
    """Three queued mails arrive at the relay, each once, over a single reused connection."""
    ids = _queue(services, 3)
    with SmtpSink() as sink:
        report = _deliver(services, sink)
        again = Deliverer(services).deliver_due()
    assert (report.sent, again.sent) == (3, 0)
    assert len(sink.messages) == 3 and len(sink.handler.sessions) == 1
    rows = _rows(services)
    assert {rows[i].status for i in ids} == {OutboxStatus.sent}
    sent_ids = {m.message["Message-ID"] for m in sink.messages}
    assert sent_ids == {rows[i].message_id for i in ids}
    assert {m.mail_from for m in sink.messages} == {"bounces@desk.example.test"}


def test_temporary_refusal_is_retried_with_backoff(services, clock):
    """A 4xx answer puts the mail back with a growing delay; it goes out once the relay accepts."""
    [row_id] = _queue(services)
    with SmtpSink(rcpt_code="451 4.3.0 greylisted") as sink:
        report = _deliver(services, sink)
    row = _rows(services)[row_id]
    assert report.retried == 1 and row.status == OutboxStatus.queued and row.attempts == 1
    assert row.next_attempt_at == clock.now() + dt.timedelta(seconds=60)
    assert "451" in row.last_error
    with SmtpSink() as sink:
        assert _deliver(services, sink).sent == 0          # not due yet
        clock.advance(seconds=61)
        assert _deliver(services, sink).sent == 1
        assert len(sink.messages) == 1
    assert _rows(services)[row_id].status == OutboxStatus.sent


def test_backoff_doubles_and_is_capped(settings):
    assert [backoff(settings, n).total_seconds() for n in (1, 2, 3)] == [60, 120, 240]
    assert backoff(settings, 30) == dt.timedelta(hours=6)


def test_permanent_refusal_marks_failed_and_never_retries(services, clock):
    """A 5xx at the end of DATA marks the mail failed with the relay's words; later runs leave it."""
    [row_id] = _queue(services)
    with SmtpSink(data_code="554 5.7.1 message refused") as sink:
        assert _deliver(services, sink).failed == 1
    row = _rows(services)[row_id]
    assert row.status == OutboxStatus.failed and "554 5.7.1 message refused" in row.last_error
    clock.advance(days=1)
    with SmtpSink() as sink:
        _deliver(services, sink)
        assert sink.messages == []


def test_out_of_attempts_marks_failed(services, clock):
    """A relay that keeps saying 4xx does not get the mail forever: after the cap it is failed."""
    [row_id] = _queue(services)
    services.settings = services.settings.replace(outbox_max_attempts=2)
    with SmtpSink(rcpt_code="421 4.7.0 busy") as sink:
        _deliver(services, sink)
        clock.advance(hours=1)
        _deliver(services, sink)
    row = _rows(services)[row_id]
    assert row.status == OutboxStatus.failed and row.attempts == 2 and "gave up after 2 attempts" in row.last_error


def test_unreachable_relay_is_temporary(services):
    """Connection refused is a retry, not a failure."""
    [row_id] = _queue(services)
    services.settings = services.settings.replace(outbound_smtp_url="smtp://127.0.0.1:1")
    report = Deliverer(services).deliver_due()
    assert report.retried == 1 and _rows(services)[row_id].status == OutboxStatus.queued


def test_starttls_and_auth(services, tmp_path):
    """smtp:// upgrades with STARTTLS when offered and logs in with the URL's credentials."""
    cert = self_signed_cert(tmp_path)
    _queue(services, 2)
    with SmtpSink(tls="starttls", cert=cert, credentials=("relayuser", "s3cret")) as sink:
        assert _deliver(services, sink).sent == 2
        assert len(sink.messages) == 2


def test_wrong_password_is_retried_not_lost(services, tmp_path):
    cert = self_signed_cert(tmp_path)
    [row_id] = _queue(services)
    with SmtpSink(tls="starttls", cert=cert, credentials=("relayuser", "s3cret")) as sink:
        url = sink.url.replace("s3cret", "wrong")
        services.settings = services.settings.replace(outbound_smtp_url=url)
        report = Deliverer(services).deliver_due()
    row = _rows(services)[row_id]
    assert report.retried == 1 and row.status == OutboxStatus.queued and "login" in row.last_error


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtps_implicit_tls(services, tmp_path):
    """smtps:// speaks TLS from the first byte and checks the relay's certificate."""
    cert = self_signed_cert(tmp_path)
    _queue(services)
    with SmtpSink(tls="implicit", cert=cert, credentials=("u", "p")) as sink:
        assert _deliver(services, sink).sent == 1


def test_unknown_certificate_is_refused(services, tmp_path):
    """Without the relay's CA the TLS handshake fails and the mail waits (no silent plain text)."""
    cert = self_signed_cert(tmp_path)
    [row_id] = _queue(services)
    with SmtpSink(tls="implicit", cert=cert) as sink:
        services.settings = services.settings.replace(outbound_smtp_url=sink.url.split("?")[0])
        report = Deliverer(services).deliver_due()
        assert sink.messages == []
    assert report.retried == 1 and "CERTIFICATE_VERIFY_FAILED" in _rows(services)[row_id].last_error


def test_a_batch_that_outlives_its_lease_sends_nothing_twice(services, clock):
    """Worker A claims, stalls past the lease; B recovers and sends; A must then skip every row."""
    ids = _queue(services, 3)
    with SmtpSink() as sink:
        services.settings = services.settings.replace(outbound_smtp_url=sink.url)
        a, b = Deliverer(services, worker_id="A"), Deliverer(services, worker_id="B")
        claimed = a._claim(10)
        assert sorted(claimed) == sorted(ids)
        clock.advance(seconds=services.settings.outbox_lease_seconds + 1)
        assert b.deliver_due().sent == 3
        late = DeliveryReport()
        a._deliver(claimed, late)
        assert late.sent == 0 and len(sink.messages) == 3
    assert {r.status for r in _rows(services).values()} == {OutboxStatus.sent}


def test_one_recipient_to_retry_later_holds_the_whole_mail(services):
    """A 4xx for the Cc while the To is accepted: nothing goes out yet, so nobody is dropped."""
    def op(tx):
        return queue_email(tx, "staff_message", {"subject": "S", "body": "B", "recipient_name": "A"},
                           to=["ann@acme.test"], cc=["greylisted@acme.test"]).id
    row_id = services.run(op)
    with SmtpSink() as sink:
        async def picky(server, session, envelope, address, options):
            if address.startswith("greylisted"):
                return "450 4.2.0 greylisted, try later"
            envelope.rcpt_tos.append(address)
            return "250 OK"
        sink.handler.handle_RCPT = picky
        report = _deliver(services, sink)
        assert report.retried == 1 and sink.messages == []
    assert _rows(services)[row_id].status == OutboxStatus.queued


def test_a_stopping_worker_releases_what_it_did_not_try(services):
    """On shutdown the loop stops between rows and puts the untried ones straight back in the queue."""
    import threading
    _queue(services, 3)
    stopping = threading.Event()
    with SmtpSink(on_data=lambda got: stopping.set()) as sink:
        services.settings = services.settings.replace(outbound_smtp_url=sink.url)
        report = Deliverer(services, stopping=stopping).deliver_due()
        assert report.sent == 1 and len(sink.messages) == 1
    rows = _rows(services)
    assert sorted(r.status.value for r in rows.values()) == ["queued", "queued", "sent"]
    assert all(r.claimed_by is None and r.attempts == 0 for r in rows.values() if r.status == OutboxStatus.queued)
