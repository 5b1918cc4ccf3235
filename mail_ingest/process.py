"""The inbox processor: drains ``new`` rows: flood control, parsing, then the classifier's rules.

Mail that cannot be read, or whose processing fails, is quarantined with the reason (Promise 2).
Our own mail coming back is done (stored, no action: rule 1 in full). Everything else keeps
its verdict and waits for the operations that act on it (bounce marking, tickets, renewal
decisions), which later work adds.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several processors (threads, or
processes on PostgreSQL) never take the same message.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from handlers.inbox import over_flood_cap
from handlers.models import InboundMail, InboundStatus
from mail_ingest.classify import Envelope, classify
from mail_ingest.parse import parse

log = logging.getLogger("renewdesk.inbox")
WAITING_REASON = "classified; waiting for the operation that acts on it"


def _take(tx: Any, limit: int) -> int:
    rows = list(tx.session.scalars(select(InboundMail).where(InboundMail.status == InboundStatus.new)
                                   .order_by(InboundMail.id).limit(limit).with_for_update(skip_locked=True)))
    for row in rows:
        # flood control first: whatever later steps do, a throttled message gets no automatic reply
        row.throttled = over_flood_cap(tx, row)
        if row.throttled:
            log.info("inbox: message %s from %s is over the hourly cap: kept, never auto-answered",
                     row.id, row.mail_from)
        row.attempts += 1
        row.processed_at = tx.now
        try:
            _understand(tx, row)
        except Exception as exc:  # one message must not block the queue: keep it, say why
            log.exception("inbox: message %s could not be processed", row.id)
            row.status, row.classification = InboundStatus.quarantined, "error"
            row.reason = f"processing failed: {exc.__class__.__name__}: {exc}"[:2000]
    return len(rows)


def _understand(tx: Any, row: InboundMail) -> None:
    parsed = parse(row.raw)
    if parsed.unreadable_reason:
        row.status, row.classification, row.reason = InboundStatus.quarantined, "unreadable", parsed.unreadable_reason
        log.warning("inbox: message %s quarantined: %s", row.id, parsed.unreadable_reason)
        return
    verdict = classify(parsed, Envelope(row.mail_from, row.recipient), tx.settings)
    row.classification, row.rule = verdict.kind, verdict.rule or None
    if verdict.kind == "own":
        row.status, row.reason = InboundStatus.done, "our own mail came back: stored, no action"
    else:
        row.status, row.reason = InboundStatus.waiting, WAITING_REASON


def process_batch(services: Any, limit: int = 50) -> int:
    """Take up to ``limit`` new messages and move each on; returns how many were taken."""
    taken = services.run(_take, limit, actor="system:inbox")
    if taken:
        log.info("inbox: %d message(s) waiting for mail understanding", taken)
    return taken
