"""The SMTP and LMTP door on a real socket, fed by smtplib: accepted means stored, and nothing else."""
import smtplib
import socket
import ssl

import pytest
from sqlalchemy import select

from handlers.models import InboundMail
from handlers import inbox
from mail_ingest.smtp import DoorController
from tests.support.servers import free_port
from tests.support.smtp_sink import self_signed_cert

OURS = "support@desk.example.test"


def message(n=1, sender="anna@northwind.test", body="Hello, my site is down."):
    return (f"From: Anna <{sender}>\r\nTo: {OURS}\r\nSubject: Help {n}\r\nMessage-ID: <m{n}@northwind.test>\r\n"
            f"\r\n{body}\r\n").encode()


@pytest.fixture
def door(services):
    services.settings = services.settings.replace(max_message_bytes=50_000, smtp_max_per_peer=3)
    controller = DoorController(services, host="127.0.0.1", port=free_port())
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def lmtp_door(services):
    controller = DoorController(services, lmtp=True, host="127.0.0.1", port=free_port())
    controller.start()
    yield controller
    controller.stop()


def rows(services):
    with services.db.transaction(readonly=True) as s:
        return list(s.scalars(select(InboundMail).order_by(InboundMail.id)))


def test_accepted_message_is_stored_with_its_envelope(services, door):
    """250 comes back only with the raw bytes, sender, recipient, peer and time committed."""
    raw = message()
    with smtplib.SMTP("127.0.0.1", door.port) as c:
        c.ehlo("mta.northwind.test")
        code, text = c.mail("anna@northwind.test")
        c.rcpt(OURS)
        code, text = c.data(raw)
    assert code == 250 and text.startswith(b"2.0.0 Stored as")
    [row] = rows(services)
    assert row.raw == raw and row.door == "smtp" and row.peer == "127.0.0.1"
    assert (row.mail_from, row.recipient, row.message_id) == ("anna@northwind.test", OURS, "<m1@northwind.test>")
    assert row.status.value == "new" and row.received_at == services.clock.now()


def test_foreign_recipients_are_refused_at_rcpt(services, door):
    """The door is never a relay: another domain gets 550 5.1.1 and nothing is stored."""
    with smtplib.SMTP("127.0.0.1", door.port) as c:
        c.ehlo()
        c.mail("spammer@evil.test")
        code, text = c.rcpt("victim@elsewhere.test")
        assert code == 550 and text.startswith(b"5.1.1")
        assert c.rcpt("support@desk.example.test.evil.test")[0] == 550
    assert rows(services) == []


def test_aliases_are_ours(services):
    services.settings = services.settings.replace(mail_aliases="help.example.test, @billing.example.test")
    controller = DoorController(services, host="127.0.0.1", port=free_port())
    controller.start()
    try:
        with smtplib.SMTP("127.0.0.1", controller.port) as c:
            assert c.sendmail("a@x.test", ["help@help.example.test", "x@billing.example.test"], message()) == {}
    finally:
        controller.stop()
    assert sorted(r.recipient for r in rows(services)) == ["help@help.example.test", "x@billing.example.test"]


def test_size_is_advertised_and_enforced(services, door):
    """SIZE is in EHLO; too big is 552 5.3.4 whether announced in MAIL FROM or found in DATA."""
    with smtplib.SMTP("127.0.0.1", door.port) as c:
        c.ehlo()
        assert c.esmtp_features["size"] == "50000"
        code, text = c.mail("a@x.test", ["SIZE=60000"])
        assert code == 552 and text.startswith(b"5.3.4")
        c.rset()
        c.mail("a@x.test")
        c.rcpt(OURS)
        code, text = c.data(message(body="x" * 60_000))
        assert code == 552 and text.startswith(b"5.3.4")
    assert rows(services) == []


def test_a_line_longer_than_rfc_5322_allows_is_still_stored(services, door):
    """Broken mailers send 5,000-character lines; refusing them would lose a client's mail."""
    with smtplib.SMTP("127.0.0.1", door.port) as c:
        assert c.sendmail("a@x.test", [OURS], message(body="y" * 5000)) == {}
    assert len(rows(services)) == 1


def test_redelivery_is_accepted_and_stored_once(services, door):
    """An MTA that retries after a lost 250 gets 250 again, and the inbox keeps one row."""
    for _ in range(3):
        with smtplib.SMTP("127.0.0.1", door.port) as c:
            assert c.sendmail("anna@northwind.test", [OURS], message()) == {}
    assert len(rows(services)) == 1


