"""Deliver due outbox rows over SMTP, never one row twice.

A row moves ``queued → sending → sent`` with a commit at each step, and one more commit
(``handed_over_at``) after the relay has said 354 to DATA and before the body goes out.
A backlog is sent over a few connections at once, one row on each per round, so that one
commit records the hand-over of the whole round and one more its outcomes.
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
import smtplib
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import func, select, update

from handlers.models import InboundMail, InboundStatus, OutboundMail, OutboxStatus
from handlers.relay import Ambiguous, Lost, Permanent, Relay, RelayConfig, Temporary, classify, dot_stuffed
from handlers.settings import Settings

log = logging.getLogger("renewdesk.outbox")
MAX_BACKOFF = dt.timedelta(hours=6)
RELAY_CONNECTIONS = 8      # at most this many connections to the relay per worker
ROWS_PER_CONNECTION = 8    # a batch smaller than this many rows per connection uses fewer


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


def backoff(settings: Settings, attempts: int) -> dt.timedelta:
    """First retry after the configured delay, doubling each attempt, at most six hours."""
    return min(dt.timedelta(seconds=settings.outbox_backoff_seconds * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


@dataclass
class _Send:
    """One row on its way over one connection, and how it ended (``error`` None: accepted)."""
    row_id: int
    mail_from: str
    recipients: list[str]
    raw: bytes
    attempts: int
    relay: Relay
    refused: dict[str, tuple[int, Any]] = field(default_factory=dict)
    error: Exception | None = None
    handed_over: bool = False

    def size_option(self) -> list[str]:
        return ["SIZE=%d" % len(self.raw)] if self.relay.smtp is not None and self.relay.smtp.has_extn("size") else []

    def end(self, error: Exception) -> None:
        """This row goes no further in this round; its connection is closed (the relay forgets it)."""
        self.error = error
        self.relay.drop()


def _broken(kind: type[Exception], exc: Exception) -> Exception:
    if kind is Ambiguous:
        return Ambiguous(f"connection lost after the mail was handed to the relay: {exc}")
    return Temporary(f"SMTP error: {exc}")


def _expect(code: int, what: str) -> Callable[[_Send, int, Any], None]:
    def check(a: _Send, got: int, msg: Any) -> None:
        if got != code:
            raise classify(got, msg, what)
    return check


def _note_refusal(i: int) -> Callable[[_Send, int, Any], None]:
    def check(a: _Send, got: int, msg: Any) -> None:
        if got not in (250, 251):
            a.refused[a.recipients[i]] = (got, msg)
    return check


class Deliverer:
    """Claims due rows and sends them; one instance per worker loop."""

    def __init__(self, services: Any, worker_id: str | None = None, stopping: Any = None):
        self.services = services
        self.stopping = stopping  # a threading.Event: stop between rows, releasing the rest
        self.settings: Settings = services.settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        config = RelayConfig.from_url(self.settings.outbound_smtp_url)
        self.relays = [Relay(config, self.settings.mail_domain) for _ in range(RELAY_CONNECTIONS)]

    def now(self) -> dt.datetime:
        return self.services.clock.now()

    def hold(self) -> float:
        """Seconds the background loop should wait before its next pass; 0: go now.

        While the inbox has mail not yet processed (a burst through the doors), this process's
        processor and the doors need the CPU and SQLite's write lock more than the relay needs
        our mail: due mail waits until the inbox is drained, but none waits longer than
        ``outbox_burst_hold_seconds`` past its due time. Under a flood that lasts, delivery so
        runs that far behind and keeps pace. Two reads, no write lock. Only the background loop
        asks; ``renewdesk outbox flush`` goes at once.
        """
        limit = self.settings.outbox_burst_hold_seconds
        if limit <= 0:
            return 0.0
        now = self.now()
        with self.services.db.transaction(readonly=True) as s:
            oldest = s.scalar(select(func.min(OutboundMail.next_attempt_at))
                              .where(OutboundMail.status == OutboxStatus.queued, OutboundMail.next_attempt_at <= now))
            if oldest is None:
                return 0.0  # nothing due: the pass finds nothing, at once
            left = limit - (now - oldest).total_seconds()
            if left <= 0:
                return 0.0
            busy = s.scalar(select(InboundMail.id).where(InboundMail.status == InboundStatus.new).limit(1))
        return left if busy is not None else 0.0

    def deliver_due(self, limit: int = 100) -> DeliveryReport:
        """Recover stale claims, then send every due row (at most ``limit``) over reused connections."""
        report = DeliveryReport()
        self._recover(report)
        self._deliver(self._claim(limit), report)
        if report:
            log.info("outbox: %s", report.summary())
        return report

    def _deliver(self, ids: list[int], report: DeliveryReport) -> None:
        """Send claimed rows in order, a round at a time; release what is left untried.

        A few rows go over one connection; a backlog over up to RELAY_CONNECTIONS, one row per
        connection per round, so that the round's database writes are shared (see _round).
        """
        width = min(RELAY_CONNECTIONS, max(1, len(ids) // ROWS_PER_CONNECTION))
        done = 0
        try:
            while done < len(ids):
                if self.stopping is not None and self.stopping.is_set():
                    break
                self._round(ids[done:done + width], ids[done + width:], report)
                done += width
        finally:
            for relay in self.relays:
                relay.close()
            self._release(ids[done:])

    def _recover(self, report: DeliveryReport) -> None:
        """Rows a dead worker left in ``sending``: back to the queue, or ``uncertain`` if handed over."""
        cutoff = self.now() - dt.timedelta(seconds=self.settings.outbox_lease_seconds)
        stale_q = select(OutboundMail).where(OutboundMail.status == OutboxStatus.sending,
                                             OutboundMail.claimed_at <= cutoff)
        # nearly always there is nothing to recover: a read says so without taking SQLite's write lock
        with self.services.db.transaction(readonly=True) as s:
            if s.scalar(stale_q.with_only_columns(OutboundMail.id).limit(1)) is None:
                return
        with self.services.db.transaction() as s:
            stale = list(s.scalars(stale_q.with_for_update(skip_locked=True)))
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
            return [r.id for r in rows]

    def _mine(self, row_id: int) -> Any:
        return (OutboundMail.id == row_id) & (OutboundMail.status == OutboxStatus.sending) & \
            (OutboundMail.claimed_by == self.worker_id)

    def _all_mine(self, ids: list[int]) -> Any:
        return OutboundMail.id.in_(ids) & (OutboundMail.status == OutboxStatus.sending) & \
            (OutboundMail.claimed_by == self.worker_id)

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

    def _round(self, ids: list[int], later: list[int], report: DeliveryReport) -> None:
        """One row per connection: MAIL, RCPT and DATA on each, waiting on all at once; one commit
        marks every row that got 354 as handed over (and renews the claims of ``later``); then the
        bodies go out; one more commit records the outcomes."""
        sends = self._load(ids)
        for a in sends:
            try:
                a.relay.connect()
            except Temporary as exc:
                a.end(exc)
        self._step(sends, lambda a: a.relay.put("mail", a.mail_from, a.size_option()), _expect(250, "MAIL FROM"))
        for i in range(max((len(a.recipients) for a in sends), default=0)):
            self._step([a for a in sends if i < len(a.recipients)],
                       lambda a, i=i: a.relay.put("rcpt", a.recipients[i]), _note_refusal(i))
        for a in sends:
            temporary = {r: cm for r, cm in a.refused.items() if cm[0] < 500}
            if a.error is None and (len(a.refused) == len(a.recipients) or temporary):
                # nothing is sent yet: a recipient to retry later means the whole mail waits, so
                # that nobody on it is dropped; only recipients refused for good are left out
                code, msg = next(iter((temporary or a.refused).values()))
                a.end(classify(code, msg, "RCPT TO"))
        self._step(sends, lambda a: a.relay.smtp.putcmd("data"), _expect(354, "DATA"))
        self._hand_over([a for a in sends if a.error is None], later)
        # past the point of no return: from here a crash may leave a delivered mail behind
        self._step([a for a in sends if a.handed_over], lambda a: a.relay.smtp.send(dot_stuffed(a.raw)),
                   _expect(250, "end of DATA"), lost=Ambiguous)
        self._record(sends, report)

    def _load(self, ids: list[int]) -> list[_Send]:
        """The rows still claimed by this worker (another may have recovered some), each with a connection."""
        with self.services.db.transaction(readonly=True) as s:
            rows = {r.id: r for r in s.execute(
                select(OutboundMail.id, OutboundMail.mail_from, OutboundMail.recipients, OutboundMail.raw,
                       OutboundMail.attempts)
                .where(OutboundMail.id.in_(ids), OutboundMail.status == OutboxStatus.sending,
                       OutboundMail.claimed_by == self.worker_id))}
        sends = []
        for row_id in ids:
            if row_id in rows:
                r = rows[row_id]
                sends.append(_Send(row_id, r.mail_from, list(r.recipients), r.raw, r.attempts, self.relays[len(sends)]))
            else:
                log.info("outbox: mail %s was taken back by another worker; leaving it to them", row_id)
        return sends

    @staticmethod
    def _step(sends: list[_Send], put: Any, check: Any, lost: type[Exception] = Temporary) -> None:
        """Write one command on every live connection, then read every answer."""
        waiting = []
        for a in sends:
            if a.error is None:
                try:
                    put(a)
                    waiting.append(a)
                except (OSError, smtplib.SMTPException) as exc:
                    a.end(_broken(lost, exc))
        for a in waiting:
            try:
                check(a, *a.relay.answer())
            except (Permanent, Temporary) as exc:
                a.end(exc)
            except (OSError, smtplib.SMTPException) as exc:
                a.end(_broken(lost, exc))

    def _hand_over(self, ready: list[_Send], later: list[int]) -> None:
        """Commit handed_over_at for every row at 354 before any body goes out; keep ``later`` claimed."""
        if not ready:
            return
        now = self.now()
        try:
            with self.services.db.transaction() as s:
                mine = set(s.scalars(update(OutboundMail).where(self._all_mine([a.row_id for a in ready]))
                                     .values(handed_over_at=now, claimed_at=now).returning(OutboundMail.id)
                                     .execution_options(synchronize_session=False)))
                if later:  # a long batch must not outlive its lease while it is being worked through
                    s.execute(update(OutboundMail).where(self._all_mine(later)).values(claimed_at=now)
                              .execution_options(synchronize_session=False))
        except BaseException:
            for a in ready:  # the bodies never go out: the relay drops the unfinished mails
                a.relay.drop()
            raise
        for a in ready:
            if a.row_id in mine:
                a.handed_over = True
            else:
                a.end(Lost(f"mail {a.row_id} was taken back by another worker before its body went out"))

    def _record(self, sends: list[_Send], report: DeliveryReport) -> None:
        """Every outcome of the round in one transaction; permanent failures after, with their Slack card."""
        now, failed = self.now(), []
        with self.services.db.transaction() as s:
            def mark(ids: list[int], **values: Any) -> None:
                if ids:
                    s.execute(update(OutboundMail).where(self._all_mine(ids))
                              .values(claimed_at=None, claimed_by=None, **values)
                              .execution_options(synchronize_session=False))
            mark([a.row_id for a in sends if a.error is None and not a.refused],
                 status=OutboxStatus.sent, sent_at=now, last_error=None)
            for a in sends:
                exc = a.error
                if exc is None:
                    if a.refused:
                        mark([a.row_id], status=OutboxStatus.sent, sent_at=now,
                             last_error=f"refused by the relay for {', '.join(a.refused)}")
                    report.sent += 1
                    log.info("outbox: sent mail %s to %s", a.row_id,
                             ", ".join(r for r in a.recipients if r not in a.refused))
                elif isinstance(exc, Lost):
                    log.warning("outbox: %s", exc)
                elif isinstance(exc, Ambiguous):
                    mark([a.row_id], status=OutboxStatus.uncertain,
                         last_error=f"{exc}; it may have been delivered. `renewdesk outbox retry ID` sends it again")
                    report.uncertain += 1
                    log.warning("outbox: mail %s is uncertain: %s", a.row_id, exc)
                elif isinstance(exc, Permanent):
                    failed.append((a.row_id, str(exc)))
                elif a.attempts >= self.settings.outbox_max_attempts:
                    failed.append((a.row_id, f"gave up after {a.attempts} attempts: {exc}"))
                else:
                    when = now + backoff(self.settings, a.attempts)
                    mark([a.row_id], status=OutboxStatus.queued, next_attempt_at=when, last_error=str(exc),
                         handed_over_at=None)
                    report.retried += 1
                    log.info("outbox: mail %s deferred until %s: %s", a.row_id, when.isoformat(timespec="seconds"), exc)
        for row_id, error in failed:
            self._fail(row_id, error, report)

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
