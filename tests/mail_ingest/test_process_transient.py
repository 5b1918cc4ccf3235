"""The processor tells the database's trouble from the message's: a transient database error
while one message is being processed leaves the message waiting (status ``new``) for the next
round; it is never quarantined as if the message were bad (Promise 2 is for bad mail)."""
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from handlers.errors import TemporaryFailure
from handlers.inbox import Incoming, store_many
from handlers.models import InboundMail, InboundStatus
from mail_ingest.process import process_batch
from tests.support.mailflow import deliver, mail, make_account


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_lock_timeout_mid_message_leaves_it_new_and_the_next_round_threads_it(services, db_url):
    """PostgreSQL cancels the reply's UPDATE of its ticket (55P03, lock timeout: another session
    holds the row); the connection survives, so the batch could commit: it must not commit the
    message as quarantined. Once the lock is gone the same message threads onto its ticket."""
    make_account(services, "acme", "boss@acme.test", ("dev@acme.test", ["tickets"]))
    first = deliver(services, mail("dev@acme.test", "Site down"))
    database = db_url.rsplit("/", 1)[1]
    admin = create_engine(db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"ALTER DATABASE {database} SET lock_timeout = '200ms'"))
    services.db.dispose()  # new connections get the setting
    reply = mail("dev@acme.test", f"Re: [#T-{first.ticket_id}] Site down", "Still down.")
    [[stored]] = services.run(store_many, [Incoming(reply, "smtp", "dev@acme.test", ("support@desk.example.test",))])
    holder = create_engine(db_url, poolclass=NullPool)
    with holder.connect() as lock:
        lock.execute(text("SELECT id FROM ticket WHERE id = :t FOR UPDATE"), {"t": first.ticket_id})
        with pytest.raises(TemporaryFailure):
            process_batch(services)
        with services.db.transaction(readonly=True) as s:
            row = s.get(InboundMail, stored.id)
            assert (row.status, row.reason) == (InboundStatus.new, None)
        lock.rollback()
    assert process_batch(services) == 1
    with services.db.transaction(readonly=True) as s:
        row = s.get(InboundMail, stored.id)
        assert (row.status, row.rule, row.ticket_id) == (InboundStatus.done, "ticket_reply", first.ticket_id)
    holder.dispose()
    admin.dispose()
