"""Running the processes: web server, scheduler and delivery loop as threads; clean stop on signals."""
from __future__ import annotations

import logging
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


class DeliveryLoop:
    """Sends due outbox rows; wakes at once when an operation queues mail, else every few seconds."""

    def __init__(self, services: Any):
        self.services = services
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="outbox", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("outbox delivery to %s", _redact(self.services.settings.outbound_smtp_url))

    def _loop(self) -> None:
        deliverer = Deliverer(self.services)
        wakeup = self.services.outbox_wakeup
        while not self.stopping.is_set():
            wakeup.clear()
            try:
                deliverer.deliver_due()
            except Exception as exc:  # the database may be down: keep the loop, say why
                log.error("outbox delivery: %s", exc)
            wakeup.wait(self.services.settings.outbox_poll_seconds)

    def stop(self) -> None:
        self.stopping.set()
        self.services.outbox_wakeup.set()
        self.thread.join(timeout=30)


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
