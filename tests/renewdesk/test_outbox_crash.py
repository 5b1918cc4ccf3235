"""A delivery worker killed mid-send: nothing is sent twice, nothing is silently lost."""
import os
import signal

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from handlers.clock import FixedClock
from handlers.models import OutboundMail, OutboxStatus
from handlers.outbox import queue_email
from handlers.services import Services
from handlers.settings import load_settings
from tests.support import proc
from tests.support.smtp_sink import SmtpSink


def _queue_one(db_url):
    svc = Services(load_settings({}, database_url=db_url, secret_key="k"),
                   clock=FixedClock("2026-11-21T09:00:00+00:00"))
    try:
        return svc.run(lambda tx: queue_email(tx, "staff_message", {"subject": "S", "body": "B", "recipient_name": "A"},
                                              to=["ann@acme.test"]).id)
    finally:
        svc.close()


def _status(db_url, row_id):
    engine = create_engine(db_url)
    with Session(engine) as s:
        row = s.get(OutboundMail, row_id)
        result = row.status, row.handed_over_at
    engine.dispose()
    return result


def _flush(db_url, sink, **extra):
    env = proc.env_for(DATABASE_URL=db_url, RENEWDESK_OUTBOUND_SMTP_URL=sink.url, **extra)
    return proc.start("outbox", "flush", env=env)


@pytest.mark.slow
def test_killed_between_handover_and_commit_is_not_sent_again(db_url):
    """The relay took the body, then the worker died before recording it: the mail stays single."""
    row_id = _queue_one(db_url)
    victims = []
    with SmtpSink(on_data=lambda got: os.kill(victims[0].pid, signal.SIGKILL)) as sink:
        victims.append(_flush(db_url, sink))
        victims[0].wait(timeout=60)
        assert victims[0].returncode == -signal.SIGKILL
        assert len(sink.messages) == 1
        status, handed_over = _status(db_url, row_id)
        assert status == OutboxStatus.sending and handed_over is not None
        # the restarted worker (lease expired) must not resend: the row becomes "uncertain"
        again = _flush(db_url, sink, RENEWDESK_OUTBOX_LEASE_SECONDS="0")
        out = again.communicate(timeout=60)[0].decode()
        assert again.returncode == 0, out
        assert len(sink.messages) == 1
    assert _status(db_url, row_id)[0] == OutboxStatus.uncertain
    listed = proc.run("outbox", "list", "--failed", env=proc.env_for(DATABASE_URL=db_url))
    assert f"{row_id:>6}  uncertain" in listed.stdout.decode()


@pytest.mark.slow
def test_killed_before_handover_is_sent_once_after_restart(db_url):
    """A worker that died before the body went out left nothing at the relay: the restart sends it once."""
    row_id = _queue_one(db_url)
    victims = []

    class KillAtRcpt:
        async def handle_RCPT(self, server, session, envelope, address, options):
            os.kill(victims[0].pid, signal.SIGKILL)
            return "451 4.3.0 going away"

    with SmtpSink() as sink:
        sink.handler.rcpt_code = None
        original = sink.handler.handle_RCPT
        sink.handler.handle_RCPT = KillAtRcpt().handle_RCPT
        victims.append(_flush(db_url, sink))
        victims[0].wait(timeout=60)
        assert _status(db_url, row_id) == (OutboxStatus.sending, None)
        sink.handler.handle_RCPT = original
        again = _flush(db_url, sink, RENEWDESK_OUTBOX_LEASE_SECONDS="0")
        again.communicate(timeout=60)
        assert len(sink.messages) == 1
    assert _status(db_url, row_id)[0] == OutboxStatus.sent
