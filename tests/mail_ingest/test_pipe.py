"""`renewdesk pipe` as an MTA runs it: exit 0 stored, 75 try later, 65 refused for good."""
import sqlite3

import pytest

from tests.support import proc

RAW = b"From: Anna <anna@northwind.test>\r\nSubject: Renewal\r\nMessage-ID: <pipe1@northwind.test>\r\n\r\nrenew all\r\n"


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/renewdesk.db"
    assert proc.run("db", "upgrade", env=proc.env_for(DATABASE_URL=url)).returncode == 0
    return url


def pipe(db, raw, *args, **env):
    return proc.run("pipe", *args, env=proc.env_for(**{"DATABASE_URL": db, **env}), input=raw)


def stored(db):
    with sqlite3.connect(db.removeprefix("sqlite:///")) as c:
        return c.execute("SELECT door, mail_from, recipient, raw FROM inbound_mail").fetchall()


def test_stored_message_exits_0(db):
    r = pipe(db, RAW, "--recipient", "renew+abc@desk.example.test", "--sender", "anna@northwind.test")
    assert r.returncode == 0, r.stderr
    assert stored(db) == [("pipe", "anna@northwind.test", "renew+abc@desk.example.test", RAW)]


def test_redelivery_exits_0_and_stays_one_row(db):
    for _ in range(2):
        assert pipe(db, RAW, "--recipient", "support@desk.example.test").returncode == 0
    assert len(stored(db)) == 1


def test_too_large_exits_65_and_stores_nothing(db):
    r = pipe(db, RAW + b"x" * 2000, RENEWDESK_MAX_MESSAGE_BYTES="1000")
    assert r.returncode == 65 and "larger than 1000 bytes" in r.stderr.decode()
    assert stored(db) == []


def test_not_our_domain_exits_65(db):
    r = pipe(db, RAW, "--recipient", "someone@elsewhere.test")
    assert r.returncode == 65 and stored(db) == []


def test_locked_database_exits_75_and_the_retry_stores_it(db):
    """The MTA keeps the message on 75 and tries again: nothing is lost while the database is busy."""
    lock = sqlite3.connect(db.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        r = pipe(db, RAW, "--recipient", "support@desk.example.test", RENEWDESK_DB_BUSY_TIMEOUT="0.2")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert r.returncode == 75 and "try again later" in r.stderr.decode()
    assert pipe(db, RAW, "--recipient", "support@desk.example.test").returncode == 0
    assert len(stored(db)) == 1


def test_unusable_settings_exit_75_not_a_bounce(db):
    """Even a broken configuration defers the mail (EX_TEMPFAIL) instead of bouncing it."""
    r = pipe(db, RAW, DATABASE_URL="nonsense")
    assert r.returncode == 75 and "DATABASE_URL" in r.stderr.decode()
