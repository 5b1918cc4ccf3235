"""The unit of work and column types keep their promises on both databases."""
import datetime as dt
import shutil

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from handlers.errors import TemporaryFailure
from handlers.models import Account, AuditEvent, Notice
from handlers.services import Services
from handlers.settings import load_settings


def _account(tx, ref="acme"):
    acc = Account(ref=ref, name="Acme", currency="EUR", created_at=tx.now)
    tx.session.add(acc)
    tx.session.flush()
    return acc.id


def test_run_commits_once_and_rolls_back_on_error(services):
    """An operation's writes land together or not at all."""
    def failing(tx):
        _account(tx, "will-vanish")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        services.run(failing)
    services.run(_account, "kept")
    with services.db.transaction(readonly=True) as s:
        assert [a.ref for a in s.scalars(select(Account))] == ["kept"]


def test_times_come_back_aware_utc_and_naive_is_refused(services, clock):
    """Times round-trip as aware UTC; a naive datetime is an error, not a guess."""
    local = dt.datetime(2026, 11, 21, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    clock.set(local)
    acc_id = services.run(_account)
    with services.db.transaction(readonly=True) as s:
        created = s.get(Account, acc_id).created_at
    assert created.tzinfo is not None and created.utcoffset() == dt.timedelta(0)
    assert created == local

    def naive(tx):
        tx.session.add(Account(ref="n", name="N", currency="EUR", created_at=dt.datetime(2026, 1, 1)))
    with pytest.raises(Exception, match="naive datetime"):
        services.run(naive)


def test_notice_unique_key_refuses_a_second_claim(services):
    """The notice table's unique key is what makes a reminder exactly-once."""
    acc_id = services.run(_account)

    def claim(tx):
        tx.session.add(Notice(kind="renewal_reminder", subject_type="service", subject_id=1, occasion="-5d",
                              occasion_date=dt.date(2026, 12, 1), account_id=acc_id, created_at=tx.now))
    services.run(claim)
    with pytest.raises(IntegrityError):
        services.run(claim)
    with services.db.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Notice)) == 1


def test_audit_records_actor_and_subject(services):
    def op(tx):
        acc_id = _account(tx)
        tx.audit("account.create", subject=("account", acc_id), account_id=acc_id, name="Acme")
    services.run(op, actor="staff:U1")
    with services.db.transaction(readonly=True) as s:
        ev = s.scalars(select(AuditEvent)).one()
    assert (ev.actor, ev.action, ev.subject_type, ev.detail) == ("staff:U1", "account.create", "account",
                                                                 {"name": "Acme"})


def test_secret_key_is_generated_once_and_shared(settings, clock):
    """Without RENEWDESK_SECRET_KEY the key is generated into the database and reused by every process."""
    no_key = settings.replace(secret_key=None)
    a, b = Services(no_key, clock=clock), Services(no_key, clock=clock)
    try:
        assert a.secret_key == b.secret_key and len(a.secret_key) >= 32
        assert a.sign("ticket", "7") == b.sign("ticket", "7") != a.sign("ticket", "8")
    finally:
        a.close()
        b.close()


def test_unreachable_database_is_a_temporary_failure(tmp_path, clock):
    """A database that cannot be opened surfaces as TemporaryFailure (451 / exit 75), not a crash."""
    svc = Services(load_settings({}, database_url=f"sqlite:///{tmp_path}/missing/dir/x.db"), clock=clock)
    with pytest.raises(TemporaryFailure, match="database unavailable"):
        svc.db.ping()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path, clock):
    """The embedded database gets WAL (readers never block the writer) and enforced foreign keys."""
    svc = Services(load_settings({}, database_url=f"sqlite:///{tmp_path}/wal.db"), clock=clock)
    with svc.db.transaction(readonly=True) as s:
        conn = s.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    svc.close()


def test_sqlite_checkpoints_move_from_the_writers_commits_to_a_thread(tmp_path, clock, sqlite_template):
    """With checkpoint_in_background (the SMTP door's and the worker's processes), this process's
    connections never copy the WAL into the database inside a commit (wal_autocheckpoint 0, so a
    writer's turn on the write lock is its transaction alone); the thread copies it instead."""
    import os
    import threading
    import time
    path = tmp_path / "ckpt.db"
    shutil.copy(sqlite_template, path)
    svc = Services(load_settings({}, database_url=f"sqlite:///{path}", secret_key="test-secret"), clock=clock)
    svc.run(_account, "first")
    stop = threading.Event()
    thread = svc.db.checkpoint_in_background(stop, interval=0.05)
    try:
        with svc.db.transaction(readonly=True) as s:
            assert s.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        size = os.path.getsize(path)

        def many(tx):
            for n in range(300):  # a few thousand pages: past the default checkpoint of 1,000
                tx.audit("bulk", detail=str(n) * 2000)
        svc.run(many)
        deadline = time.monotonic() + 10
        while os.path.getsize(path) < size + 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.getsize(path) >= size + 1_000_000    # the thread copied the pages in
    finally:
        stop.set()
        thread.join(timeout=5)
        svc.close()
    assert not thread.is_alive()


def test_a_checkpoint_that_keeps_failing_is_warned_about_once(tmp_path, clock, sqlite_template, monkeypatch, caplog):
    """Failed rounds are retried quietly; the 20th in a row is a warning (the WAL keeps growing)."""
    import threading
    import time

    import handlers.db as db
    calls = []

    def refused(engine):
        calls.append(1)
        raise RuntimeError("database table is locked")
    monkeypatch.setattr(db, "_checkpoint", refused)
    path = tmp_path / "warn.db"
    shutil.copy(sqlite_template, path)
    svc = Services(load_settings({}, database_url=f"sqlite:///{path}", secret_key="test-secret"), clock=clock)
    stop = threading.Event()
    with caplog.at_level("DEBUG", logger="renewdesk.db"):
        thread = svc.db.checkpoint_in_background(stop, interval=0.005)
        deadline = time.monotonic() + 10
        while len(calls) < db.CHECKPOINT_PATIENCE + 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join(timeout=5)
    svc.close()
    failures = [r for r in caplog.records if "WAL checkpoint failed" in r.getMessage()]
    assert len(failures) >= db.CHECKPOINT_PATIENCE + 5
    assert [r.levelname for r in failures].count("WARNING") == 1
    assert "20 time(s) in a row: database table is locked" in next(
        r.getMessage() for r in failures if r.levelname == "WARNING")


def test_only_server_trouble_counts_as_transient(services, db_url):
    """A statement the database refuses for its content is not "try later" (it would fail forever)."""
    from sqlalchemy.exc import DBAPIError

    from handlers.db import is_transient
    with pytest.raises(DBAPIError) as refused:
        with services.db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT * FROM no_such_table")
    assert not is_transient(refused.value)
