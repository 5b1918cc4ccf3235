"""The inbox processor: drains ``new`` rows: flood control, then parsing; mail that cannot be read
is quarantined with the reason (Promise 2), the rest waits for the classifier, which is not built yet.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several processors (threads, or
processes on PostgreSQL) never take the same message.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from handlers.inbox import over_flood_cap
from handlers.models import InboundMail, InboundStatus
from mail_ingest.parse import parse

log = logging.getLogger("renewdesk.inbox")
WAITING_REASON = "stored; waiting for the mail understanding step"


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
        parsed = parse(row.raw)
        if parsed.unreadable_reason:
            row.status, row.classification, row.reason = InboundStatus.quarantined, "unreadable", parsed.unreadable_reason
            log.warning("inbox: message %s quarantined: %s", row.id, parsed.unreadable_reason)
        else:
            row.status, row.reason = InboundStatus.waiting, WAITING_REASON
    return len(rows)


def process_batch(services: Any, limit: int = 50) -> int:
    """Take up to ``limit`` new messages and move each on; returns how many were taken."""
    taken = services.run(_take, limit, actor="system:inbox")
    if taken:
        log.info("inbox: %d message(s) waiting for mail understanding", taken)
    return taken
