"""A backlog of outgoing mail goes out over a few reused connections, a round at a time, with few commits."""
from sqlalchemy import event, select

from handlers.delivery import RELAY_CONNECTIONS, ROWS_PER_CONNECTION, Deliverer
from handlers.models import OutboundMail, OutboxStatus
from handlers.outbox import queue_email
from tests.support.smtp_sink import SmtpSink


def _queue(services, recipients):
    def op(tx):
        return [queue_email(tx, "staff_message", {"subject": f"Message {i}", "body": "Hello", "recipient_name": "Ann"},
                            to=[to]).id for i, to in enumerate(recipients)]
    return services.run(op)


def _statuses(services):
    with services.db.transaction(readonly=True) as s:
        return {r.id: r for r in s.scalars(select(OutboundMail))}


def test_a_backlog_is_sent_once_over_several_connections_with_few_commits(services):
    """A backlog: each mail arrives once, over RELAY_CONNECTIONS reused connections, in far fewer
    write transactions than mails (each round's hand-over and outcomes are one commit each)."""
    n = ROWS_PER_CONNECTION * RELAY_CONNECTIONS
    ids = _queue(services, [f"client{i}@acme.test" for i in range(n)])
    writes = []

    def count(conn):  # noqa: ANN001
        if not conn.get_execution_options().get("readonly"):
            writes.append(1)
    event.listen(services.db.engine, "commit", count)
    try:
        with SmtpSink() as sink:
            services.settings = services.settings.replace(outbound_smtp_url=sink.url)
            report = Deliverer(services).deliver_due(limit=n)
    finally:
        event.remove(services.db.engine, "commit", count)
    assert report.sent == n and len(sink.messages) == n
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(f"client{i}@acme.test" for i in range(n))
    assert len(sink.handler.sessions) == RELAY_CONNECTIONS
    rows = _statuses(services)
    assert {rows[i].status for i in ids} == {OutboxStatus.sent}
    assert all(rows[i].claimed_by is None and rows[i].handed_over_at is not None for i in ids)
    # the claim, then 2 per round of RELAY_CONNECTIONS mails (one mail at a time took 3 per mail);
    # with nothing stale, recovery only reads
    assert len(writes) == 1 + 2 * ROWS_PER_CONNECTION, len(writes)


def test_one_refusal_in_a_round_leaves_the_other_connections_alone(services):
    """In one round a 550, a 451 and good mails: each row gets its own outcome, the good ones go out once."""
    recipients = [f"client{i}@acme.test" for i in range(2 * RELAY_CONNECTIONS)]
    recipients[1], recipients[3] = "gone@acme.test", "later@acme.test"
    ids = _queue(services, recipients)
    with SmtpSink() as sink:
        async def picky(server, session, envelope, address, options):
            if address.startswith("gone"):
                return "550 5.1.1 no such user"
            if address.startswith("later"):
                return "451 4.3.0 try again later"
            envelope.rcpt_tos.append(address)
            return "250 OK"
        sink.handler.handle_RCPT = picky
        services.settings = services.settings.replace(outbound_smtp_url=sink.url)
        report = Deliverer(services).deliver_due(limit=len(ids))
        got = sorted(m.rcpt_tos[0] for m in sink.messages)
    assert (report.sent, report.failed, report.retried) == (len(ids) - 2, 1, 1)
    assert got == sorted(r for r in recipients if r not in ("gone@acme.test", "later@acme.test"))
    rows = _statuses(services)
    assert rows[ids[1]].status == OutboxStatus.failed and "550 5.1.1" in rows[ids[1]].last_error
    assert rows[ids[3]].status == OutboxStatus.queued and rows[ids[3]].handed_over_at is None
    assert all(rows[i].status == OutboxStatus.sent for k, i in enumerate(ids) if k not in (1, 3))
