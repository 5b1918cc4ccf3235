"""The inbox processor: drains ``new`` rows. Until mail understanding exists it marks them waiting.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several processors (threads, or
processes on PostgreSQL) never take the same message.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from handlers.models import InboundMail, InboundStatus

log = logging.getLogger("renewdesk.inbox")
WAITING_REASON = "stored; waiting for the mail understanding step"


def process_batch(services: Any, limit: int = 50) -> int:
    """Take up to ``limit`` new messages and move each on; returns how many were taken."""
    with services.db.transaction() as s:
        rows = list(s.scalars(select(InboundMail).where(InboundMail.status == InboundStatus.new)
                              .order_by(InboundMail.id).limit(limit).with_for_update(skip_locked=True)))
        for row in rows:
            row.status, row.reason, row.processed_at = InboundStatus.waiting, WAITING_REASON, services.clock.now()
            row.attempts += 1
    if rows:
        log.info("inbox: %d message(s) waiting for mail understanding", len(rows))
    return len(rows)
