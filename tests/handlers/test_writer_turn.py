"""SQLite writers of different processes take turns on a lock file, and the turn never traps anyone.

What the turn is for (its speed) is measured in bench/ingest.py; these tests pin what it must
never do: let two writers in at once, leave a writer stuck behind a dead or hung process, make
a reader wait, or deadlock a thread that nests a write in its own.
"""
import subprocess
import sys
import threading
import time

import pytest

from handlers.db import WriterTurn
from handlers.models import Account
from handlers.services import Services
from handlers.settings import load_settings
from tests.support import proc

HOLDER = """
import sys, time
from handlers.models import Account
from handlers.services import Services
from handlers.settings import load_settings
services = Services(load_settings({}, database_url=sys.argv[1], secret_key="t"))
with services.db.transaction() as s:
    s.add(Account(ref="holder", name="Holder", currency="EUR", created_at=services.clock.now()))
    s.flush()
    print("holding", flush=True)
    sys.stdin.readline()
    print(repr(time.monotonic()), flush=True)
"""

TURN_ONLY = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def lite(tmp_path, sqlite_template):
    """Services on a SQLite file of their own (the turn is SQLite's; PostgreSQL locks rows)."""
    import shutil
    made = []

    def make(**overrides):
        db = tmp_path / f"turn{len(made)}.db"
        shutil.copy(sqlite_template, db)
        made.append(Services(load_settings({}, database_url=f"sqlite:///{db}", secret_key="t", **overrides)))
        return made[-1], str(db)
    yield make
    for services in made:
        services.close()


def _holder(code, arg):
    child = subprocess.Popen([sys.executable, "-c", code, arg], cwd=proc.ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "holding"
    return child


def _add(services, ref):
    def op(tx):
        tx.session.add(Account(ref=ref, name=ref, currency="EUR", created_at=tx.now))
        return time.monotonic()
    return services.run(op)


def test_a_writer_waits_for_the_turn_and_goes_on_as_soon_as_it_is_free(lite):
    """While another process holds only the lock file (SQLite's lock is free), our write waits;
    it goes on once that process lets go."""
    services, db = lite()
    holder = _holder(TURN_ONLY, db + "-writer.lock")
    result = {}
    writer = threading.Thread(target=lambda: result.update(at=_add(services, "waited")))
    writer.start()
    time.sleep(0.3)
    assert writer.is_alive(), "the write went on while another process held the turn"
    released_at = time.monotonic()
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(10) == 0
    writer.join(10)
    assert result["at"] >= released_at
    with services.db.transaction(readonly=True) as s:
        assert [a.ref for a in s.query(Account)] == ["waited"]


def test_a_writer_waits_for_another_process_and_goes_on_when_it_commits(lite):
    """Our write starts only after the other process's transaction has ended, and both rows land."""
    services, db = lite()
    holder = _holder(HOLDER, f"sqlite:///{db}")
    result = {}
    writer = threading.Thread(target=lambda: result.update(at=_add(services, "second")))
    writer.start()
    time.sleep(0.3)
    assert writer.is_alive(), "the write went on while another process held the turn"
    holder.stdin.write("\n")
    holder.stdin.flush()
    released_at = float(holder.stdout.readline())
    writer.join(10)
    assert holder.wait(10) == 0
    assert result["at"] >= released_at
    with services.db.transaction(readonly=True) as s:
        assert sorted(a.ref for a in s.query(Account)) == ["holder", "second"]


def test_a_process_killed_holding_the_turn_does_not_block_the_next_writer(lite):
    """The kernel drops a dead process's lock: the next write goes through at once."""
    services, db = lite()
    holder = _holder(HOLDER, f"sqlite:///{db}")
    holder.kill()
    holder.wait(10)
    started = time.monotonic()
    _add(services, "after-kill")
    assert time.monotonic() - started < services.settings.db_busy_timeout
    with services.db.transaction(readonly=True) as s:
        assert [a.ref for a in s.query(Account)] == ["after-kill"]  # the dead one's row never committed


def test_a_hung_turn_holder_delays_a_writer_by_the_timeout_and_no_more(lite):
    """A process that holds only the lock file (not SQLite's lock) for ever: after the busy
    timeout the writer goes on without the turn, and its write lands."""
    services, db = lite(db_busy_timeout=0.5)
    holder = _holder(TURN_ONLY, db + "-writer.lock")
    try:
        started = time.monotonic()
        _add(services, "late")
        waited = time.monotonic() - started
        assert 0.5 <= waited < 5
        with services.db.transaction(readonly=True) as s:
            assert [a.ref for a in s.query(Account)] == ["late"]
    finally:
        holder.kill()
        holder.wait(10)


def test_readers_do_not_wait_for_the_turn(lite):
    """A read-only transaction runs while another process holds the turn and SQLite's write lock."""
    services, db = lite()
    holder = _holder(HOLDER, f"sqlite:///{db}")
    try:
        started = time.monotonic()
        with services.db.transaction(readonly=True) as s:
            assert s.query(Account).count() == 0  # the holder's row is not committed
        assert time.monotonic() - started < 1
    finally:
        holder.kill()
        holder.wait(10)


def test_a_thread_holding_the_turn_may_enter_it_again_and_other_threads_queue(tmp_path):
    """Nested entries in one thread go straight on; another thread of the process waits its turn."""
    turn = WriterTurn(str(tmp_path / "x.db-writer.lock"), timeout=5)
    order = []
    with turn():
        with turn():  # nested: must not deadlock on its own lock
            order.append("nested")
        def other_thread():
            with turn():
                order.append("other")
        other = threading.Thread(target=other_thread)
        other.start()
        time.sleep(0.2)
        order.append("outer done")
    other.join(5)
    assert order == ["nested", "outer done", "other"]


def test_no_turn_without_a_database_file(tmp_path):
    """In-memory SQLite and an unwritable directory fall back to SQLite's own waiting."""
    from sqlalchemy import create_engine
    assert WriterTurn.for_engine(create_engine("sqlite://"), 1).path is None
    assert WriterTurn.for_engine(create_engine("postgresql+psycopg://u@localhost/x"), 1).path is None
    missing = WriterTurn(str(tmp_path / "no" / "such" / "dir" / "x.lock"), timeout=1)
    with missing():  # cannot create the lock file: goes on at once
        pass
