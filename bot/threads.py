"""Staff messages in a ticket card's thread become internal notes on the ticket.

Only a plain message by a person, in a thread whose parent is a ticket card, counts: our own
bot's posts (``bot_id``), edits, joins and other subtypes never loop back. The client is
emailed only through "Reply to client" or `ticket reply`. Slack retries an event it thinks we
missed: the message's ``ts`` is unique on the ticket's messages, so a retried (or replayed)
event adds nothing the second time; recently seen event ids are also skipped on receipt.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from handlers.errors import RenewdeskError
from handlers.models import Ticket, TicketMessage
from handlers.staff import authorize
from handlers.tickets import ops

log = logging.getLogger("renewdesk.slack")


class SeenEvents:
    """The last few thousand event ids this process handled (the database key is the real guard)."""

    def __init__(self, size: int = 5000):
        self.size, self.ids, self.lock = size, OrderedDict[str, None](), threading.Lock()

    def first_time(self, event_id: str | None) -> bool:
        if not event_id:
            return True
        with self.lock:
            if event_id in self.ids:
                return False
            self.ids[event_id] = None
            if len(self.ids) > self.size:
                self.ids.popitem(last=False)
            return True


def _ticket_of(tx: Any, channel: str, thread_ts: str) -> int | None:
    """The ticket whose card is the thread's parent."""
    return tx.session.scalar(select(Ticket.id).where(Ticket.slack_ts == thread_ts, Ticket.slack_channel == channel))


def _recorded(tx: Any, ts: str) -> bool:
    return tx.session.scalar(select(TicketMessage.id).where(TicketMessage.slack_ts == ts)) is not None


def is_staff_thread_message(event: dict[str, Any]) -> bool:
    return (event.get("type") == "message" and not event.get("bot_id") and not event.get("subtype")
            and bool(event.get("user")) and bool(event.get("thread_ts")) and event.get("thread_ts") != event.get("ts")
            and bool((event.get("text") or "").strip()))


def note_from_thread(services: Any, event: dict[str, Any], client: Any) -> str:
    """Record one thread message as a note; returns what happened (for logs and tests)."""
    if not is_staff_thread_message(event):
        return "ignored"
    ticket_id = services.run(_ticket_of, event["channel"], event["thread_ts"], readonly=True)
    if ticket_id is None:
        return "not a ticket thread"
    if services.run(_recorded, event["ts"], readonly=True):
        return "already recorded"
    user = event["user"]
    try:
        authorize(services, f"ticket note {ticket_id} x", as_user=user)
        services.run(ops.note, ticket_id, event["text"], slack_ts=event["ts"], actor=f"staff:{user}")
    except IntegrityError:
        return "already recorded"  # the same event, handled by another process a moment ago
    except RenewdeskError as exc:
        client.chat_postEphemeral(channel=event["channel"], user=user, thread_ts=event["thread_ts"],
                                  text=f"Not recorded on T-{ticket_id}: {exc.message}")
        return "refused"
    return "noted"


def register(app: Any, services: Any) -> None:
    seen = SeenEvents()

    @app.event("message")
    def on_message(body: dict[str, Any], event: dict[str, Any], client: Any) -> None:
        if not seen.first_time(body.get("event_id")):
            log.info("slack: event %s seen already", body.get("event_id"))
            return
        outcome = note_from_thread(services, event, client)
        log.debug("slack: message %s: %s", event.get("ts"), outcome)
