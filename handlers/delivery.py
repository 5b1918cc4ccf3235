"""Deliver due outbox rows over SMTP, never one row twice.

A row moves ``queued → sending → sent`` with a commit at each step, and one more commit
(``handed_over_at``) after the relay has said 354 to DATA and before the body goes out.
A worker that dies before that point left nothing at the relay, so its row goes back to
the queue; a worker that dies after it may have delivered, so its row becomes
``uncertain`` and waits for staff instead of being sent a second time.

Temporary failures (4xx, connection trouble) are retried with exponential backoff; 5xx
answers and running out of attempts mark the row ``failed``.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import select, update

from handlers.models import OutboundMail, OutboxStatus
from handlers.settings import Settings

log = logging.getLogger("renewdesk.outbox")
MAX_BACKOFF = dt.timedelta(hours=6)


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    recovered: int = 0
    uncertain: int = 0
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sent or self.retried or self.failed or self.recovered or self.uncertain)

    def summary(self) -> str:
        return (f"{self.sent} sent, {self.retried} to retry, {self.failed} failed, "
                f"{self.recovered} recovered, {self.uncertain} uncertain")


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
            raise Temporary(f"relay refused our login: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
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

    def drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _classify(code: int, message: Any, what: str) -> Exception:
    text = f"{what}: {code} {_text(message)}"
    return Permanent(text) if 500 <= code < 600 else Temporary(text)


def _dot_stuffed(raw: bytes) -> bytes:
    """RFC 5321 4.5.2: CRLF line ends, a leading dot doubled, then the end-of-data marker."""
    body = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", raw)
    body = re.sub(rb"(?m)^\.", b"..", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def backoff(settings: Settings, attempts: int) -> dt.timedelta:
    """First retry after the configured delay, doubling each attempt, at most six hours."""
    return min(dt.timedelta(seconds=settings.outbox_backoff_seconds * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


class Deliverer:
    """Claims due rows and sends them; one instance per worker loop."""

    def __init__(self, services: Any, worker_id: str | None = None, stopping: Any = None):
        self.services = services
        self.stopping = stopping  # a threading.Event: stop between rows, releasing the rest
        self.settings: Settings = services.settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.relay = Relay(RelayConfig.from_url(self.settings.outbound_smtp_url), self.settings.mail_domain)
        self._claimed_at: dt.datetime | None = None  # when this worker's current batch was claimed

    def now(self) -> dt.datetime:
        return self.services.clock.now()

    def deliver_due(self, limit: int = 100) -> DeliveryReport:
        """Recover stale claims, then send every due row (at most ``limit``) over one connection."""
        report = DeliveryReport()
        self._recover(report)
        self._deliver(self._claim(limit), report)
        if report:
            log.info("outbox: %s", report.summary())
        return report

    def _deliver(self, ids: list[int], report: DeliveryReport) -> None:
        """Send claimed rows in order over one connection; release what is left untried."""
        done = 0
        try:
            for row_id in ids:
                if self.stopping is not None and self.stopping.is_set():
                    break
                if self._fresh() or self._still_mine(row_id):
                    self._send_one(row_id, report)
                done += 1
        finally:
            self.relay.close()
            self._release(ids[done:])

    def _recover(self, report: DeliveryReport) -> None:
        """Rows a dead worker left in ``sending``: back to the queue, or ``uncertain`` if handed over."""
        cutoff = self.now() - dt.timedelta(seconds=self.settings.outbox_lease_seconds)
        with self.services.db.transaction() as s:
            stale = list(s.scalars(select(OutboundMail).where(
                OutboundMail.status == OutboxStatus.sending, OutboundMail.claimed_at <= cutoff)
                .with_for_update(skip_locked=True)))
            for row in stale:
                if row.handed_over_at is None:
                    row.status, row.next_attempt_at = OutboxStatus.queued, self.now()
                    report.recovered += 1
                else:
                    row.status = OutboxStatus.uncertain
                    row.last_error = ("the delivery worker stopped after handing this mail to the relay "
                                      "and before hearing back; it may have been delivered. "
                                      "`renewdesk outbox retry ID` sends it again")
                    report.uncertain += 1
                    log.warning("outbox: mail %s to %s is uncertain (worker died mid-send)", row.id, row.recipients)
                row.claimed_at = row.claimed_by = None

    def _claim(self, limit: int) -> list[int]:
        """Take up to ``limit`` due rows for this worker (SKIP LOCKED: other workers take others)."""
        now = self.now()
        with self.services.db.transaction() as s:
            rows = list(s.scalars(
                select(OutboundMail)
                .where(OutboundMail.status == OutboxStatus.queued, OutboundMail.next_attempt_at <= now)
                .order_by(OutboundMail.next_attempt_at, OutboundMail.id).limit(limit)
                .with_for_update(skip_locked=True)))
            for row in rows:
                row.status, row.claimed_at, row.claimed_by = OutboxStatus.sending, now, self.worker_id
                row.attempts += 1
            ids = [r.id for r in rows]
        self._claimed_at = now
        return ids

    def _fresh(self) -> bool:
        """True while the batch's claim is younger than half the lease: no other worker can have
        recovered its rows yet, so the claim needs no renewing (a commit) before each send. The
        ``handed_over_at`` commit checks the claim again in any case, before the body goes out."""
        lease = dt.timedelta(seconds=self.settings.outbox_lease_seconds)
        return self._claimed_at is not None and self.now() - self._claimed_at < lease / 2

    def _mine(self, row_id: int) -> Any:
        return (OutboundMail.id == row_id) & (OutboundMail.status == OutboxStatus.sending) & \
            (OutboundMail.claimed_by == self.worker_id)

    def _still_mine(self, row_id: int) -> bool:
        """Renew this worker's claim just before sending; False when another worker recovered the row.

        A long batch (a slow relay, a big flush) can outlive the lease: the row is then someone
        else's to send, and sending it here too would be the double send we promise never to make.
        """
        with self.services.db.transaction() as s:
            return s.execute(update(OutboundMail).where(self._mine(row_id))
                             .values(claimed_at=self.now())).rowcount == 1

    def _release(self, ids: list[int]) -> None:
        """Rows claimed but not tried (a stop, an error) go back to the queue at once."""
        if not ids:
            return
        try:
            with self.services.db.transaction() as s:
                for row_id in ids:
                    s.execute(update(OutboundMail).where(self._mine(row_id), OutboundMail.handed_over_at.is_(None))
                              .values(status=OutboxStatus.queued, claimed_at=None, claimed_by=None,
                                      attempts=OutboundMail.attempts - 1))
        except Exception as exc:  # the lease recovers them later; say so
            log.warning("outbox: could not release %d claimed mail(s): %s", len(ids), exc)

    def _set(self, row_id: int, **values: Any) -> bool:
        """Record what happened to a row, as long as it is still this worker's."""
        with self.services.db.transaction() as s:
            return s.execute(update(OutboundMail).where(self._mine(row_id)).values(**values)).rowcount == 1

    def _send_one(self, row_id: int, report: DeliveryReport) -> None:
        with self.services.db.transaction(readonly=True) as s:
            row = s.get(OutboundMail, row_id)
            mail_from, recipients, raw, attempts = row.mail_from, list(row.recipients), row.raw, row.attempts
        try:
            refused = self._transmit(row_id, mail_from, recipients, raw)
        except Lost as exc:
            log.warning("outbox: %s", exc)
            return
        except Permanent as exc:
            self.relay.drop()
            self._fail(row_id, str(exc), report)
            return
        except Ambiguous as exc:
            self.relay.drop()
            self._set(row_id, status=OutboxStatus.uncertain, claimed_at=None, claimed_by=None,
                      last_error=f"{exc}; it may have been delivered. `renewdesk outbox retry ID` sends it again")
            report.uncertain += 1
            log.warning("outbox: mail %s is uncertain: %s", row_id, exc)
            return
        except Temporary as exc:
            self.relay.drop()
            if attempts >= self.settings.outbox_max_attempts:
                self._fail(row_id, f"gave up after {attempts} attempts: {exc}", report)
            else:
                when = self.now() + backoff(self.settings, attempts)
                self._set(row_id, status=OutboxStatus.queued, next_attempt_at=when, last_error=str(exc),
                          claimed_at=None, claimed_by=None, handed_over_at=None)
                report.retried += 1
                log.info("outbox: mail %s deferred until %s: %s", row_id, when.isoformat(timespec="seconds"), exc)
            return
        note = f"refused by the relay for {', '.join(refused)}" if refused else None
        self._set(row_id, status=OutboxStatus.sent, sent_at=self.now(), last_error=note,
                  claimed_at=None, claimed_by=None)
        report.sent += 1
        log.info("outbox: sent mail %s to %s", row_id, ", ".join(r for r in recipients if r not in refused))

    def _fail(self, row_id: int, error: str, report: DeliveryReport) -> None:
        from handlers.services import Tx
        from handlers.slack_cards import queue_failed_delivery

        with self.services.db.transaction() as s:  # the failure and its Slack card in one transaction
            tx = Tx(session=s, services=self.services, actor="system:outbox", now=self.now())
            if s.execute(update(OutboundMail).where(self._mine(row_id)).values(
                    status=OutboxStatus.failed, last_error=error, claimed_at=None, claimed_by=None)).rowcount:
                queue_failed_delivery(tx, s.get(OutboundMail, row_id))
        for fn in tx._after_commit:
            fn()
        report.failed += 1
        report.errors.append(error)
        log.warning("outbox: mail %s failed: %s", row_id, error)

    def _transmit(self, row_id: int, mail_from: str, recipients: list[str], raw: bytes) -> list[str]:
        """One SMTP transaction; returns the recipients the relay refused (if others were taken)."""
        smtp = self.relay.connect()
        handed_over = False
        try:
            code, msg = smtp.mail(mail_from, ["SIZE=%d" % len(raw)] if smtp.has_extn("size") else [])
            if code != 250:
                raise _classify(code, msg, "MAIL FROM")
            refused: dict[str, tuple[int, Any]] = {}
            for rcpt in recipients:
                code, msg = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    refused[rcpt] = (code, msg)
            temporary = {r: cm for r, cm in refused.items() if cm[0] < 500}
            if len(refused) == len(recipients) or temporary:
                # nothing is sent yet: a recipient to retry later means the whole mail waits, so
                # that nobody on it is dropped; only recipients refused for good are left out
                smtp.rset()
                code, msg = next(iter((temporary or refused).values()))
                raise _classify(code, msg, "RCPT TO")
            code, msg = smtp.docmd("DATA")
            if code != 354:
                raise _classify(code, msg, "DATA")
            # the point of no return: from here a crash may leave a delivered mail behind
            if not self._set(row_id, handed_over_at=self.now()):
                smtp.rset()
                raise Lost(f"mail {row_id} was taken back by another worker before its body went out")
            handed_over = True
            smtp.send(_dot_stuffed(raw))
            code, msg = smtp.getreply()
            if code != 250:
                raise _classify(code, msg, "end of DATA")
            return [r for r, (c, _) in refused.items()]
        except (OSError, smtplib.SMTPException) as exc:
            if handed_over:
                raise Ambiguous(f"connection lost after the mail was handed to the relay: {exc}") from exc
            raise Temporary(f"SMTP error: {exc}") from exc


def retry(tx: Any, row_id: int) -> OutboundMail:
    """Put a failed or uncertain mail back in the queue (staff decided it should go again)."""
    from handlers.errors import Conflict, NotFound

    row = tx.session.get(OutboundMail, row_id)
    if row is None:
        raise NotFound(f"no outgoing mail {row_id}")
    if row.status not in (OutboxStatus.failed, OutboxStatus.uncertain):
        raise Conflict(f"mail {row_id} is {row.status.value}; only failed or uncertain mail can be retried")
    row.status, row.next_attempt_at, row.handed_over_at = OutboxStatus.queued, tx.now, None
    row.attempts = 0
    tx.audit("email.retry", subject=row, account_id=row.account_id)
    tx.after_commit(tx.services.outbox_wakeup.set)
    return row
