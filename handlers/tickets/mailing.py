"""The mail a ticket sends: the acknowledgement of a new ticket and staff replies.

Who gets it (seed rules for sub-accounts): the contact who opened the ticket and the master
account's owner, each only if they want ticket mail; never the account's other contacts.
Every ticket mail carries the subject tag, the HMAC'd Reply-To and body marker, and threads
under the client's message (In-Reply-To, References), so the client's answer comes back here.
"""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import select

from handlers.models import Contact, MessageKind, OutboundMail, Ticket, TicketMessage, TicketWatcher
from handlers.outbox import Mail, Recipient, prepare, queue_email
from handlers.tickets import refs

MAX_REFERENCES = 20


def watchers(tx: Any, ticket: Ticket) -> list[Contact]:
    """The opener and the master owner (as recorded when the ticket was opened), in that order."""
    rows = tx.session.scalars(select(Contact).join(TicketWatcher, TicketWatcher.contact_id == Contact.id)
                              .where(TicketWatcher.ticket_id == ticket.id).order_by(TicketWatcher.id))
    return list(rows)


def _thread_ids(tx: Any, ticket: Ticket) -> list[str]:
    """Message-IDs of the ticket's conversation, oldest first (client mail and ours)."""
    ids = tx.session.scalars(select(TicketMessage.message_id).where(
        TicketMessage.ticket_id == ticket.id, TicketMessage.message_id.is_not(None),
        TicketMessage.kind != MessageKind.note).order_by(TicketMessage.id))
    return [i for i in ids if i][-MAX_REFERENCES:]


def _last_client_id(tx: Any, ticket: Ticket) -> str | None:
    return tx.session.scalar(select(TicketMessage.message_id).where(
        TicketMessage.ticket_id == ticket.id, TicketMessage.kind == MessageKind.client,
        TicketMessage.message_id.is_not(None)).order_by(TicketMessage.id.desc()).limit(1))


def _context(tx: Any, ticket: Ticket, contact: Contact | None, **more: Any) -> dict[str, Any]:
    return {"ticket_id": ticket.id, "tag": refs.subject_tag(ticket.id), "subject": ticket.subject,
            "recipient_name": (contact.name if contact else "") or "", "marker": refs.body_marker(tx, ticket.id),
            "support_address": f"support@{tx.settings.mail_domain}", **more}


def _send(tx: Any, ticket: Ticket, intent: str, recipients: list[Contact], context: dict[str, Any],
          dedupe_key: str | None = None) -> OutboundMail | None:
    if not recipients:
        return None
    thread = _thread_ids(tx, ticket)
    first, *others = recipients
    return queue_email(
        tx, intent, _context(tx, ticket, first, **context),
        to=[Recipient(first.email, first.name)], cc=[Recipient(c.email, c.name) for c in others],
        dedupe_key=dedupe_key, account_id=ticket.account_id, ticket_id=ticket.id,
        reply_to=refs.reply_address(tx, ticket.id), in_reply_to=_last_client_id(tx, ticket), references=thread)


def _wanting(contacts: Iterable[Contact]) -> list[Contact]:
    return [c for c in contacts if c.wants("tickets")]


def acknowledge(tx: Any, batch: Any, ticket: Any, watching: list[Contact], client_message_id: str | None,
                excerpt: str) -> bool:
    """The automatic acknowledgement of a ticket just opened in ``batch`` (once per ticket; capped
    like any automatic answer), queued with the batch's rows; False when the cap or the contacts'
    preferences leave no one to send it to. ``watching``: its watchers, opener first; the
    conversation so far is the client's one message, so its Message-ID is the whole thread."""
    allowed = [c for c in _wanting(watching) if batch.allow(c.email, "ticket_ack", ticket.id)]
    if not allowed:
        return False
    first, *others = allowed
    batch.queue_mail(prepare(tx, "ticket_ack", Mail(
        _context(tx, ticket, first, excerpt=excerpt), [Recipient(first.email, first.name)],
        cc=[Recipient(c.email, c.name) for c in others], dedupe_key=f"ticket:{ticket.id}:ack",
        account_id=ticket.account_id, ticket_id=ticket.id, reply_to=refs.reply_address(tx, ticket.id),
        in_reply_to=client_message_id, references=(client_message_id,) if client_message_id else ())))
    return True


def staff_reply(tx: Any, ticket: Ticket, message: TicketMessage) -> OutboundMail | None:
    """Email a staff reply to the opener and the owner; the mail's id is kept on the message."""
    row = _send(tx, ticket, "ticket_reply", _wanting(watchers(tx, ticket)), {"body": message.body},
                dedupe_key=f"ticket_message:{message.id}:reply")
    if row is not None:
        message.message_id, message.outbound_mail_id = row.message_id, row.id
    return row
