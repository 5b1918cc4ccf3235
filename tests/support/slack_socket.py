"""Slack's end of Socket Mode on 127.0.0.1: a minimal RFC 6455 websocket server, for tests.

FakeSlack's ``apps.connections.open`` answers with this server's ``ws://127.0.0.1:PORT/...`` URL
(``fake.socket_url = server.url``); the app connects, the test sends envelopes as Slack does
(``{"envelope_id", "type", "payload", "accepts_response_payload"}``) and waits for the app's
acknowledgement (``{"envelope_id", "payload"?}``). Text frames only; pings are answered with
pongs; a frame the RFC forbids from a client (unmasked, reserved bits, fragmented) is recorded as
a violation and the connection closed, so a test fails instead of passing on a broken peer.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import threading
import time
import uuid
from typing import Any

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def frame(opcode: int, data: bytes) -> bytes:
    """A server frame: final, unmasked (section 5.1: a server never masks)."""
    n = len(data)
    size = bytes([n]) if n < 126 else bytes([126]) + struct.pack("!H", n) if n < 65536 \
        else bytes([127]) + struct.pack("!Q", n)
    return bytes([0x80 | opcode]) + size + data


class SocketModeServer:
    """Start with ``with SocketModeServer() as server:``; ``server.url`` is what apps.connections.open gives."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []    # the app's text frames, as JSON
        self.violations: list[str] = []
        self.paths: list[str] = []                  # the request path of each handshake
        self.pings = 0
        self.changed = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="socket-mode-server", daemon=True)
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link/?ticket=test-ticket&app_id=A1"

    def __enter__(self) -> "SocketModeServer":
        self.thread.start()
        self.server = self._call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: Any) -> None:
        async def stop() -> None:
            self.server.close()
            for w in self.writers:
                w.close()
        self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def _call(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _note(self, **what: Any) -> None:
        with self.changed:
            for key, value in what.items():
                getattr(self, key).append(value)
            self.changed.notify_all()

    # -- the connection -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await self._handshake(reader, writer):
                self.writers.append(writer)
                hello = {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}
                writer.write(frame(TEXT, json.dumps(hello).encode()))
                await self._frames(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the app closed the socket (slack_sdk closes without a close frame)
        finally:
            if writer in self.writers:
                self.writers.remove(writer)
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Section 4.2: a GET with Upgrade, Connection, a 16-byte key and version 13; 101 with the accept key."""
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, path, _ = (head[0].split(" ") + ["", "", ""])[:3]
        fields = (line.partition(":") for line in head[1:] if ":" in line)
        headers = {k.strip().lower(): v.strip() for k, _, v in fields}
        key = headers.get("sec-websocket-key", "")
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            key_ok = False
        if not (method == "GET" and headers.get("upgrade", "").lower() == "websocket"
                and "upgrade" in headers.get("connection", "").lower()
                and headers.get("sec-websocket-version") == "13" and key_ok):
            self._note(violations=f"bad handshake: {head!r}")
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return False
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode())
        await writer.drain()
        self._note(paths=path)
        return True

    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            b1, b2 = await reader.readexactly(2)
            opcode, n = b1 & 0x0F, b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            mask = await reader.readexactly(4) if b2 & 0x80 else b""
            data = await reader.readexactly(n)
            problem = ("unmasked frame from the client" if not mask else "reserved bits set" if b1 & 0x70
                       else "fragmented frame (text frames only here)" if not b1 & 0x80 or opcode == 0 else None)
            if problem:
                self._note(violations=problem)
                writer.write(frame(CLOSE, struct.pack("!H", 1002)))
                return
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == PING:
                writer.write(frame(PONG, data))  # section 5.5.3: the same application data
                self.pings += 1
            elif opcode == CLOSE:
                writer.write(frame(CLOSE, data[:2]))
                return
            elif opcode == TEXT:
                try:
                    self._note(received=json.loads(data.decode()))
                except ValueError:
                    self._note(violations=f"not JSON: {data[:200]!r}")
            elif opcode != PONG:
                self._note(violations=f"unexpected opcode {opcode:#x}")
            await writer.drain()

    # -- what a test does ---------------------------------------------------------------------

    def send(self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool = False) -> str:
        """Send one envelope to every connected app, as Slack does; returns its envelope_id."""
        envelope_id = str(uuid.uuid4())
        self.send_message({"envelope_id": envelope_id, "type": kind, "payload": payload,
                           "accepts_response_payload": accepts_response_payload})
        return envelope_id

    def send_message(self, message: dict[str, Any]) -> None:
        """Any message, e.g. ``{"type": "disconnect", "reason": "refresh_requested"}``."""
        data = json.dumps(message).encode()

        async def write() -> None:
            if not self.writers:
                raise AssertionError("no app is connected")
            for w in self.writers:
                w.write(frame(TEXT, data))
                await w.drain()
        self._call(write())

    def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` handshakes were made and exactly one connection is open."""
        self._wait(lambda: len(self.paths) >= count and len(self.writers) == 1, timeout,
                   f"{count} connections (one open)")

    def wait_connected(self, timeout: float = 10.0) -> None:
        self._wait(lambda: bool(self.writers), timeout, "no app connected")

    def wait_ack(self, envelope_id: str, timeout: float = 3.0) -> dict[str, Any]:
        """The app's acknowledgement of one envelope (Slack wants it within 3 seconds)."""
        found: list[dict[str, Any]] = []

        def acked() -> bool:
            found[:] = [m for m in self.received if m.get("envelope_id") == envelope_id]
            return bool(found)
        self._wait(acked, timeout, f"envelope {envelope_id} not acknowledged")
        return found[0]

    def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{what} within {timeout}s; got {self.received}, {self.violations}")
                self.changed.wait(min(left, 0.05))
