"""Database outage: PostgreSQL stops during a burst and starts again.

While it is down the SMTP door answers 451 4.3.0 (the senders keep the mail and retry) and
`renewdesk pipe` exits 75 (EX_TEMPFAIL: the MTA keeps it). Once it is back, every message is
stored exactly once and processed exactly once, by the same `renewdesk worker` that lived
through the outage. The test has a PostgreSQL server of its own: it stops it.
"""
import time

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from tests.support import burst, proc
from tests.support.servers import PostgresServer, free_port

N = 600
BUDGET = 240  # seconds: a hang fails the test after this long


def _pipe(env: dict[str, str], message: burst.Message):
    return proc.run("pipe", "--recipient", burst.RCPT, "--sender", message.sender, env=env, timeout=60,
                    input=message.raw)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_outage_during_a_burst_451s_then_nothing_lost_or_doubled(tmp_path):
    """PostgreSQL stopped at 30% of a burst: 451s and pipe exit 75 while down; after restart all
    N + 1 messages are stored once, each has one ticket, and the worker is still running."""
    started = time.monotonic()
    pg = PostgresServer().start()
    port = free_port()
    env = proc.env_for(DATABASE_URL=pg.url(), RENEWDESK_SMTP_PORT=str(port), RENEWDESK_SECRET_KEY="outage-secret",
                       RENEWDESK_SENDER_HOURLY_CAP="1000000", RENEWDESK_INBOX_POLL_SECONDS="0.05",
                       RENEWDESK_OUTBOUND_SMTP_URL="smtp://127.0.0.1:1", RENEWDESK_OUTBOX_POLL_SECONDS="60")
    engine = create_engine(pg.url(), poolclass=NullPool)  # no connection outlives the outage
    door = burst.DoorProcess(env, tmp_path / "smtp.log", port=port)
    worker = burst.DoorProcess(env, tmp_path / "worker.log", "worker")
    try:
        upgraded = proc.run("db", "upgrade", env=env, timeout=120)
        assert upgraded.returncode == 0, upgraded.stderr.decode()
        addresses = burst.contacts(100)
        burst.import_account(env, tmp_path, addresses)
        door.start()
        worker.start()
        worker.wait_log("scheduler started")  # up and polling the inbox when the database goes
        messages = burst.corpus(N, addresses, tag="outage")
        piped = burst.corpus(1, addresses, tag="piped")[0]
        senders = burst.Senders(port, messages, 4, timeout=started + BUDGET - time.monotonic()).start()

        senders.wait_answered(int(N * 0.3))
        assert senders.answered() < N * 0.6, "the burst was over before the outage"
        pg.halt()
        down = _pipe(env, piped)
        assert down.returncode == 75, (down.returncode, down.stderr.decode())
        assert "try again later" in down.stderr.decode() or "cannot open the database" in down.stderr.decode()
        deadline = time.monotonic() + 30
        while senders.codes[451] < 1 or "inbox: database unavailable" not in worker.output():
            assert time.monotonic() < deadline, (senders.codes, worker.popen.poll(), worker.output()[-4000:])
            time.sleep(0.1)
        answered_while_down = senders.answered()
        time.sleep(1)
        assert senders.answered() == answered_while_down, "a 250 while the database was down"
        pg.resume()

        up = _pipe(env, piped)
        assert up.returncode == 0, (up.returncode, up.stderr.decode())
        senders.join()
        burst.check_stored(engine, messages, senders, others=1)
        assert all(f.startswith("451 4.3.0") for o in senders.outcomes.values() for f in o.failures
                   if f[:1].isdigit()), "a refusal other than 451 4.3.0"
        burst.wait_processed(engine, N + 1, started + BUDGET - time.monotonic(), worker)
        burst.check_processed(engine, messages + [piped])
        assert worker.alive() and door.alive()
        # the outage is the database's fault: no message was blamed for it (quarantined, or logged as failing)
        assert "could not be processed" not in worker.output() and "Traceback" not in worker.output()
    finally:
        codes = burst.stop_all(door, worker)
        engine.dispose()
        pg.stop()
    assert codes == (0, 0), door.output()[-3000:] + worker.output()[-3000:]
    print(f"{N} messages, {senders.codes[451]} answered 451, {senders.disconnects} connection failures")


@pytest.mark.postgres
def test_a_process_started_while_the_database_is_down_waits_for_it(tmp_path):
    """`renewdesk smtp` started while PostgreSQL is down logs that it is waiting, starts listening once
    the database is back and stores a message (250); with RENEWDESK_DB_START_WAIT=0 `renewdesk worker`
    gives up at once with exit 75 (EX_TEMPFAIL) and a line naming the database."""
    import smtplib

    pg = PostgresServer().start()
    port = free_port()
    env = proc.env_for(DATABASE_URL=pg.url(), RENEWDESK_SMTP_PORT=str(port), RENEWDESK_SECRET_KEY="outage-secret",
                       RENEWDESK_DB_START_WAIT="60")
    door = burst.DoorProcess(env, tmp_path / "smtp.log")
    try:
        upgraded = proc.run("db", "upgrade", env=env, timeout=120)
        assert upgraded.returncode == 0, upgraded.stderr.decode()
        pg.halt()
        impatient = proc.run("worker", env={**env, "RENEWDESK_DB_START_WAIT": "0"}, timeout=60)
        assert impatient.returncode == 75, (impatient.returncode, impatient.stderr.decode()[-2000:])
        assert "cannot open the database" in impatient.stderr.decode()
        door.start()  # no port: it cannot listen before it has a database
        door.wait_log("trying again in 2 s", timeout=30)
        assert door.alive()
        pg.resume()
        door.wait_log("door listening", timeout=30)
        message = burst.corpus(1, burst.contacts(1), tag="late")[0]
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            refused = client.sendmail(message.sender, [burst.RCPT], message.raw)
        assert refused == {}
        with create_engine(pg.url(), poolclass=NullPool).connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM inbound_mail").scalar() == 1
    finally:
        burst.stop_all(door)
        pg.stop()
