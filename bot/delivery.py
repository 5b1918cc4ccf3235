"""Post queued ``slack_post`` rows to Slack: in order, paced per channel, retried, Retry-After honoured.

A row moves ``queued → sending → sent`` (or ``failed``), claimed with ``SKIP LOCKED`` like
outgoing mail, and posted in the order they were queued. Slack allows about one message per
second per channel: posts to one channel are spaced by ``pace_seconds``. A 429 answer puts the
row back for the ``Retry-After`` the answer names, without counting it as an attempt, and holds
the channel's later posts until then too, so a rate-limit storm delays posts, keeps their
order and loses none. A thread reply waits until
its ticket's card (the thread's parent) is posted.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select, update

from handlers.delivery import backoff
from handlers.models import OutboxStatus, SlackPost, Ticket, TicketMessage

log = logging.getLogger("renewdesk.slack")
# answers that will not get better by trying again: the row fails and stays listed
PERMANENT = {"channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "invalid_blocks_format",
             "msg_too_long", "no_text", "invalid_auth", "account_inactive", "token_revoked", "not_authed",
             "missing_scope", "message_not_found", "cant_update_message", "edit_window_closed",
             "invalid_arguments", "too_many_attachments", "restricted_action", "thread_not_found"}
WAIT_FOR_PARENT = dt.timedelta(seconds=2)


@dataclass
class SlackReport:
    sent: int = 0
    retried: int = 0
    deferred: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class RateLimited(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"rate limited by Slack: retry after {retry_after:g}s")
        self.retry_after = retry_after


def api_base(settings: Any) -> str:
    base = settings.slack_api_url or WebClient.BASE_URL
    return base if base.endswith("/") else base + "/"


def web_client(settings: Any) -> WebClient:
    return WebClient(token=settings.slack_bot_token, base_url=api_base(settings), timeout=15)


class SlackDeliverer:
    """Claims due Slack posts and sends them; one per delivery loop."""

    def __init__(self, services: Any, *, client: WebClient | None = None, pace_seconds: float = 1.0,
                 worker_id: str | None = None, stopping: Any = None):
        self.services = services
        self.client = client or web_client(services.settings)
        self.pace_seconds = pace_seconds
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:slack"
        self.stopping = stopping
        self._last_post: dict[str, float] = {}   # channel → monotonic time of our last call
        self._not_before: dict[str, dt.datetime] = {}  # channel → when Slack's Retry-After ends

    def now(self) -> dt.datetime:
        return self.services.clock.now()

    def deliver_due(self, limit: int = 50) -> SlackReport:
        report = SlackReport()
        self._recover()
        ids = self._claim(limit)
        for n, row_id in enumerate(ids):
            if self.stopping is not None and self.stopping.is_set():
                self._release(ids[n:])
                break
            self._send_one(row_id, report)
        if report.sent or report.failed or report.retried:
            log.info("slack: %d posted, %d to retry, %d waiting for their card, %d failed",
                     report.sent, report.retried, report.deferred, report.failed)
        return report

    # -- claiming -------------------------------------------------------------------------

    def _recover(self) -> None:
        """Posts a dead worker left in ``sending`` go back to the queue after the lease."""
        cutoff = self.now() - dt.timedelta(seconds=self.services.settings.outbox_lease_seconds)
        with self.services.db.transaction() as s:
            s.execute(update(SlackPost).where(SlackPost.status == OutboxStatus.sending, SlackPost.claimed_at <= cutoff)
                      .values(status=OutboxStatus.queued, claimed_at=None, claimed_by=None))

    def _claim(self, limit: int) -> list[int]:
        now = self.now()
        with self.services.db.transaction() as s:
            rows = list(s.scalars(select(SlackPost).where(
                SlackPost.status == OutboxStatus.queued, SlackPost.next_attempt_at <= now)
                .order_by(SlackPost.id).limit(limit).with_for_update(skip_locked=True)))
            for row in rows:
                row.status, row.claimed_at, row.claimed_by = OutboxStatus.sending, now, self.worker_id
                row.attempts += 1
            return [r.id for r in rows]

    def _mine(self, row_id: int) -> Any:
        return (SlackPost.id == row_id) & (SlackPost.status == OutboxStatus.sending) & \
            (SlackPost.claimed_by == self.worker_id)

    def _set(self, row_id: int, **values: Any) -> None:
        with self.services.db.transaction() as s:
            s.execute(update(SlackPost).where(self._mine(row_id)).values(claimed_at=None, claimed_by=None, **values))

    def _release(self, ids: list[int]) -> None:
        for row_id in ids:
            self._set(row_id, status=OutboxStatus.queued, attempts=SlackPost.attempts - 1)

    # -- sending --------------------------------------------------------------------------

    def _prepare(self, row_id: int) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        """The method and body to send, or None while the ticket's card is not posted yet."""
        with self.services.db.transaction(readonly=True) as s:
            row = s.get(SlackPost, row_id)
            payload = dict(row.payload)
            meta = payload.pop("meta", {}) or {}
            body: dict[str, Any] = {"channel": row.channel, **payload}
            ticket_id = meta.get("thread_of_ticket") or meta.get("card_of_ticket")
            if row.method == "chat.postMessage" and row.thread_ts:
                body["thread_ts"] = row.thread_ts
            if row.method == "chat.update" and row.update_ts:
                body["ts"] = row.update_ts
            if ticket_id and ("thread_ts" not in body and row.method == "chat.postMessage"
                              or "ts" not in body and row.method == "chat.update"):
                ticket = s.get(Ticket, ticket_id)
                if ticket is None or ticket.slack_ts is None:
                    return None
                body["channel"] = ticket.slack_channel or row.channel
                body["thread_ts" if row.method == "chat.postMessage" else "ts"] = ticket.slack_ts
            return row.method, body, meta

    def _pace(self, channel: str) -> None:
        wait = self._last_post.get(channel, -1e9) + self.pace_seconds - time.monotonic()
        if wait > 0:
            if self.stopping is not None:
                self.stopping.wait(wait)
            else:
                time.sleep(wait)
        self._last_post[channel] = time.monotonic()

    def _send_one(self, row_id: int, report: SlackReport) -> None:
        prepared = self._prepare(row_id)
        if prepared is None:
            self._set(row_id, status=OutboxStatus.queued, attempts=SlackPost.attempts - 1,
                      next_attempt_at=self.now() + WAIT_FOR_PARENT)
            report.deferred += 1
            return
        method, body, meta = prepared
        channel = body["channel"]
        wait_until = self._not_before.get(channel)
        if wait_until is not None and self.now() < wait_until:
            # Slack asked us to wait on this channel: later posts wait too, keeping their order
            self._set(row_id, status=OutboxStatus.queued, attempts=SlackPost.attempts - 1, next_attempt_at=wait_until)
            report.deferred += 1
            return
        self._pace(channel)
        try:
            data = self._call(method, body)
        except RateLimited as exc:
            self._not_before[channel] = self.now() + dt.timedelta(seconds=exc.retry_after)
            self._set(row_id, status=OutboxStatus.queued, attempts=SlackPost.attempts - 1, last_error=str(exc),
                      next_attempt_at=self._not_before[channel])
            report.retried += 1
            log.info("slack: %s; channel %s waits", exc, channel)
            return
        except SlackApiError as exc:
            error = str(exc.response.get("error") or f"HTTP {exc.response.status_code}")
            self._failed_or_retry(row_id, error, permanent=error in PERMANENT, report=report)
            return
        except Exception as exc:  # connection refused, timeout, a proxy's HTML: try again later
            self._failed_or_retry(row_id, f"{type(exc).__name__}: {exc}", permanent=False, report=report)
            return
        self._done(row_id, data, meta)
        report.sent += 1

    def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client.api_call(method, json=body).data
        except SlackApiError as exc:
            if exc.response.status_code == 429 or exc.response.get("error") == "ratelimited":
                raw = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after") or "1"
                try:
                    retry_after = max(float(raw), 0.0)
                except ValueError:
                    retry_after = 1.0
                raise RateLimited(retry_after) from None
            raise

    def _failed_or_retry(self, row_id: int, error: str, *, permanent: bool, report: SlackReport) -> None:
        with self.services.db.transaction(readonly=True) as s:
            attempts = s.get(SlackPost, row_id).attempts
        if permanent or attempts >= self.services.settings.outbox_max_attempts:
            self._set(row_id, status=OutboxStatus.failed, last_error=error)
            report.failed += 1
            report.errors.append(error)
            log.warning("slack: post %s failed: %s", row_id, error)
        else:
            self._set(row_id, status=OutboxStatus.queued, last_error=error,
                      next_attempt_at=self.now() + backoff(self.services.settings, attempts))
            report.retried += 1

    def _done(self, row_id: int, data: dict[str, Any], meta: dict[str, Any]) -> None:
        """Sent: remember the message's ts; a ticket card becomes its ticket's thread parent."""
        ts, channel = data.get("ts"), data.get("channel")
        with self.services.db.transaction() as s:
            s.execute(update(SlackPost).where(self._mine(row_id)).values(
                status=OutboxStatus.sent, sent_at=self.now(), posted_ts=ts, claimed_at=None, claimed_by=None,
                last_error=None))
            if meta.get("card") == "ticket" and ts:
                s.execute(update(Ticket).where(Ticket.id == meta["ticket"], Ticket.slack_ts.is_(None))
                          .values(slack_ts=ts, slack_channel=channel))
            if meta.get("message") and ts:
                s.execute(update(TicketMessage).where(TicketMessage.id == meta["message"],
                                                      TicketMessage.slack_ts.is_(None)).values(slack_ts=ts))
