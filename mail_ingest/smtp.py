"""The SMTP and LMTP door (aiosmtpd): 250 only once the message is committed, 451 otherwise.

- RCPT: only our domain and its aliases (``550 5.1.1`` for the rest); never a relay.
- SIZE is advertised and enforced: ``552 5.3.4`` (RFC 3463) for too big, whether announced
  in MAIL FROM or found while reading DATA.
- DATA: the message goes to the group committer (one writer thread, one transaction for
  all messages waiting), so a commit never stalls other sessions and never races another
  writer; the session answers 250 once that transaction has committed, and ``451 4.3.0``
  for any failure to store, so the sending MTA retries.
- LMTP (RFC 2033) answers one status line per accepted recipient after DATA.
- Optional STARTTLS with the configured certificate; a cap on connections per peer address.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import threading
from collections import Counter
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from handlers.errors import InvalidInput, TemporaryFailure
from handlers.inbox import Incoming, clean_address, is_ours
from mail_ingest.receive import GroupCommitter

log = logging.getLogger("renewdesk.smtp")
TRY_LATER = "451 4.3.0 Could not store the message right now; please try again later"
# how long a session waits for its message to be committed before telling the MTA to retry;
# if the commit lands later after all, the retry is recognised as a redelivery and stored once
STORE_TIMEOUT = 60.0
# the longest a message waits for other sessions' messages to share its commit
LINGER = 0.005


class InboxHandler:
    """aiosmtpd hooks: check recipients, store the message, answer honestly."""

    def __init__(self, services: Any, committer: GroupCommitter | None, *, lmtp: bool = False):
        self.services = services
        self.committer = committer
        self.lmtp = lmtp
        self.door = "lmtp" if lmtp else "smtp"
        # sessions between MAIL FROM and the end of DATA: each will hand the writer a message
        # soon, so the writer may wait a moment for them and store them in the same commit
        self.composing: set[Any] = set()

    def in_flight(self) -> int:
        return len(self.composing)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list) -> str:
        envelope.mail_from = address  # what aiosmtpd does without this hook
        envelope.mail_options.extend(mail_options)
        self.composing.add(session)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.composing.discard(session)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list) -> str:
        if not is_ours(self.services.settings, address):
            return f"550 5.1.1 <{address}>: no such mailbox here (this server does not relay)"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        incoming = Incoming(raw, self.door, envelope.mail_from or "", tuple(envelope.rcpt_tos), peer)
        submitted = self.committer.submit_async(incoming)
        self.composing.discard(session)  # after the hand-over: the writer sees it as coming or as queued, never neither
        try:
            async with asyncio.timeout(STORE_TIMEOUT):  # no task of its own, unlike wait_for
                stored = await submitted
        except InvalidInput as exc:
            return self._each(envelope, f"554 5.6.0 {exc.message}")
        except (TemporaryFailure, TimeoutError) as exc:
            log.warning("%s from %s: answered 451: %s", self.door, peer, getattr(exc, "message", "store timed out"))
            return self._each(envelope, TRY_LATER)
        if self.lmtp:
            # RFC 2033: one reply per accepted RCPT, in order, even for two spellings of one address
            ids = {s.recipient: s.id for s in stored}
            return "\r\n".join(f"250 2.0.0 <{rcpt}> stored as {ids[clean_address(rcpt)]}" for rcpt in envelope.rcpt_tos)
        return f"250 2.0.0 Stored as {','.join(str(s.id) for s in stored)}"

    def _each(self, envelope: Any, status: str) -> str:
        """LMTP wants one line per recipient; SMTP one line."""
        return "\r\n".join([status] * len(envelope.rcpt_tos)) if self.lmtp else status

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default for an unhandled exception is a 5xx, which makes MTAs bounce the mail.
        log.exception("smtp session error: %s", error)
        return "451 4.3.0 Temporary server error; please try again later"


class _Door:
    """What our SMTP and LMTP servers add to aiosmtpd's: per-peer limit, RFC 3463 codes."""

    # aiosmtpd refuses a line longer than this with a 500; real mail sometimes has long lines
    line_length_limit = 1 << 20

    def __init__(self, handler: InboxHandler, *, peers: "PeerLimit", **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._peers = peers
        self._peer_ip: str | None = None

    def connection_made(self, transport: Any) -> None:
        first = self.transport is None  # STARTTLS calls this again for the same connection
        super().connection_made(transport)
        if first:
            self._peer_ip = str((transport.get_extra_info("peername") or ("?",))[0])
            self._over_limit = not self._peers.enter(self._peer_ip)

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.composing.discard(self.session)
        if self._peer_ip is not None:
            self._peers.leave(self._peer_ip)
            self._peer_ip = None
        super().connection_lost(error)

    async def _handle_client(self) -> None:  # aiosmtpd's session loop (private API, pinned <2)
        if getattr(self, "_over_limit", False):
            await self.push("421 4.7.0 Too many connections from your address; try again later")
            self.transport.close()
            return
        await super()._handle_client()

    async def push(self, status: str) -> None:
        if status.startswith("552 Error"):
            status = f"552 5.3.4 Message too big for this system (the limit is {self.data_size_limit} bytes)"
        await super().push(status)


class DoorSMTP(_Door, SMTP):
    pass


class DoorLMTP(_Door, LMTP):
    pass


class PeerLimit:
    """Counts open connections per address across all sessions of one server."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def enter(self, ip: str) -> bool:
        with self._lock:
            self._open[ip] += 1
            return self._open[ip] <= self.limit

    def leave(self, ip: str) -> None:
        with self._lock:
            self._open[ip] -= 1
            if self._open[ip] <= 0:
                del self._open[ip]


class DoorController(Controller):
    """aiosmtpd's threaded controller, building our server class."""

    def __init__(self, services: Any, *, lmtp: bool = False, host: str | None = None, port: int | None = None):
        settings = services.settings
        self.lmtp = lmtp
        self.peers = PeerLimit(settings.smtp_max_per_peer)
        tls = None
        if settings.smtp_tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key)
        handler = InboxHandler(services, None, lmtp=lmtp)
        # The writer holds a message back for up to LINGER while other sessions are still sending
        # theirs, so one commit (one sync of the log) answers them all; sessions not in a mail
        # transaction are not waited for. A sending MTA whose connections are all busy otherwise
        # gets its 250s spread over many small commits while the event loop idles between them.
        handler.committer = self.committer = GroupCommitter(services, linger=LINGER, pending=handler.in_flight)
        self._checkpoints_stop = threading.Event()
        services.db.checkpoint_in_background(self._checkpoints_stop)
        super().__init__(
            handler, hostname=host or settings.smtp_host,
            port=settings.smtp_port if port is None else port, ready_timeout=10,
            server_hostname=settings.mail_domain, data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=True, decode_data=False, tls_context=tls, require_starttls=False,
            ident="renewdesk ESMTP")

    def factory(self) -> SMTP:
        cls = DoorLMTP if self.lmtp else DoorSMTP
        return cls(self.handler, peers=self.peers, **self.SMTP_kwargs)

    def start(self) -> None:
        """Start listening; a port in use is one clear line (a SettingsError), not a traceback."""
        # Each batch crosses between the event loop and the writer thread twice. With CPython's
        # default 5 ms switch interval a busy loop holds the GIL while the writer waits, and the
        # closed loop of a sending MTA pays that wait per message (bench/accept.py: +15% at 8 senders).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0002))
        try:
            super().start()
        except OSError as exc:
            from handlers.errors import SettingsError
            raise SettingsError(f"RENEWDESK_SMTP_PORT: cannot listen for mail on {self.hostname}:{self.port}: "
                                f"{exc.strerror or exc}") from None
        log.info("%s door listening on %s:%s", "LMTP" if self.lmtp else "SMTP", self.hostname, self.port)

    def stop(self, *args: Any, **kwargs: Any) -> None:
        self.committer.close()  # first: what it holds is stored and answered while the loop still runs
        self._checkpoints_stop.set()
        super().stop(*args, **kwargs)