def test_one_row_per_recipient(services, door):
    with smtplib.SMTP("127.0.0.1", door.port) as c:
        c.sendmail("a@x.test", [OURS, "billing@desk.example.test", OURS], message())
    assert sorted(r.recipient for r in rows(services)) == ["billing@desk.example.test", OURS]


def test_database_unavailable_answers_451_then_250_when_it_returns(services, door, db_url):
    """A store that fails is a 451 (the MTA retries), never a 5xx; the same session works once it is back."""
    with smtplib.SMTP("127.0.0.1", door.port) as c:
        c.ehlo()
        with database_down(services, db_url):
            c.mail("anna@northwind.test")
            c.rcpt(OURS)
            code, text = c.data(message(1))
            assert code == 451 and text.startswith(b"4.3.0")
        c.rset()
        assert c.sendmail("anna@northwind.test", [OURS], message(1)) == {}
    assert len(rows(services)) == 1


class database_down:
    """Makes the real database refuse: an exclusive lock on SQLite, no new connections on PostgreSQL."""

    def __init__(self, services, db_url):
        self.services, self.db_url = services, db_url

    def __enter__(self):
        from sqlalchemy import create_engine, text
        if self.db_url.startswith("sqlite"):
            import sqlite3
            self.lock = sqlite3.connect(self.db_url.removeprefix("sqlite:///"), isolation_level=None)
            self.lock.execute("BEGIN EXCLUSIVE")
            self._busy(0.2)
        else:
            name = self.db_url.rsplit("/", 1)[1]
            self.admin = create_engine(self.db_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
            with self.admin.connect() as conn:
                conn.execute(text(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"))
                conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"))
        return self

    def _busy(self, seconds):
        from handlers.db import Database
        old = self.services.db
        self.services.settings = self.services.settings.replace(db_busy_timeout=seconds)
        self.services.db = Database(self.services.settings)
        old.dispose()

    def __exit__(self, *exc):
        from sqlalchemy import text
        if self.db_url.startswith("sqlite"):
            self.lock.execute("ROLLBACK")
            self.lock.close()
            self._busy(10)
        else:
            name = self.db_url.rsplit("/", 1)[1]
            with self.admin.connect() as conn:
                conn.execute(text(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"))
            self.admin.dispose()


def test_a_bug_while_storing_is_451_not_500(services, door, monkeypatch):
    """Whatever goes wrong inside, the door tells the MTA to try again rather than bounce."""
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr(inbox, "insert_many", broken)
    with smtplib.SMTP("127.0.0.1", door.port) as c:
        c.ehlo()
        c.mail("a@x.test")
        c.rcpt(OURS)
        code, _ = c.data(message())
    assert code == 451


def test_lmtp_answers_once_per_recipient(services, lmtp_door):
    """RFC 2033: after DATA, one status line for each accepted recipient."""
    with smtplib.LMTP("127.0.0.1", lmtp_door.port) as c:
        assert c.ehlo()[0] == 250                   # smtplib sends LHLO for LMTP
        c.mail("anna@northwind.test")
        assert c.rcpt(OURS)[0] == 250
        assert c.rcpt("billing@desk.example.test")[0] == 250
        assert c.rcpt("someone@else.test")[0] == 550
        first = c.data(message())
        second = c.getreply()
    assert first[0] == 250 and b"<support@desk.example.test> stored as" in first[1]
    assert second[0] == 250 and b"<billing@desk.example.test> stored as" in second[1]
    assert len(rows(services)) == 2 and {r.door for r in rows(services)} == {"lmtp"}


def test_connections_per_peer_are_capped(services, door):
    """A fourth simultaneous connection from one address is told 421 and closed; the first three work."""
    clients = [smtplib.SMTP("127.0.0.1", door.port) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", door.port), timeout=5) as extra:
            assert extra.recv(200).startswith(b"421 4.7.0")
        assert clients[0].sendmail("a@x.test", [OURS], message()) == {}
    finally:
        for c in clients:
            c.quit()
    with smtplib.SMTP("127.0.0.1", door.port) as again:   # closed connections free their slots
        assert again.noop()[0] == 250


def test_starttls_with_the_configured_certificate(services, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    services.settings = services.settings.replace(smtp_tls_cert=str(cert), smtp_tls_key=str(key))
    controller = DoorController(services, host="127.0.0.1", port=free_port())
    controller.start()
    try:
        with smtplib.SMTP("127.0.0.1", controller.port) as c:
            c.starttls(context=ssl.create_default_context(cafile=str(cert)))
            assert c.sendmail("a@x.test", [OURS], message()) == {}
    finally:
        controller.stop()
    assert len(rows(services)) == 1


def test_flood_is_stored_then_throttled_by_the_processor(services, door):
    """Past the hourly cap a sender's mail is kept (250, nothing lost); processing marks it throttled."""
    from mail_ingest.process import process_batch
    services.settings = services.settings.replace(sender_hourly_cap=3)
    with smtplib.SMTP("127.0.0.1", door.port) as c:
        for n in range(5):
            assert c.sendmail("flood@x.test", [OURS], message(n, sender="flood@x.test")) == {}
        c.sendmail("calm@x.test", [OURS], message(99, sender="calm@x.test"))
    process_batch(services)
    throttled = {r.message_id: r.throttled for r in rows(services)}
    assert len(throttled) == 6
    assert [throttled[f"<m{n}@northwind.test>"] for n in range(5)] == [False, False, False, True, True]
    assert throttled["<m99@northwind.test>"] is False


def test_port_in_use_is_a_clear_error(services):
    from handlers.errors import SettingsError
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        controller = DoorController(services, host="127.0.0.1", port=taken.getsockname()[1])
        with pytest.raises(SettingsError, match="RENEWDESK_SMTP_PORT: cannot listen for mail"):
            controller.start()


def test_lmtp_answers_every_rcpt_even_two_spellings_of_one_address(services, lmtp_door):
    """Two RCPTs that name one mailbox are one row, but LMTP still owes two replies (RFC 2033)."""
    with smtplib.LMTP("127.0.0.1", lmtp_door.port, timeout=10) as c:
        c.ehlo()
        c.mail("anna@northwind.test")
        c.rcpt(OURS)
        c.rcpt("Support@Desk.Example.Test")
        first, second = c.data(message()), c.getreply()
    assert first[0] == second[0] == 250
    assert len(rows(services)) == 1


@pytest.mark.parametrize("bad_id", ["<" + "漢" * 900 + "@x.test>", "<nul\x00inside@x.test>"])
def test_a_hostile_message_id_is_replaced_not_refused(services, door, bad_id):
    """A Message-ID too big for the key's index, or with a NUL, would make the message unstorable
    (451 forever, and its batch with it): the content names the message instead."""
    raw = f"From: a@x.test\r\nMessage-ID: {bad_id}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    with smtplib.SMTP("127.0.0.1", door.port) as c:
        assert c.sendmail("a@x.test", [OURS], raw) == {}
        assert c.sendmail("b@x.test", [OURS], message(7)) == {}
    [hostile, good] = rows(services)
    assert hostile.message_id.endswith("@derived.renewdesk.invalid>") and hostile.raw == raw
    assert good.message_id == "<m7@northwind.test>"


def test_the_writer_survives_its_own_error(services):
    """If forming a batch fails, that batch is told to retry (451) and the next one is stored."""
    from mail_ingest.receive import GroupCommitter
    calls = []

    def pending():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug while forming the batch")
        return 0
    committer = GroupCommitter(services, linger=0.01, pending=pending)
    try:
        failed = committer.submit(inbox.Incoming(message(1), "smtp", "a@x.test", (OURS,)))
        assert "could not store" in str(failed.exception(timeout=10))
        ok = committer.submit(inbox.Incoming(message(2), "smtp", "a@x.test", (OURS,)))
        assert ok.result(timeout=10)[0].duplicate is False
    finally:
        committer.close()
    assert len(rows(services)) == 1


def test_the_writer_waits_only_for_sessions_in_the_middle_of_a_mail(door, services):
    """The count the writer lingers on: a session counts from MAIL FROM until it has handed over
    its DATA, or RSET, or went away; a connection that only said EHLO never counts."""
    import time
    handler = door.handler

    def settled(expected):
        deadline = time.monotonic() + 5
        while handler.in_flight() != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return handler.in_flight()

    idle = smtplib.SMTP("127.0.0.1", door.port)
    idle.ehlo()
    with smtplib.SMTP("127.0.0.1", door.port) as a, smtplib.SMTP("127.0.0.1", door.port) as b:
        assert settled(0) == 0
        a.ehlo(), b.ehlo()
        a.mail("a@x.test")
        b.mail("b@x.test")
        assert settled(2) == 2
        b.rset()
        assert settled(1) == 1
        a.rcpt(OURS)
        assert a.data(message(11))[0] == 250
        assert settled(0) == 0
        b.mail("b@x.test")
        assert settled(1) == 1
    assert settled(0) == 0  # b went away in the middle of its mail
    idle.quit()
    assert [r.message_id for r in rows(services)] == ["<m11@northwind.test>"]
