"""The real web app on a free loopback port, served by uvicorn in a thread."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from renewdesk.runtime import WebServer, bind
from renewdesk.web import build_web_app
from tests.support.servers import free_port, wait_for_port


@contextlib.contextmanager
def serve(services: Any) -> Iterator[str]:
    """Yield the base URL of ``build_web_app(services)`` listening on 127.0.0.1."""
    port = free_port()
    server = WebServer(build_web_app(services), bind("127.0.0.1", port, "web", "PORT"))
    server.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
