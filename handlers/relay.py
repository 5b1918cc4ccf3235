"""The outbound relay: its URL, one reusable SMTP connection, and how its answers are read.

A 5xx answer is :class:`Permanent`, a 4xx or a connection problem :class:`Temporary`; a
connection lost after the body went out is :class:`Ambiguous` (the relay may have the mail).
"""
from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class Permanent(Exception):
    """The relay refused for good (5xx)."""


class Temporary(Exception):
    """Try again later (4xx, connection refused or dropped)."""


class Lost(Exception):
    """Another worker took the row back (its lease ran out): leave it to them."""


class Ambiguous(Exception):
    """The connection failed after the body went out: the relay may have delivered it."""


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    implicit_tls: bool
    starttls: str  # "auto" (when offered) | "require" | "never"
    username: str | None
    password: str | None
    cafile: str | None
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> "RelayConfig":
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        implicit = parts.scheme == "smtps"
        return cls(host=parts.hostname or "127.0.0.1", port=parts.port or (465 if implicit else 25),
                   implicit_tls=implicit, starttls=query.get("starttls", "auto"),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None,
                   cafile=query.get("cafile"), timeout=float(query.get("timeout", 30)))


class Relay:
    """One reusable SMTP connection to the outbound relay."""

    def __init__(self, config: RelayConfig, local_hostname: str):
        self.config = config
        self.local_hostname = local_hostname
        self.smtp: smtplib.SMTP | None = None

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.config.cafile)

    def connect(self) -> smtplib.SMTP:
        if self.smtp is not None:
            return self.smtp
        c = self.config
        try:
            if c.implicit_tls:
                smtp = smtplib.SMTP_SSL(c.host, c.port, local_hostname=self.local_hostname,
                                        timeout=c.timeout, context=self._tls())
            else:
                smtp = smtplib.SMTP(c.host, c.port, local_hostname=self.local_hostname, timeout=c.timeout)
            smtp.ehlo()
            if not c.implicit_tls and c.starttls != "never":
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self._tls())
                    smtp.ehlo()
                elif c.starttls == "require":
                    smtp.close()
                    raise Temporary("relay does not offer STARTTLS but ?starttls=require is set")
            if c.username:
                smtp.login(c.username, c.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise Temporary(f"relay refused our login: {exc.smtp_code} {answer_text(exc.smtp_error)}") from exc
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            raise Temporary(f"cannot reach relay {c.host}:{c.port}: {exc}") from exc
        self.smtp = smtp
        return smtp

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                self.smtp.close()
            self.smtp = None

    def put(self, verb: str, address: str, options: list[str] = ()) -> None:  # type: ignore[assignment]
        """Send MAIL FROM or RCPT TO without waiting for the answer (:meth:`answer` reads it).

        One command at a time per connection; the waiting overlaps across connections.
        """
        assert self.smtp is not None
        extra = (" " + " ".join(options)) if options and self.smtp.does_esmtp else ""
        self.smtp.putcmd(verb, f"{'from' if verb == 'mail' else 'to'}:{smtplib.quoteaddr(address)}{extra}")

    def answer(self) -> tuple[int, bytes]:
        assert self.smtp is not None
        return self.smtp.getreply()

    def drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None


def answer_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def classify(code: int, message: Any, what: str) -> Exception:
    text = f"{what}: {code} {answer_text(message)}"
    return Permanent(text) if 500 <= code < 600 else Temporary(text)


def dot_stuffed(raw: bytes) -> bytes:
    """RFC 5321 4.5.2: CRLF line ends, a leading dot doubled, then the end-of-data marker."""
    body = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", raw)
    body = re.sub(rb"(?m)^\.", b"..", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"
