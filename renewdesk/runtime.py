"""Running the processes: web server, scheduler and delivery loop as threads; clean stop on signals."""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any, Callable

import uvicorn

from handlers.delivery import Deliverer
from handlers.errors import SettingsError

log = logging.getLogger("renewdesk")


def bind(host: str, port: int, what: str, env: str) -> socket.socket:
    """Bind the listening socket up front, so a port in use is one clear line, not a traceback."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SettingsError(f"{env}: cannot listen for {what} on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class WebServer:
    """uvicorn in a thread of its own (so signals stay with the main thread)."""

    def __init__(self, app: Any, sock: socket.socket):
        self.sock = sock
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="web", daemon=True)

    def start(self) -> None:
        self.thread.start()
        host, port = self.sock.getsockname()[:2]
        log.info("web listening on http://%s:%s (/healthz)", host, port)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Loop:
    """Runs ``step()`` again and again in a thread; waits on ``wakeup`` (or ``interval``) when idle.

    ``step`` returns something true when it did work, and is then called again at once.
    """

    def __init__(self, name: str, step: Callable[[], Any], wakeup: threading.Event, interval: float,
                 stopping: threading.Event | None = None):
        self.name, self.step, self.wakeup, self.interval = name, step, wakeup, interval
        self.stopping = stopping or threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.wakeup.clear()
            try:
                busy = self.step()
            except Exception as exc:  # the database may be down: keep the loop, say why
                log.error("%s: %s", self.name, exc)
                busy = False
            if not busy:
                self.wakeup.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.thread.join(timeout=30)


HOLD_RECHECK_SECONDS = 0.2  # while delivery holds for a burst, how often it looks whether the burst is over


def delivery_loop(services: Any) -> Loop:
    """Sends due outbox rows; wakes at once when an operation queues mail, and holds back while
    the inbox has a backlog (at most RENEWDESK_OUTBOX_BURST_HOLD_SECONDS)."""
    log.info("outbox delivery to %s", _redact(services.settings.outbound_smtp_url))
    stopping = threading.Event()  # shared: the deliverer stops between rows when the loop stops
    deliverer = Deliverer(services, stopping=stopping)

    def step() -> int | bool:
        wait = deliverer.hold()  # a burst in the inbox: mail waits, boundedly (see Deliverer.hold)
        if wait > 0:
            stopping.wait(min(wait, HOLD_RECHECK_SECONDS))
            return True  # look again at once
        return deliverer.deliver_due().sent

    return Loop("outbox", step, services.outbox_wakeup, services.settings.outbox_poll_seconds, stopping)


def slack_loop(services: Any) -> Loop | None:
    """Posts queued Slack cards and thread replies (None when Slack is not configured)."""
    from handlers.slack_cards import enabled
    if not enabled(services.settings):
        return None
    from bot.delivery import SlackDeliverer
    stopping = threading.Event()
    deliverer = SlackDeliverer(services, stopping=stopping)
    return Loop("slack", lambda: deliverer.deliver_due().sent, services.slack_wakeup,
                services.settings.outbox_poll_seconds, stopping)


def inbox_loop(services: Any) -> Loop:
    """Processes stored mail; wakes at once when a door stores a message."""
    from mail_ingest.process import process_batch
    return Loop("inbox", lambda: process_batch(services), services.inbox_wakeup, services.settings.inbox_poll_seconds)


def _redact(url: str) -> str:
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def wait_for_signal(stops: list[Callable[[], None]]) -> None:
    """Block until SIGINT or SIGTERM, then stop the parts in reverse order of starting."""
    stopping = threading.Event()
    received: list[str] = []

    def handler(signum: int, _frame: Any) -> None:
        if stopping.is_set():  # a second signal: the operator wants out now
            log.warning("%s received again: exiting without waiting", signal.Signals(signum).name)
            os._exit(128 + signum)
        received.append(signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stopping.wait(1):
        pass
    log.info("%s received: stopping", received[0])
    for stop in reversed(stops):
        stop()
    log.info("stopped")
