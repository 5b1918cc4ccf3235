"""Queue the staff channel's Slack posts in the same transaction as their cause.

Operations call the ``queue_*`` hooks; each writes one ``slack_post`` row (the outbox for
Slack) and does nothing when Slack is not configured (no bot token or no staff channel).
The delivery loop (:mod:`bot.delivery`) posts the rows later, paced per channel, retried,
honouring Slack's ``Retry-After``; so a Slack outage delays cards and loses none.

A ``dedupe_key`` makes a post exactly-once, as ``outbound_mail.dedupe_key`` does for mail.

A ticket's card follows the ticket: every operation that changes what the card shows (assign,
reply, close, hold, archive, unarchive, a client's reply that reopens it) queues its
``chat.update`` itself, so `/desk`, `renewdesk staff`, a button or a modal all refresh it the
same way, once. Changes made before the update goes out are folded into the one still queued.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers import slack_blocks as blocks
from handlers.db import add_keyed, keyed
from handlers.models import (InboundMail, OutboundMail, OutboxStatus, SlackPost, Suspension, SuspensionReason,
                             Ticket, TicketMessage)


def enabled(settings: Any) -> bool:
    """Cards need both a bot token and the staff channel."""
    return bool(settings.slack_bot_token and settings.slack_channel)


def queue_post(tx: Any, message: dict[str, Any], *, dedupe_key: str | None = None, channel: str | None = None,
               thread_ts: str | None = None, update_ts: str | None = None, method: str = "chat.postMessage",
               ticket_id: int | None = None, meta: dict[str, Any] | None = None) -> SlackPost | None:
    """Add one post (or ``chat.update``) to the Slack outbox; None when Slack is off.

    ``meta`` is ours, never sent: ``thread_of_ticket`` (post into that ticket's thread once its
    card is posted), ``card_of_ticket`` (the update targets that ticket's card), ``message``
    (the ticket message this post shows), ``card`` (what the post is).
    """
    if not enabled(tx.settings):
        return None
    existing = keyed(tx.session, SlackPost, dedupe_key)
    if existing is not None:
        return existing
    row = SlackPost(dedupe_key=dedupe_key, method=method, channel=channel or tx.settings.slack_channel,
                    thread_ts=thread_ts, update_ts=update_ts, ticket_id=ticket_id,
                    payload={**message, "meta": meta or {}}, created_at=tx.now, next_attempt_at=tx.now)
    added = add_keyed(tx.session, row)
    if added is not row:  # another process queued the same post first
        return added
    wake_delivery(tx)
    return row


def wake_delivery(tx: Any) -> None:
    """Tell this process's delivery loop, once the transaction commits, that a post is waiting."""
    wakeup = getattr(tx.services, "slack_wakeup", None)
    if wakeup is not None:
        tx.after_commit(wakeup.set)


# -- tickets ----------------------------------------------------------------------------------

def queue_ticket_card(tx: Any, ticket: Ticket) -> SlackPost | None:
    """A new ticket's card, which becomes the parent of the ticket's thread."""
    if not enabled(tx.settings):
        return None
    return queue_post(tx, blocks.ticket_card(tx, ticket), dedupe_key=f"ticket:{ticket.id}:card", ticket_id=ticket.id,
                      meta={"card": "ticket", "ticket": ticket.id})


def queue_thread_post(tx: Any, ticket: Ticket, message: TicketMessage) -> SlackPost | None:
    """A ticket message into the card's thread; not for a message that came from the thread."""
    if not enabled(tx.settings) or message.slack_ts:
        return None
    if ticket.slack_ts is None and tx.session.scalar(select(SlackPost.id).where(
            SlackPost.dedupe_key == f"ticket:{ticket.id}:card")) is None:
        queue_ticket_card(tx, ticket)  # a ticket from before Slack was set up gets its card now
    return queue_post(tx, blocks.thread_message(message), dedupe_key=f"ticket_message:{message.id}:slack",
                      channel=ticket.slack_channel, thread_ts=ticket.slack_ts, ticket_id=ticket.id,
                      meta={"thread_of_ticket": ticket.id, "message": message.id})


def acted_by(actor: str) -> str:
    """Who did it, as the card says it: a Slack mention for staff, words for the others."""
    if actor.startswith("staff:"):
        return f"<@{actor.removeprefix('staff:')}>"
    if actor == "cli":
        return "the operator (renewdesk staff)"
    return blocks.escape(actor.removeprefix("system:") or "renewdesk")


def stamp(tx: Any, verb: str, who: str | None = None) -> str:
    """The card's last line: what was done, by whom, when (in the business's timezone)."""
    at = tx.now.astimezone(tx.settings.tz)
    return f":white_check_mark: {verb} by {who or acted_by(tx.actor)} at {at:%Y-%m-%d %H:%M}"


def _pending(tx: Any, *where: Any) -> SlackPost | None:
    """A post still waiting in the queue that nobody is sending (locked, so the deliverer skips it)."""
    return tx.session.scalar(select(SlackPost).where(SlackPost.status == OutboxStatus.queued, *where)
                             .order_by(SlackPost.id.desc()).limit(1).with_for_update(skip_locked=True))


def refresh_ticket_card(tx: Any, ticket: Ticket, last: str | None = None) -> SlackPost | None:
    """Show the ticket's current state on its card (``chat.update``), with who acted last.

    A card or an update of it that is still queued is rewritten instead of adding another call.
    """
    if not enabled(tx.settings):
        return None
    card_key = f"ticket:{ticket.id}:card"
    if ticket.slack_ts is None and tx.session.scalar(
            select(SlackPost.id).where(SlackPost.dedupe_key == card_key)) is None:
        return queue_ticket_card(tx, ticket)
    message = blocks.ticket_card(tx, ticket, last)
    pending = _pending(tx, SlackPost.ticket_id == ticket.id,
                       (SlackPost.dedupe_key == card_key) | (SlackPost.method == "chat.update"))
    if pending is not None:
        pending.payload = {**message, "meta": (pending.payload or {}).get("meta", {})}
        wake_delivery(tx)
        return pending
    return queue_post(tx, message, method="chat.update", channel=ticket.slack_channel,
                      update_ts=ticket.slack_ts, ticket_id=ticket.id, meta={"card_of_ticket": ticket.id})


def ticket_changed(tx: Any, ticket: Ticket, verb: str, who: str | None = None) -> SlackPost | None:
    """An operation changed the ticket: its card says so (``verb`` by ``who``, default the actor)."""
    if not enabled(tx.settings):
        return None
    return refresh_ticket_card(tx, ticket, stamp(tx, verb, who))


def refresh_card(tx: Any, block_id: str, channel: str, ts: str, verb: str) -> SlackPost | None:
    """Rebuild the card a button sat on (named by its actions block: ``card:KIND:ID``) in place.

    Ticket cards are left alone here: the ticket's own operation has refreshed them already.
    """
    parts = block_id.split(":")
    if len(parts) < 3 or parts[0] != "card" or not parts[2].isdigit():
        return None
    kind, ident = parts[1], int(parts[2])
    if kind == "suspension":
        sus = tx.session.get(Suspension, ident)
        message = blocks.suspension_card(tx, sus, stamp(tx, verb)) if sus else None
    elif kind == "inbox":
        row = tx.session.get(InboundMail, ident)
        message = blocks.quarantine_card(tx, row, stamp(tx, verb)) if row else None
    else:
        return None
    if message is None:
        return None
    return queue_post(tx, message, method="chat.update", channel=channel, update_ts=ts, meta={"card": kind})


# -- the other cards --------------------------------------------------------------------------

def queue_quarantine_card(tx: Any, row: InboundMail) -> SlackPost | None:
    """Mail that could not be read or processed: staff see it at once (nothing is dropped silently)."""
    if not enabled(tx.settings):
        return None
    return queue_post(tx, blocks.quarantine_card(tx, row), dedupe_key=f"inbound:{row.id}:quarantined:{row.attempts}",
                      meta={"card": "inbox", "inbound": row.id})


def queue_suspension_card(tx: Any, sus: Suspension) -> SlackPost | None:
    """An automatic suspension (overdue, credit limit); staff's own suspensions need no card."""
    if not enabled(tx.settings) or sus.reason == SuspensionReason.manual:
        return None
    return queue_post(tx, blocks.suspension_card(tx, sus), dedupe_key=f"suspension:{sus.id}:card",
                      meta={"card": "suspension", "suspension": sus.id})


def queue_failed_delivery(tx: Any, mail: OutboundMail) -> SlackPost | None:
    """An email that could not be delivered for good."""
    if not enabled(tx.settings):
        return None
    return queue_post(tx, blocks.failed_delivery_card(tx, mail),
                      dedupe_key=f"outbound:{mail.id}:failed:{mail.attempts}", meta={"card": "failed_mail"})


def queue_digest(tx: Any, content: dict[str, Any], *, manual: bool) -> SlackPost | None:
    """The staff digest in the channel: the daily one once per day (and not when empty)."""
    if not enabled(tx.settings) or (content.get("empty") and not manual):
        return None
    return queue_post(tx, blocks.digest_message(content),
                      dedupe_key=None if manual else f"digest:{content['day']}:slack", meta={"card": "digest"})
