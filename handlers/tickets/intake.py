"""Client mail into tickets: replies thread onto their ticket, new mail opens one on the
sender's master account, unknown senders follow the configured policy.

Threading looks in layers, most trustworthy first: the HMAC'd token in the address the mail
was sent to, our Message-IDs in In-Reply-To and References, the HMAC'd body marker, then the
subject tag. Whatever a layer finds, the ticket must belong to an account the sender (the From
address) is a contact of; a match on another account's ticket is ignored, so a spoofed From
with a stolen tag learns and changes nothing. A match found only in References, on a mail whose
subject is a different one, is not trusted either: mail programs keep References when people
start a new topic by replying to an old mail.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Iterator

from sqlalchemy import select

from handlers import slack_cards
from handlers.mail_facts import MailFacts
from handlers.models import (Account, Attachment, Contact, InboundMail, MessageKind, OutboundMail, Ticket,
                             TicketMessage, TicketStatus)
from handlers.tickets import mailing, refs
from handlers.tickets.answers import answer_unknown_sender, answer_without_permission
from handlers.tickets.outcome import Outcome

log = logging.getLogger("renewdesk.tickets")
EXCERPT_CHARS = 600


# -- who is writing ---------------------------------------------------------------------------

def contacts_of(tx: Any, sender: str) -> list[Contact]:
    if not sender:
        return []
    return list(tx.session.scalars(select(Contact).where(Contact.email == sender.lower()).order_by(Contact.id)))


def _dmarc_refusal(account: Account, facts: MailFacts) -> str | None:
    if account.require_dmarc and facts.auth.get("dmarc") != "pass":
        got = facts.auth.get("dmarc", "no result from a trusted server")
        return (f"held for staff: account {account.ref} accepts mail only with a DMARC pass; this message "
                f"has {got}")
    return None


# -- threading --------------------------------------------------------------------------------

def _ticket_by_message_id(tx: Any, message_id: str) -> int | None:
    found = tx.session.scalar(select(TicketMessage.ticket_id).where(TicketMessage.message_id == message_id).limit(1))
    if found is None:
        found = tx.session.scalar(select(OutboundMail.ticket_id).where(
            OutboundMail.message_id == message_id, OutboundMail.ticket_id.is_not(None)))
    return found


def _candidates(tx: Any, facts: MailFacts) -> Iterator[tuple[str, int]]:
    """(layer, ticket id) in the order they are believed."""
    by_address = refs.ticket_in_address(tx, facts.recipient)
    if by_address:
        yield "address", by_address
    if facts.in_reply_to:
        found = _ticket_by_message_id(tx, facts.in_reply_to)
        if found:
            yield "in-reply-to", found
    for message_id in reversed(facts.references):
        found = _ticket_by_message_id(tx, message_id)
        if found:
            yield "references", found
            break
    by_marker = refs.ticket_in_body(tx, facts.text)
    if by_marker:
        yield "body-marker", by_marker
    by_tag = refs.tag_in(facts.subject)
    if by_tag:
        yield "subject-tag", by_tag


def find_ticket(tx: Any, facts: MailFacts, account_ids: set[int]) -> tuple[Ticket | None, str, list[str]]:
    """The ticket this mail answers, the layer that found it, and the layers that were refused."""
    refused: list[str] = []
    for layer, ticket_id in _candidates(tx, facts):
        ticket = tx.session.get(Ticket, ticket_id)
        if ticket is None or ticket.account_id not in account_ids:
            refused.append(f"{layer}: T-{ticket_id} is not a ticket of the sender's account")
            continue
        if layer == "references" and refs.base_subject(facts.subject) != refs.base_subject(ticket.subject):
            refused.append(f"references: T-{ticket_id} has another subject")
            continue
        return ticket, layer, refused
    return None, "", refused


# -- storing ----------------------------------------------------------------------------------

def add_client_message(tx: Any, ticket: Ticket, facts: MailFacts, kind: MessageKind) -> TicketMessage:
    body = facts.reply_text.strip() or facts.text.strip() or "(no text)"
    message = TicketMessage(ticket_id=ticket.id, kind=kind, author=facts.sender or "(no sender)", body=body,
                            at=tx.now, inbound_mail_id=facts.inbound_id, message_id=facts.message_id)
    for att in facts.attachments:
        message.attachments.append(Attachment(filename=att.filename[:255], content_type=att.content_type[:255],
                                              size=att.size, content=att.content,
                                              dropped_reason=att.dropped_reason))
    tx.session.add(message)
    ticket.updated_at = tx.now
    tx.session.flush()
    return message


def open_ticket(tx: Any, account: Account, contact: Contact | None, facts: MailFacts, *, quiet: bool,
                previous: Ticket | None = None) -> Ticket:
    """A new ticket on the master account, its first message, watchers and acknowledgement."""
    subject = refs.base_subject(facts.subject, lower=False) or "(no subject)"
    ticket = Ticket(account_id=account.id, opened_by_contact_id=contact.id if contact else None,
                    subject=subject[:998], status=TicketStatus.open, created_at=tx.now, updated_at=tx.now,
                    previous_ticket_id=previous.id if previous else None)
    tx.session.add(ticket)
    tx.session.flush()
    mailing.add_watchers(tx, ticket, contact)
    message = add_client_message(tx, ticket, facts, MessageKind.client)
    tx.audit("ticket.open", subject=ticket, account_id=account.id, by=facts.sender,
             previous=previous.id if previous else None)
    if not quiet:
        mailing.acknowledge(tx, ticket, message.body[:EXCERPT_CHARS])
    slack_cards.queue_ticket_card(tx, ticket)  # the staff channel's card: the parent of the ticket's thread
    return ticket


def _reply(tx: Any, ticket: Ticket, facts: MailFacts, layer: str) -> Outcome:
    before = ticket.status
    message = add_client_message(tx, ticket, facts, MessageKind.client)
    slack_cards.queue_thread_post(tx, ticket, message)  # the client's mail in the card's thread
    if ticket.status == TicketStatus.closed or ticket.archived:
        ticket.archived, ticket.closed_at = False, None
        ticket.status = TicketStatus.customer_reply
    elif ticket.status in (TicketStatus.answered, TicketStatus.on_hold):
        ticket.status = TicketStatus.customer_reply
    tx.audit("ticket.client_reply", subject=ticket, account_id=ticket.account_id, layer=layer,
             status_from=str(before), status_to=str(ticket.status))
    if ticket.status != before:  # the card shows the status: reopened, or waiting for staff again
        slack_cards.ticket_changed(tx, ticket, "the client replied", who="email")
    reopened = " (reopened)" if before == TicketStatus.closed else ""
    return Outcome("done", "ticket_reply", f"reply threaded to T-{ticket.id} by {layer}{reopened}", ticket.id)


def _too_old(tx: Any, ticket: Ticket) -> bool:
    if ticket.status != TicketStatus.closed and not ticket.archived:
        return False
    closed = ticket.closed_at or ticket.updated_at
    return tx.now - closed > dt.timedelta(days=tx.settings.ticket_reopen_days)


# -- the rules --------------------------------------------------------------------------------

def receive(tx: Any, row: InboundMail, facts: MailFacts, *, quiet: bool = False) -> Outcome:
    """Rules 5 to 7 for one message (``facts.automatic``: rule 3's store-if-it-threads)."""
    contacts = contacts_of(tx, facts.sender)
    if row.account_id is not None:  # staff chose the account for a held message
        contacts = [c for c in contacts if c.account_id == row.account_id] or contacts
    account_ids = {c.account_id for c in contacts}
    ticket, layer, refused = find_ticket(tx, facts, account_ids)
    if refused:
        log.info("inbox: message %s: threading refused %s", facts.inbound_id, "; ".join(refused))
    if facts.automatic:
        if ticket is None:
            return Outcome("done", "auto_reply", "automatic mail; threads to no ticket of the sender: stored only")
        add_client_message(tx, ticket, facts, MessageKind.auto)
        return Outcome("done", "auto_reply", f"automatic mail stored on T-{ticket.id}; not answered",
                       ticket.id)
    if not contacts:
        return answer_unknown_sender(tx, facts, quiet=quiet)
    if ticket is not None:
        contact = next(c for c in contacts if c.account_id == ticket.account_id)
        account = tx.session.get(Account, ticket.account_id)
    else:
        permitted = [c for c in contacts if c.may("tickets")]
        accounts = {c.account_id for c in permitted}
        if len(accounts) > 1:
            return Outcome("waiting", "new_ticket",
                           f"held for staff: {facts.sender} is a contact of {len(accounts)} accounts; "
                           f"`inbox attach {row.id} ACCOUNT` says which")
        contact = permitted[0] if permitted else contacts[0]
        account = tx.session.get(Account, contact.account_id)
    refusal = _dmarc_refusal(account, facts)
    if refusal:
        return Outcome("waiting", "dmarc", refusal)
    if not contact.may("tickets"):
        return answer_without_permission(tx, contact, account, facts, quiet=quiet)
    if ticket is not None and not _too_old(tx, ticket):
        return _reply(tx, ticket, facts, layer)
    new = open_ticket(tx, account, contact, facts, quiet=quiet, previous=ticket)
    if ticket is not None:
        return Outcome("done", "new_ticket", f"new ticket T-{new.id}: T-{ticket.id} was closed more than "
                       f"{tx.settings.ticket_reopen_days} days ago", new.id)
    acked = "" if not quiet else " (sender over the hourly cap: not acknowledged)"
    return Outcome("done", "new_ticket", f"new ticket T-{new.id} on {account.ref}{acked}", new.id)
