"""The cap on automatic answers: per ticket and per recipient, N in a sliding window.

Acknowledgements, unknown-sender notes and permission answers are automatic; a mail loop
that slips past the classifier (an autoresponder without RFC 3834 headers) would otherwise
answer forever. Every automatic answer is counted in ``auto_answer``; when the count for the
ticket or the address reaches the cap, the answer is held back, the hold is counted too, and
staff are told once per window: an internal note on the ticket, posted in the ticket's Slack
thread too, and an audit event; the daily digest lists every address answers were held back from.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import case, func, or_, select

from handlers import slack_cards
from handlers.models import AutoAnswer, MessageKind, Ticket, TicketMessage

log = logging.getLogger("renewdesk.tickets")
CAP_NOTE = "Automatic answers paused"


def _counts(tx: Any, since: dt.datetime, recipient: str, ticket_id: int | None) -> tuple[int, int, int]:
    """In one query: answers sent to ``recipient``, sent on the ticket, and held back on either."""
    on_ticket = AutoAnswer.ticket_id == ticket_id if ticket_id is not None else AutoAnswer.id.is_(None)
    to_recipient = AutoAnswer.recipient == recipient
    sent, held = AutoAnswer.sent.is_(True), AutoAnswer.sent.is_(False)
    row = tx.session.execute(select(
        func.count(case((to_recipient & sent, 1))), func.count(case((on_ticket & sent, 1))),
        func.count(case((held, 1)))).where(AutoAnswer.at > since, or_(to_recipient, on_ticket))).one()
    return int(row[0]), int(row[1]), int(row[2])


def allow(tx: Any, recipient: str, intent: str, ticket_id: int | None = None) -> bool:
    """Count one automatic answer to ``recipient``; False when the cap holds it back."""
    settings = tx.settings
    since = tx.now - dt.timedelta(minutes=settings.auto_answer_window_minutes)
    recipient = recipient.lower()
    to_recipient, on_ticket, held_before = _counts(tx, since, recipient, ticket_id)
    over = max(to_recipient, on_ticket) >= settings.auto_answer_cap
    tx.session.add(AutoAnswer(at=tx.now, recipient=recipient, ticket_id=ticket_id, intent=intent, sent=not over))
    if over:
        tell_staff(tx, recipient, intent, ticket_id, held_before)
    return not over


def tell_staff(tx: Any, recipient: str, intent: str, ticket_id: int | None, held_before: int, *,
               audit: Any = None) -> None:
    """Audit a held answer; the first hold in the window is also logged as a warning and noted on
    the ticket (a loop holds back an answer per message: the later ones are logged at debug level)."""
    log.log(logging.WARNING if held_before == 0 else logging.DEBUG,
            "automatic answer %s to %s held back: more than %d in %d minutes (ticket %s)", intent,
            recipient, tx.settings.auto_answer_cap, tx.settings.auto_answer_window_minutes, ticket_id)
    (audit or tx.audit)("auto_answer.capped", subject=("ticket", ticket_id) if ticket_id else None,
             recipient=recipient, intent=intent)
    # tell staff on the first hold in the window only
    if ticket_id is not None and held_before == 0:
        note = TicketMessage(
            ticket_id=ticket_id, kind=MessageKind.note, author="system", at=tx.now,
            body=(f"{CAP_NOTE}: more than {tx.settings.auto_answer_cap} automatic answers to {recipient} "
                  f"or on this ticket within {tx.settings.auto_answer_window_minutes} minutes. This looks like "
                  "a mail loop; nothing more is sent automatically until the window passes. Replies from "
                  "staff still go out."))
        tx.session.add(note)
        tx.session.flush()
        # staff work in Slack: a note only in the database would tell nobody
        slack_cards.queue_thread_post(tx, tx.session.get(Ticket, ticket_id), note)
