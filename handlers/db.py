"""Engine and unit of work: one transaction per operation, SQLite in WAL mode, PostgreSQL via psycopg."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from typing import Any, Callable, Iterator

from sqlalchemy import create_engine, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from handlers.errors import TemporaryFailure
from handlers.settings import Settings

log = logging.getLogger("renewdesk.db")

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",        # readers never block the writer
    # committed means on disk, power loss included: an MTA deletes its copy once we answer 250
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA temp_store=MEMORY",
)


def dialect_insert(session: Session) -> Callable[..., Any]:
    """``insert`` of the session's database, which has ``on_conflict_do_nothing`` (SQLite and PostgreSQL)."""
    return insert_of(session.get_bind().dialect.name)


def insert_of(dialect: str) -> Callable[..., Any]:
    """:func:`dialect_insert` by the database kind's name (``conn.dialect.name``)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def keyed(session: Session, model: Any, key: str | None) -> Any:
    """The ``model`` row queued under ``dedupe_key`` ``key`` (the outboxes' exactly-once key), or None."""
    return None if key is None else session.scalar(select(model).where(model.dedupe_key == key))


def add_keyed(session: Session, row: Any) -> Any:
    """Add ``row`` and flush it; when another transaction queued a row under the same unique
    ``dedupe_key`` between the caller's look (:func:`keyed`) and this insert, that row instead."""
    if row.dedupe_key is None:
        session.add(row)
        session.flush()
        return row
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return keyed(session, type(row), row.dedupe_key)
    return row


def make_engine(settings: Settings) -> Engine:
    """An engine for ``settings.database_url`` with the pragmas and pool each database wants."""
    url = settings.database_url
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": settings.db_busy_timeout, "check_same_thread": False})
        _configure_sqlite(engine, int(settings.db_busy_timeout * 1000))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _configure_sqlite(engine: Engine, busy_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Let SQLAlchemy, not the driver, decide where transactions begin (see below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(pragma)
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")  # wait for the writer instead of failing at once
        if getattr(engine, "checkpoints_in_background", False):
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # BEGIN IMMEDIATE takes the write lock up front: two writers queue on busy_timeout
        # instead of one failing with "database is locked" when it upgrades a read lock.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("readonly") else "BEGIN IMMEDIATE")


# PostgreSQL SQLSTATE classes that mean "the server, not the statement": connection trouble,
# shutdown, out of resources, serialization failure or deadlock (retrying helps).
_PG_TRANSIENT = ("08", "53", "57P", "40001", "40P01", "55P03")
# SQLite messages that mean the same: locked, busy, cannot open, I/O or full disk.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "database or disk is full", "readonly")


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying later: the database is down, locked, busy or unreachable.

    A statement the database refuses for what it contains (a value too large for an index, a
    NUL in text) is not transient: retrying it would fail forever.
    """
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code:
        return code.startswith(_PG_TRANSIENT)
    if isinstance(exc, OperationalError):
        text = str(orig).lower()
        if "sqlite" in type(orig).__module__:
            return any(marker in text for marker in _SQLITE_TRANSIENT)
        return True  # a driver error without a code is a connection failure
    return False


class WriterTurn:
    """SQLite: the writers of all our processes take turns on a lock file before BEGIN IMMEDIATE.

    SQLite has one write lock, and a connection that finds it taken waits in SQLite's busy
    handler, which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 50, 50, 100 ms between tries: a door
    waiting out the worker's 40 ms batch may sleep 50 ms past its end while its senders wait
    for their 250. Here a writer first takes ``<database>-writer.lock`` (``flock``; the kernel
    drops it when a process dies), looking again every half millisecond, so the turn passes on
    within a millisecond; only then does SQLite's lock come, free. Threads of one process queue
    on a lock of their own first. A nested write in a thread that has the turn goes straight on,
    and after ``timeout`` seconds a writer goes on without the turn (SQLite's own waiting then
    decides, as before): the turn can make a writer faster, never stuck. Readers never wait for it.
    """

    POLL = 0.0005

    def __init__(self, path: str | None, timeout: float):
        self.path, self.timeout = path, timeout
        self._mine = threading.local()
        self._threads = threading.Lock()

    @classmethod
    def for_engine(cls, engine: Engine, timeout: float) -> "WriterTurn":
        db = engine.url.database if engine.dialect.name == "sqlite" else None
        return cls(f"{db}-writer.lock" if db and db != ":memory:" and not db.startswith("file:") else None, timeout)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.path is None or getattr(self._mine, "held", False):
            yield
            return
        deadline = time.monotonic() + self.timeout
        threads = self._threads.acquire(timeout=self.timeout)
        fd = self._take(deadline) if threads else None
        self._mine.held = True
        try:
            yield
        finally:
            self._mine.held = False
            if fd is not None:
                os.close(fd)  # closing the descriptor releases the flock
            if threads:
                self._threads.release()

    def _take(self, deadline: float) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # a read-only directory: SQLite's own waiting will do
            log.debug("no writer turn (%s): %s", self.path, exc)
            return None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(self.POLL)
            except OSError:  # a file system without flock
                os.close(fd)
                return None


class Database:
    """The engine and its session factory; ``transaction()`` is the unit of work."""

    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine or make_engine(settings)
        self.turn = WriterTurn.for_engine(self.engine, settings.db_busy_timeout)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readonly = sessionmaker(self.engine.execution_options(readonly=True), expire_on_commit=False)

    @contextlib.contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.

        A database that is down or locked surfaces as :class:`TemporaryFailure`, which every
        door translates into "try again later" (451, exit 75, a retry).
        """
        factory = self._readonly if readonly else self._sessions
        try:
            with (contextlib.nullcontext() if readonly else self.turn()), factory() as session, session.begin():
                yield session
        except (OperationalError, DBAPIError) as exc:
            if is_transient(exc):
                raise TemporaryFailure(f"database unavailable: {_short(exc)}") from exc
            raise

    @contextlib.contextmanager
    def core_transaction(self) -> Iterator[Connection]:
        """One transaction on a Core connection, for hot paths that need no ORM (the mail doors)."""
        try:
            with self.turn(), self.engine.begin() as conn:
                yield conn
        except (OperationalError, DBAPIError) as exc:
            if is_transient(exc):
                raise TemporaryFailure(f"database unavailable: {_short(exc)}") from exc
            raise

    def checkpoint_in_background(self, stop: threading.Event, interval: float = 0.5) -> threading.Thread | None:
        """SQLite: move WAL checkpoints off the commit path of this process's writers.

        By default the commit that pushes the WAL past 1000 pages also copies it into the
        database and syncs it, inside the writer's turn: the SMTP sessions waiting on that
        commit, or on the processor's, pay for it. Here our connections never checkpoint; a
        thread does it every ``interval`` seconds (PASSIVE: it never waits for, or blocks, a
        writer). The SMTP door and the worker call this; other processes keep SQLite's default.
        """
        if not self.settings.is_sqlite:
            return None
        self.engine.checkpoints_in_background = True  # read by the connect hook
        self.engine.dispose()  # connections opened from now on get wal_autocheckpoint=0

        def run() -> None:
            failed = 0
            while not stop.wait(interval):
                try:
                    _checkpoint(self.engine)
                    failed = 0
                except Exception as exc:  # noqa: BLE001  (the next round tries again)
                    failed += 1
                    log.log(logging.WARNING if failed == CHECKPOINT_PATIENCE else logging.DEBUG,
                            "WAL checkpoint failed %d time(s) in a row: %s", failed, exc)
        thread = threading.Thread(target=run, name="wal-checkpoint", daemon=True)
        thread.start()
        return thread

    def ping(self) -> None:
        with self.transaction(readonly=True) as s:
            s.connection().exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


CHECKPOINT_PATIENCE = 20  # failed background checkpoints in a row before the log warns (the WAL keeps growing)


def _checkpoint(engine: Engine) -> None:
    """A PASSIVE checkpoint on a driver connection outside any transaction: SQLAlchemy would begin
    one (BEGIN IMMEDIATE here), and inside a transaction SQLite refuses to checkpoint."""
    conn = engine.raw_connection()
    try:
        conn.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
