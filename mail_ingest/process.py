"""The inbox processor: drains ``new`` rows: flood control, parsing, the classifier's rules, then
the one operation that acts on the message.

1. own mail → done, no action; 2. bounce → the contact is marked bouncing, the bounce linked
to our mail; 3. auto-reply or bulk → stored on its ticket if it threads, never answered;
4. mail to ``renew+<token>@`` → the renewals operation; 5–7. replies thread onto their
ticket, new mail from a contact opens a ticket on the master account, unknown senders follow
``RENEWDESK_UNKNOWN_SENDERS``. Mail that cannot be read, or whose processing fails, is
quarantined with the reason (Promise 2); each message runs in its own savepoint, so one bad
message neither blocks nor spoils the others in its batch. A database error that is not the
message's fault (down, lock timeout, deadlock) is not a reason: the whole batch is rolled back
and its messages stay new for the next round.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several processors (threads, or
processes on PostgreSQL) never take the same message.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from handlers.bounces import record_bounce
from handlers.db import is_transient
from handlers.inbox import over_flood_cap
from handlers.mail_facts import FactAttachment, MailFacts
from handlers.models import InboundMail, InboundStatus
from handlers.renewals.replies import handle_reply as renewal_reply
from handlers.slack_cards import queue_quarantine_card
from handlers.tickets.intake import receive
from mail_ingest import authres
from mail_ingest.classify import Envelope, classify
from mail_ingest.parse import ParsedMail, parse
from mail_ingest.strip import strip_reply

log = logging.getLogger("renewdesk.inbox")
AUTOMATIC = ("auto_reply", "bulk")


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
            with tx.session.begin_nested():
                _understand(tx, row)
        except Exception as exc:  # one message must not block the queue: keep it, say why
            if is_transient(exc):
                # the database's trouble, not the message's: the batch rolls back, the rows stay
                # new, and the next round takes them again (the caller sees a TemporaryFailure)
                raise
            log.exception("inbox: message %s could not be processed", row.id)
            row.status, row.classification = InboundStatus.quarantined, "error"
            row.reason = f"processing failed: {exc.__class__.__name__}: {exc}"[:2000]
        if row.status == InboundStatus.quarantined:
            queue_quarantine_card(tx, row)  # shown to staff at once (Promise 2)
    return len(rows)


def _understand(tx: Any, row: InboundMail) -> None:
    parsed = parse(row.raw, max_attachment_bytes=tx.settings.max_attachment_bytes)
    if parsed.unreadable_reason:
        row.status, row.classification, row.reason = InboundStatus.quarantined, "unreadable", parsed.unreadable_reason
        log.warning("inbox: message %s quarantined: %s", row.id, parsed.unreadable_reason)
        return
    row.sender = (parsed.from_addr or "").lower()[:320] or None
    verdict = classify(parsed, Envelope(row.mail_from, row.recipient), tx.settings)
    row.classification, row.rule = verdict.kind, verdict.rule or None
    if verdict.kind == "own":
        row.status, row.reason = InboundStatus.done, "our own mail came back: stored, no action"
        return
    if verdict.kind == "bounce":
        row.status, row.reason = InboundStatus.done, record_bounce(tx, row, verdict.detail)
        return
    auth = authres.results(parsed.headers.get_all("authentication-results"),
                           authres.trusted_ids(tx.settings.trusted_authserv_ids))
    row.auth_results = auth or None
    facts = facts_of(row, parsed, automatic=verdict.kind in AUTOMATIC, auth=auth)
    if row.recipient.split("@")[0].lower().startswith("renew+"):
        _renewal(tx, row, facts)
        return
    outcome = receive(tx, row, facts, quiet=row.throttled)
    row.status, row.rule, row.reason = InboundStatus(outcome.status), outcome.rule, outcome.reason
    row.ticket_id = outcome.ticket_id


def _renewal(tx: Any, row: InboundMail, facts: MailFacts) -> None:
    row.rule = "renewal_reply"
    if facts.automatic:
        row.status, row.reason = InboundStatus.done, "automatic mail to a renewal address: no decision, no answer"
    else:
        token = row.recipient.split("@")[0].split("+", 1)[1]
        row.status, row.reason = InboundStatus.done, renewal_reply(tx, facts, token)


def facts_of(row: InboundMail, parsed: ParsedMail, *, automatic: bool, auth: dict[str, str]) -> MailFacts:
    """The plain values operations need (``handlers`` never sees parser objects)."""
    return MailFacts(
        inbound_id=row.id, recipient=row.recipient.lower(), sender=row.sender or "",
        sender_name=parsed.from_name or "", subject=parsed.subject or "", message_id=parsed.message_id,
        in_reply_to=parsed.in_reply_to, references=tuple(parsed.references), text=parsed.text or "",
        reply_text=strip_reply(parsed.text or ""), received_at=row.received_at, automatic=automatic, auth=auth,
        attachments=tuple(FactAttachment(a.filename or "attachment", a.content_type, a.size, a.content,
                                         a.dropped_reason) for a in parsed.attachments))


def process_batch(services: Any, limit: int = 50) -> int:
    """Take up to ``limit`` new messages and move each on; returns how many were taken."""
    taken = services.run(_take, limit, actor="system:inbox")
    if taken:
        log.info("inbox: %d message(s) processed", taken)
    return taken
