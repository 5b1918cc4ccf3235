"""Build the services for a process and start its parts."""
from __future__ import annotations

import logging
import sys
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


def _is_empty(engine: Engine) -> bool:
    return not inspect(engine).get_table_names()


def open_services(settings: Settings, *, upgrade: bool = False, check: bool = True) -> Services:
    """Services on a database whose schema matches the code.

    ``upgrade`` migrates an empty database (and, on the embedded SQLite, an older one: nobody
    else shares that file). Otherwise a schema behind the code is one line asking for
    `renewdesk db upgrade`.
    """
    engine = open_engine(settings)
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
        f"  outgoing mail: {settings.outbound_smtp_url.split('@')[-1]}",
        "  staff grammar: renewdesk staff help",
    ]
    if demo:
        lines += [
            "  try:          renewdesk staff account show northwind",
            "                renewdesk staff team list",
            "                renewdesk outbox list",
        ]
    print("\n".join(lines), flush=True)


def run_all(settings: Settings, *, demo: bool = False) -> int:
    """`renewdesk run`: web, scheduler and outbox delivery in one process."""
    from renewdesk.runtime import DeliveryLoop, WebServer, bind, wait_for_signal
    from renewdesk.scheduler import start_scheduler
    from renewdesk.web import build_web_app

    sock = bind(settings.web_host, settings.port, "the web app", "PORT")  # before anything else starts
    services = open_services(settings, upgrade=True)
    if demo:
        _load_demo_if_empty(services)
    scheduler = start_scheduler(services)
    web = WebServer(build_web_app(services, in_process_scheduler=scheduler), sock)
    delivery = DeliveryLoop(services)
    delivery.start()
    web.start()
    _banner(settings, demo)
    wait_for_signal([lambda: scheduler.shutdown(wait=True), delivery.stop, web.stop, services.close])
    return 0


def run_web(settings: Settings) -> int:
    from renewdesk.runtime import WebServer, bind, wait_for_signal
    from renewdesk.web import build_web_app

    sock = bind(settings.web_host, settings.port, "the web app", "PORT")
    services = open_services(settings)
    web = WebServer(build_web_app(services), sock)
    web.start()
    wait_for_signal([web.stop, services.close])
    return 0


def run_worker(settings: Settings) -> int:
    from renewdesk.runtime import DeliveryLoop, wait_for_signal
    from renewdesk.scheduler import start_scheduler

    services = open_services(settings)
    scheduler = start_scheduler(services)
    delivery = DeliveryLoop(services)
    delivery.start()
    wait_for_signal([lambda: scheduler.shutdown(wait=True), delivery.stop, services.close])
    return 0


def _load_demo_if_empty(services: Services) -> None:
    from handlers.demo import demo_is_loaded, load_demo

    with services.db.transaction(readonly=True) as s:
        if demo_is_loaded(s):
            log.info("demo: the database already has accounts; not loading the demo data set")
            return
    result = services.run(load_demo, actor="cli")
    log.info("demo data loaded: %s", result.summary())
