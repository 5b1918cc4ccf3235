"""Fixtures shared by every test.

``services`` gives an operation-level test a real database with the migrated schema and a
fixed clock. It is parametrized: every test that uses it runs once on SQLite and once on a
real PostgreSQL started in a temporary directory (skipped with a reason when PostgreSQL is
not installed, a failure under ``RENEWDESK_REQUIRE_SERVERS=1``).
"""
from __future__ import annotations

import itertools
import shutil

import pytest
from sqlalchemy import create_engine, text

from handlers.clock import FixedClock
from handlers.services import Services
from handlers.settings import load_settings
from renewdesk.migrate import upgrade
from tests.support.dovecot import dovecot_server, imap_user  # noqa: F401  (fixtures for the IMAP tests)
from tests.support.servers import PostgresServer

START = "2026-11-21T09:00:00+00:00"
_counter = itertools.count()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A migrated SQLite file, copied for each test (migrating once is the slow part)."""
    path = tmp_path_factory.mktemp("tmpl") / "template.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_server():
    server = PostgresServer().start()
    try:
        engine = create_engine(server.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("CREATE DATABASE tmpl"))
        engine.dispose()
        migrated = create_engine(server.url("tmpl"))
        upgrade(migrated)
        migrated.dispose()
        yield server
    finally:
        server.stop()


def _pg_database(server: PostgresServer) -> str:
    """A fresh database cloned from the migrated template."""
    name = f"t{next(_counter)}"
    engine = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE tmpl"))
    engine.dispose()
    return server.url(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path, sqlite_template):
    """The URL of an empty, migrated database: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "renewdesk.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    return _pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def other_db_url(db_url, tmp_path, sqlite_template, request):
    """A second empty, migrated database of the same kind as ``db_url``: two runs compared side by side."""
    if db_url.startswith("sqlite"):
        path = tmp_path / "other.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    return _pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def clock():
    return FixedClock(START)


@pytest.fixture
def settings(db_url, tmp_path):
    return load_settings({}, database_url=db_url, secret_key="test-secret", mail_domain="desk.example.test",
                         outbound_smtp_url="smtp://127.0.0.1:1")


@pytest.fixture
def services(settings, clock):
    svc = Services(settings, clock=clock)
    yield svc
    svc.close()
