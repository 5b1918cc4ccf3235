"""Build the services for a process and start its parts."""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from handlers.db import Database, make_engine
from handlers.errors import SettingsError, TemporaryFailure
from handlers.services import Services
from handlers.settings import Settings
from renewdesk import migrate

log = logging.getLogger("renewdesk")


def configure_logging(settings: Settings) -> None:
    """One readable line per thing the process does."""
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    for noisy in ("apscheduler", "uvicorn.error", "mail.log", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def open_engine(settings: Settings) -> Engine:
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # driver errors differ by database; all mean "cannot use it now"
        url = engine.url.render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TemporaryFailure(f"cannot open the database {url}: {reason}") from None
    return engine


def wait_for_engine(settings: Settings, *, sleep: Any = time.sleep, clock: Any = time.monotonic) -> Engine:
    """:func:`open_engine` for a long-running process: a database that is down when it starts (PostgreSQL
    restarting, a container coming up later) is tried again every 2 s for ``RENEWDESK_DB_START_WAIT``
    seconds, one log line each time, instead of the process exiting at once and, under a Procfile
    runner, taking its siblings down with it."""
    deadline = clock() + settings.db_start_wait
    while True:
        try:
            return open_engine(settings)
        except TemporaryFailure as exc:
            left = deadline - clock()
            if left <= 0:
                raise
            log.warning("%s; trying again in 2 s (giving up in %d s)", exc.message, max(1, round(left)))
            sleep(min(2.0, left))


def _is_empty(engine: Engine) -> bool:
    return not inspect(engine).get_table_names()


def open_services(settings: Settings, *, upgrade: bool = False, check: bool = True,
                  wait: bool = False) -> Services:
    """Services on a database whose schema matches the code.

    ``upgrade`` migrates an empty database (and, on the embedded SQLite, an older one: nobody
    else shares that file). Otherwise a schema behind the code is one line asking for
    `renewdesk db upgrade`. ``wait``: a long-running process waits for the database to come up.
    """
    engine = wait_for_engine(settings) if wait else open_engine(settings)
    if check:
        current, head = migrate.current_revision(engine), migrate.head_revision()
        if current != head:
            if upgrade and (current is None and _is_empty(engine) or settings.is_sqlite):
                migrate.upgrade(engine)
            elif current is None and _is_empty(engine):
                raise SettingsError("the database is empty: run `renewdesk db upgrade` (or `renewdesk run`) first")
            else:
                raise SettingsError(f"the database schema is at {current or 'an unknown version'}, "
                                    f"this version needs {head}: run `renewdesk db upgrade`")
    return Services(settings, db=Database(settings, engine))


def _banner(settings: Settings, demo: bool) -> None:
    lines = [
        f"renewdesk is running on {settings.database_url}",
        f"  health:        http://{settings.web_host}:{settings.port}/healthz",
        f"  inbound mail:  smtp://{settings.smtp_host}:{settings.smtp_port} for support@{settings.mail_domain}",
        f"  outgoing mail: {settings.outbound_smtp_url.split('@')[-1]}",
        "  staff grammar: renewdesk staff help",
    ]
    if demo:
        lines += [
            "  try:          swaks --server 127.0.0.1:%d --from anna@northwind.test --to support@%s"
            % (settings.smtp_port, settings.mail_domain),
            "                  (or any SMTP client: mail from a demo contact becomes theirs)",
            "                renewdesk inbox list",
            "                renewdesk staff account show northwind",
            "                renewdesk outbox list",
        ]
    print("\n".join(lines), flush=True)


def run_all(settings: Settings, *, demo: bool = False) -> int:
    """`renewdesk run`: web, SMTP, scheduler, inbox processing and outbox delivery in one process."""
    from mail_ingest.smtp import DoorController
    from renewdesk.runtime import WebServer, bind, delivery_loop, inbox_loop, wait_for_signal
    from renewdesk.scheduler import start_scheduler
    from renewdesk.web import build_web_app

    sock = bind(settings.web_host, settings.port, "the web app", "PORT")  # before anything else starts
    services = open_services(settings, upgrade=True, wait=True)
    smtp = DoorController(services)
    smtp.start()
    stops = [services.close, smtp.stop]
    try:
        if demo:
            _load_demo_if_empty(services)
        scheduler = start_scheduler(services)
        stops.append(lambda: scheduler.shutdown(wait=True))
        for loop in (delivery_loop(services), inbox_loop(services)):
            loop.start()
            stops.append(loop.stop)
        stops += _start_imap(services)
        stops += start_slack(services)
        web = WebServer(build_web_app(services, in_process_scheduler=scheduler), sock)
        web.start()
        stops.append(web.stop)
    except BaseException:
        for stop in reversed(stops):
            stop()
        raise
    _banner(settings, demo)
    wait_for_signal(stops)
    return 0


def start_slack(services: Services, *, socket_mode: bool = True) -> list:
    """The Slack delivery loop (cards, thread posts) and, with SLACK_APP_TOKEN, Socket Mode."""
    from renewdesk.runtime import slack_loop

    stops: list = []
    loop = slack_loop(services)
    if loop is not None:
        loop.start()
        stops.append(loop.stop)
    from bot import build_app, socket_mode_enabled
    if socket_mode and socket_mode_enabled(services.settings):
        from bot.app import start_socket_mode
        handler = start_socket_mode(build_app(services), services.settings)
        stops.append(handler.close)
    return stops


def _start_imap(services: Services) -> list:
    """The IMAP door in a thread, when a mailbox is configured."""
    if not services.settings.imap_url:
        return []
    import threading

    from mail_ingest.imap import ImapDoor
    door, stopping = ImapDoor(services), threading.Event()
    thread = threading.Thread(target=door.run_forever, args=(stopping,), name="imap", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join(timeout=30)
        door.close()
    return [stop]


def run_web(settings: Settings) -> int:
    from renewdesk.runtime import WebServer, bind, wait_for_signal
    from renewdesk.web import build_web_app

    sock = bind(settings.web_host, settings.port, "the web app", "PORT")
    services = open_services(settings, wait=True)
    stops = [services.close, *start_slack(services)]
    web = WebServer(build_web_app(services), sock)
    web.start()
    wait_for_signal([*stops, web.stop])
    return 0


def run_worker(settings: Settings) -> int:
    """`renewdesk worker`: scheduler, inbox processing and outbox delivery."""
    from renewdesk.runtime import delivery_loop, inbox_loop, wait_for_signal
    from renewdesk.scheduler import start_scheduler

    services = open_services(settings, wait=True)
    checkpoints = threading.Event()
    services.db.checkpoint_in_background(checkpoints)  # SQLite: not inside the processor's write turn
    scheduler = start_scheduler(services)
    stops = [services.close, checkpoints.set, lambda: scheduler.shutdown(wait=True)]
    for loop in (delivery_loop(services), inbox_loop(services)):
        loop.start()
        stops.append(loop.stop)
    stops += start_slack(services, socket_mode=False)
    wait_for_signal(stops)
    return 0


def run_smtp(settings: Settings, *, lmtp: bool = False) -> int:
    """`renewdesk smtp [--lmtp]`: the mail door alone (several may run against one PostgreSQL)."""
    from mail_ingest.smtp import DoorController
    from renewdesk.runtime import wait_for_signal

    services = open_services(settings, wait=True)
    door = DoorController(services, lmtp=lmtp)
    door.start()
    wait_for_signal([services.close, door.stop])
    return 0


def run_imap(settings: Settings) -> int:
    from handlers.errors import SettingsError as _SettingsError
    from renewdesk.runtime import wait_for_signal

    if not settings.imap_url:
        raise _SettingsError("RENEWDESK_IMAP_URL is not set: say which mailbox to poll (imaps://user:pass@host/INBOX)")
    services = open_services(settings, wait=True)
    wait_for_signal([services.close, *_start_imap(services)])
    return 0


def _load_demo_if_empty(services: Services) -> None:
    from handlers.demo import demo_is_loaded, load_demo

    with services.db.transaction(readonly=True) as s:
        if demo_is_loaded(s):
            log.info("demo: the database already has accounts; not loading the demo data set")
            return
    result = services.run(load_demo, actor="cli")
    log.info("demo data loaded: %s", result.summary())
