"""A daily sweep killed with SIGKILL half way, then run again, ends exactly where one clean run ends.

`renewdesk sweep --at` runs as a real process over accounts that each have renewal reminders,
invoice reminders, overdue notices, an automatic suspension or an automatic renewal due. On
one database it runs once, undisturbed. On a second database, filled from the same import
document, it is killed while the notices are still being written (some but not all of them
are in the database), then started again. Both databases must then hold the same notices,
suspensions, service states and outgoing mail, none of them twice.
"""
import datetime as dt
import signal
import time

import pytest
from sqlalchemy import create_engine, func, select

from handlers.clock import FixedClock
from handlers.importer import import_document
from handlers.models import Notice
from handlers.services import Services
from handlers.settings import load_settings
from tests.support import proc
from tests.support.sweep_world import doubled, outcome, world

DAY0 = dt.date(2026, 11, 21)
AT = "2026-11-21T08:00:00+00:00"
ACCOUNTS = 30


def _loaded(db_url):
    svc = Services(load_settings({}, database_url=db_url, secret_key="sweep-crash"), clock=FixedClock(AT))
    svc.run(import_document, world(ACCOUNTS, DAY0), actor="test")
    return svc


def _env(db_url):
    return proc.env_for(DATABASE_URL=db_url, RENEWDESK_SECRET_KEY="sweep-crash")


def _notice_count(engine):
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Notice))


@pytest.mark.slow
def test_a_sweep_killed_half_way_and_run_again_equals_one_clean_run(db_url, other_db_url):
    clean, crashed = _loaded(db_url), _loaded(other_db_url)
    try:
        done = proc.run("sweep", "--at", AT, env=_env(db_url), timeout=240)
        assert done.returncode == 0, done.stderr.decode()
        expected = outcome(clean)
        total = sum(expected["notices"].values())
        assert total > 4 * ACCOUNTS and expected["suspensions"] and not doubled(expected["mails"])

        engine = create_engine(other_db_url)
        victim = proc.start("sweep", "--at", AT, env=_env(other_db_url))
        seen, deadline = 0, time.monotonic() + 240
        while victim.poll() is None and time.monotonic() < deadline:
            seen = _notice_count(engine)
            if total // 3 <= seen < total:  # mid-way: some notices written, not all
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        victim.wait(timeout=30)
        assert victim.returncode == -signal.SIGKILL, f"the sweep was not caught mid-way (saw {seen} of {total})"
        half = _notice_count(engine)
        engine.dispose()
        assert 0 < half < total

        again = proc.run("sweep", "--at", AT, env=_env(other_db_url), timeout=240)
        assert again.returncode == 0, again.stderr.decode()
        got = outcome(crashed)
        assert not doubled(got["notices"]) and not doubled(got["suspensions"]) and not doubled(got["mails"])
        for part in ("notices", "suspensions", "statuses", "accounts", "mails"):
            assert got[part] == expected[part], part
    finally:
        clean.close()
        crashed.close()
