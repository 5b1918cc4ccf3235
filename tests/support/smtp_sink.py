"""A real SMTP server on 127.0.0.1 that records what it receives, for delivery tests.

It can refuse with a chosen code (``rcpt_code``, ``data_code``), ask for STARTTLS or
implicit TLS and AUTH, and run a hook when a message's body has arrived (tests use it to
kill the sending process between "the relay has the mail" and "our database knows").
"""
from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.servers import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    session_id: int

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class SinkHandler:
    rcpt_code: str | None = None        # e.g. "451 4.3.0 try later" to refuse every RCPT
    data_code: str | None = None        # e.g. "554 5.7.1 no thanks" at the end of DATA
    on_data: Callable[[Received], None] | None = None
    messages: list[Received] = field(default_factory=list)
    sessions: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.sessions.add(id(session))
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_code:
            return self.rcpt_code
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        got = Received(envelope.mail_from, list(envelope.rcpt_tos),
                       bytes(envelope.original_content or envelope.content), id(session))
        if self.data_code:
            return self.data_code
        with self.lock:
            self.messages.append(got)
        if self.on_data:
            self.on_data(got)
        return "250 2.0.0 queued"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (openssl is in every Debian image)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class SmtpSink:
    """Start with ``with SmtpSink() as sink:``; ``sink.url`` is what renewdesk should relay to."""

    def __init__(self, *, tls: str | None = None, cert: tuple[Path, Path] | None = None,
                 credentials: tuple[str, str] | None = None, **handler_options):
        self.handler = SinkHandler(**handler_options)
        self.port = free_port()
        self.tls = tls
        self.cert = cert
        self.credentials = credentials
        kwargs: dict = {"hostname": "127.0.0.1", "port": self.port, "ready_timeout": 10}
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*(str(p) for p in cert))
        if tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif tls == "implicit":
            # aiosmtpd does not count implicit TLS as TLS for AUTH; the socket is encrypted anyway
            kwargs.update(ssl_context=context, auth_require_tls=False)
        if credentials:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        self.controller = Controller(self.handler, **kwargs)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @property
    def url(self) -> str:
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        query = f"?cafile={self.cert[0]}" if self.tls else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}{query}"

    def __enter__(self) -> "SmtpSink":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
