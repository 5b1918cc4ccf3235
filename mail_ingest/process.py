"""The inbox processor: drains ``new`` rows. Until mail understanding exists it marks them waiting.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several processors (threads, or
processes on PostgreSQL) never take the same message.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from handlers.inbox import over_flood_cap
from handlers.models import InboundMail, InboundStatus

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
        row.status, row.reason, row.processed_at = InboundStatus.waiting, WAITING_REASON, tx.now
        row.attempts += 1
    return len(rows)


def process_batch(services: Any, limit: int = 50) -> int:
    """Take up to ``limit`` new messages and move each on; returns how many were taken."""
    taken = services.run(_take, limit, actor="system:inbox")
    if taken:
        log.info("inbox: %d message(s) waiting for mail understanding", taken)
    return taken
