"""`renewdesk run` and friends as real processes: start, answer /healthz, stop cleanly, fail clearly."""
import json
import signal
import smtplib
import socket
import time

import pytest

from renewdesk.migrate import head_revision
from tests.support import proc
from tests.support.servers import free_port


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path}/renewdesk.db"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_demo_serves_healthz_and_stops_cleanly(db, sig):
    """`run --demo` migrates an empty database, loads the demo, answers /healthz 200, exits 0 on a signal."""
    port, smtp_port = free_port(), free_port()
    p = proc.start("run", "--demo",
                   env=proc.env_for(DATABASE_URL=db, PORT=str(port), RENEWDESK_SMTP_PORT=str(smtp_port)))
    try:
        status, body = proc.wait_http(f"http://127.0.0.1:{port}/healthz", proc=p)
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok"
        assert health["database"]["ok"] and health["scheduler"]["alive"] and health["scheduler"]["running_here"]
        assert "backlog" in health["inbox"]
        # a demo contact's mail to the SMTP door of the same process is stored, then becomes a ticket
        with smtplib.SMTP("127.0.0.1", smtp_port) as c:
            c.sendmail("anna@northwind.test", ["support@desk.example.test"],
                       b"From: anna@northwind.test\r\nSubject: hello\r\nMessage-ID: <e2e@x>\r\n\r\nhi\r\n")
        assert _eventually(lambda: _inbox(db) == ["done"]), _inbox(db)
        listed = proc.run("staff", "--json", "ticket", "list", env=proc.env_for(DATABASE_URL=db))
        assert "hello" in [t["subject"] for t in json.loads(listed.stdout)["result"]], listed.stdout
        p.send_signal(sig)
        out = p.communicate(timeout=30)[0].decode()
    finally:
        p.kill()
    assert p.returncode == 0, out
    assert "demo data loaded" in out and f"{sig.name} received: stopping" in out and "Traceback" not in out
    # the demo is in the database: the staff grammar sees its accounts
    shown = proc.run("staff", "--json", "account", "show", "northwind", env=proc.env_for(DATABASE_URL=db))
    assert json.loads(shown.stdout)["ok"] is True, shown.stdout + shown.stderr


def _inbox(db):
    listed = proc.run("inbox", "list", "--json", env=proc.env_for(DATABASE_URL=db))
    return [row["status"] for row in json.loads(listed.stdout)]


def _eventually(check, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_smtp_process_stores_mail_and_stops_cleanly(db):
    """`renewdesk smtp` alone (a Procfile process) answers 250 after storing and exits 0 on SIGTERM."""
    proc.run("db", "upgrade", env=proc.env_for(DATABASE_URL=db))
    smtp_port = free_port()
    p = proc.start("smtp", env=proc.env_for(DATABASE_URL=db, RENEWDESK_SMTP_PORT=str(smtp_port)))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                c = smtplib.SMTP("127.0.0.1", smtp_port)
                break
            except OSError:
                assert time.monotonic() < deadline and p.poll() is None, "smtp door did not start"
                time.sleep(0.1)
        with c:
            assert c.sendmail("a@x.test", ["support@desk.example.test"], b"Subject: x\r\n\r\nbody\r\n") == {}
        assert _inbox(db) == ["new"]            # no processor in this process: it stays new for a worker
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=30)[0].decode()
    finally:
        p.kill()
    assert p.returncode == 0 and "SMTP door listening" in out and "Traceback" not in out


def test_smtp_port_in_use_is_one_clear_line(db):
    proc.run("db", "upgrade", env=proc.env_for(DATABASE_URL=db))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = proc.run("smtp", env=proc.env_for(DATABASE_URL=db, RENEWDESK_SMTP_PORT=str(port)))
    assert r.returncode == 78
    assert r.stderr.decode().strip().splitlines()[-1].startswith(
        f"renewdesk: RENEWDESK_SMTP_PORT: cannot listen for mail on 127.0.0.1:{port}")


def test_unparseable_database_url_is_one_clear_line(db):
    r = proc.run("run", env=proc.env_for(DATABASE_URL="postgres//nope", PORT=str(free_port())))
    err = r.stderr.decode()
    assert r.returncode == 78
    assert err.strip() == "renewdesk: DATABASE_URL: not a database URL: 'postgres//nope'"


def test_port_in_use_is_one_clear_line(db):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = proc.run("run", env=proc.env_for(DATABASE_URL=db, PORT=str(port)))
    err = r.stderr.decode().strip()
    assert r.returncode == 78 and "Traceback" not in err
    assert err == f"renewdesk: PORT: cannot listen for the web app on 127.0.0.1:{port}: Address already in use"


def test_unreachable_database_is_one_clear_line_and_tempfail(tmp_path):
    r = proc.run("status", env=proc.env_for(DATABASE_URL=f"sqlite:///{tmp_path}/no/such/dir.db"))
    assert r.returncode == 75
    assert r.stderr.decode().strip().startswith("renewdesk: cannot open the database")


def test_web_and_worker_refuse_an_unmigrated_database(db):
    """Only `run` migrates by itself; the Procfile's processes ask for `db upgrade` instead of guessing."""
    r = proc.run("worker", env=proc.env_for(DATABASE_URL=db))
    assert r.returncode == 78 and "run `renewdesk db upgrade`" in r.stderr.decode()
    up = proc.run("db", "upgrade", env=proc.env_for(DATABASE_URL=db))
    assert up.returncode == 0 and f"database at {head_revision()}" in up.stdout.decode()


def test_status_reports_every_part(db):
    proc.run("db", "upgrade", env=proc.env_for(DATABASE_URL=db))
    r = proc.run("status", env=proc.env_for(DATABASE_URL=db))
    out = r.stdout.decode()
    assert r.returncode == 0
    for part in ("database   ok (sqlite)", "inbox ", "outbox ", "scheduler  NOT RUNNING"):
        assert part in out


def test_status_on_no_or_an_empty_database_is_one_line_and_creates_nothing(tmp_path):
    """`renewdesk status` where no database is, or an empty one: one line saying which database and what to
    run, exit 1, no file created (it used to create renewdesk.db and print a traceback)."""
    from tests.support.proc import env_for, run
    db = tmp_path / "here.db"
    none = run("status", env=env_for(DATABASE_URL=f"sqlite:///{db}"))
    assert none.returncode == 1 and not db.exists()
    assert none.stdout.decode().strip() == (f"database   NONE: there is no database at sqlite:///{db}; "
                                            "`renewdesk db upgrade` (or `renewdesk run`) creates it")
    db.touch()
    empty = run("status", env=env_for(DATABASE_URL=f"sqlite:///{db}"))
    assert empty.returncode == 1 and "EMPTY" in empty.stdout.decode() and b"Traceback" not in empty.stderr


def test_version_and_a_closed_pipe(tmp_path):
    """`renewdesk --version` names the version; output piped into a reader that stops early (`| head`)
    ends without a BrokenPipeError traceback."""
    import subprocess

    from tests.support.proc import command, env_for, run
    version = run("--version", env=env_for())
    assert version.returncode == 0 and version.stdout.decode().startswith("renewdesk ")
    env = env_for(DATABASE_URL=f"sqlite:///{tmp_path}/d.db", RENEWDESK_SECRET_KEY="x")
    assert run("db", "upgrade", env=env).returncode == 0
    proc = subprocess.Popen(command("staff", "help"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the answer is written, as `head -1` does
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
