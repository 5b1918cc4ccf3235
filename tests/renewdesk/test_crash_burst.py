"""Crash during a burst: `renewdesk smtp` killed with SIGKILL twice while 4 senders push mail.

Accepted means stored, exactly once: the senders retry every message not answered 250, as
sending MTAs do; afterwards every message is stored once (by Message-ID and by the digest of
its bytes), as the row its 250 named. Each kill comes while one sender's message is committed
but its 250 has not been read: the sender sends it again to the restarted door, which must
find the row it already has (the inbound key is Message-ID + digest + recipient) and answer
250 with that row's id. `renewdesk worker` processes the mail meanwhile, as the Procfile runs
it, and is SIGKILLed once too: every message ends with exactly one ticket message, a new
ticket's first or a reply on the ticket it names.

RENEWDESK_BURST_MESSAGES sets the number of messages (default 5,000).
"""
import os
import time

import pytest

from sqlalchemy import create_engine

from tests.support import burst, proc
from tests.support.servers import free_port

N = int(os.environ.get("RENEWDESK_BURST_MESSAGES", "5000"))
# what a hang costs at most: the whole test fails after this many seconds (on two idle cores the
# burst and its processing take about a minute; a busy machine may need several)
BUDGET = 300


@pytest.mark.slow
def test_burst_with_two_sigkills_stores_and_processes_each_message_once(db_url, tmp_path):
    """N messages, 4 senders, the door SIGKILLed twice after a commit whose 250 was never read:
    all stored once, every 250 names the stored row, one ticket or reply per message."""
    started = time.monotonic()
    port = free_port()
    env = proc.env_for(DATABASE_URL=db_url, RENEWDESK_SMTP_PORT=str(port), RENEWDESK_SECRET_KEY="burst-secret",
                       RENEWDESK_SENDER_HOURLY_CAP="1000000", RENEWDESK_INBOX_POLL_SECONDS="0.05",
                       RENEWDESK_OUTBOUND_SMTP_URL="smtp://127.0.0.1:1", RENEWDESK_OUTBOX_POLL_SECONDS="60")
    addresses = burst.contacts(100)
    burst.import_account(env, tmp_path, addresses)
    engine = create_engine(db_url)
    door = burst.DoorProcess(env, tmp_path / "smtp.log", port=port)
    worker = burst.DoorProcess(env, tmp_path / "worker.log", "worker")
    door.start()
    worker.start()
    try:
        # the ticket that every other message of the burst answers
        first = burst.corpus(1, addresses, tag="first")
        burst.Senders(port, first, 1, timeout=30).start().join()
        burst.wait_processed(engine, 1, 30, worker)
        ticket = burst.row_ticket(engine, first[0].mid)

        messages = burst.corpus(N, addresses, reply_to=ticket, reply_every=2)
        senders = burst.Senders(port, messages, 4, timeout=started + BUDGET - time.monotonic()).start()
        lost = {}
        for share in (0.3, 0.65):
            senders.wait_answered(int(N * share))
            mid = senders.lose_next_answer()
            lost[mid] = burst.row_id(engine, mid)  # committed; its 250 is unread
            door.kill()
            if worker.kills == 0:
                worker.kill()  # mid-batch: its transaction is rolled back, the rows stay new
            senders.resume()
            door.start()
            if not worker.alive():
                worker.start()
        senders.join()
        burst.check_stored(engine, messages, senders, others=1)
        for mid, row in lost.items():
            outcome = senders.outcomes[mid]
            assert outcome.failures[0].startswith("answer lost") and outcome.stored_as == row, (mid, outcome)
        # the door's log says it recognised each resent message rather than storing it again
        assert door.output().count("smtp: already had message") >= len(lost), door.output()[-2000:]
        assert door.kills == 2 and worker.kills == 1 and senders.disconnects >= 2

        burst.wait_processed(engine, N + 1, started + BUDGET - time.monotonic(), worker)
        burst.check_processed(engine, first + messages, reply_ticket=ticket)
    finally:
        codes = burst.stop_all(door, worker)
        engine.dispose()
    assert codes == (0, 0), door.output()[-3000:] + worker.output()[-3000:]
    print(f"{N} messages, {senders.disconnects} disconnects, {dict(senders.codes)} other answers, "
          f"{time.monotonic() - started:.1f}s")
