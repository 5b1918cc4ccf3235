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
from typing import Any, Callable, Iterator

from handlers import slack_cards
from handlers.mail_facts import MailFacts
from handlers.models import Account, Contact, MessageKind, Ticket, TicketMessage, TicketStatus
from handlers.tickets import mailing, refs
from handlers.tickets.batch import Batch, TicketRow
from handlers.tickets.answers import answer_unknown_sender, answer_without_permission
from handlers.tickets.outcome import Outcome

log = logging.getLogger("renewdesk.tickets")
EXCERPT_CHARS = 600


# -- who is writing ---------------------------------------------------------------------------

def _dmarc_refusal(account: Account, facts: MailFacts) -> str | None:
    if account.require_dmarc and facts.auth.get("dmarc") != "pass":
        got = facts.auth.get("dmarc", "no result from a trusted server")
        return (f"held for staff: account {account.ref} accepts mail only with a DMARC pass; this message "
                f"has {got}")
    return None


# -- threading --------------------------------------------------------------------------------

def _candidates(batch: Batch, facts: MailFacts) -> Iterator[tuple[str, int]]:
    """(layer, ticket id) in the order they are believed."""
    static = batch.static_candidates(facts)
    if "address" in static:
        yield "address", static["address"]
    if facts.in_reply_to:
        found = batch.ticket_of_message(facts.in_reply_to)
        if found:
            yield "in-reply-to", found
    for message_id in reversed(facts.references):
        found = batch.ticket_of_message(message_id)
        if found:
            yield "references", found
            break
    for layer in ("body-marker", "subject-tag"):
        if layer in static:
            yield layer, static[layer]


def find_ticket(batch: Batch, facts: MailFacts, account_ids: set[int]) -> tuple[TicketRow | None, str, list[str]]:
    """The ticket this mail answers, the layer that found it, and the layers that were refused."""
    refused: list[str] = []
    for layer, ticket_id in _candidates(batch, facts):
        ticket = batch.ticket(ticket_id)
        if ticket is None or ticket.account_id not in account_ids:
            refused.append(f"{layer}: T-{ticket_id} is not a ticket of the sender's account")
            continue
        if layer == "references" and refs.base_subject(facts.subject) != refs.base_subject(ticket.subject):
            refused.append(f"references: T-{ticket_id} has another subject")
            continue
        return ticket, layer, refused
    return None, "", refused


# -- storing ----------------------------------------------------------------------------------

def add_client_message(tx: Any, batch: Batch, ticket: TicketRow, facts: MailFacts, kind: MessageKind, *,
                       need_id: bool = False) -> int | None:
    """The mail as a message of ``ticket`` (attachments too). The caller writes the ticket's new
    ``updated_at`` (with its status, when that changes too).

    The message and its attachments wait with the batch's rows and None is returned, unless
    ``need_id``: the message is then written at once, after the batch's waiting ones (a ticket's
    messages are shown in the order of their ids), and its id is returned.
    """
    values = {"ticket_id": ticket.id, "kind": kind, "author": facts.sender or "(no sender)", "body": _body(facts),
              "at": tx.now, "inbound_mail_id": facts.inbound_id, "message_id": facts.message_id}
    files = [{"filename": att.filename[:255], "content_type": att.content_type[:255], "size": att.size,
              "content": att.content, "dropped_reason": att.dropped_reason} for att in facts.attachments]
    batch.added_message(ticket.id, facts.message_id)
    ticket.updated_at = tx.now
    if not need_id and batch.add_message(values, files):
        return None
    return batch.write_message(values, files)


def _body(facts: MailFacts) -> str:
    return facts.reply_text.strip() or facts.text.strip() or "(no text)"


def open_ticket(tx: Any, batch: Batch, account: Account, contact: Contact | None, facts: MailFacts, *,
                quiet: bool, previous: TicketRow | None = None) -> int:
    """A new ticket on the master account, its first message, watchers and acknowledgement."""
    subject = (refs.base_subject(facts.subject, lower=False) or "(no subject)")[:998]
    ticket_id = batch.new_ticket({
        "account_id": account.id, "opened_by_contact_id": contact.id if contact else None, "subject": subject,
        "status": TicketStatus.open, "archived": False, "created_at": tx.now, "updated_at": tx.now,
        "previous_ticket_id": previous.id if previous else None})
    ticket = TicketRow(ticket_id, account.id, subject, TicketStatus.open, False, None, tx.now)
    batch.added_ticket(ticket)
    # who gets the ticket's mail: the opener and the master owner, in that order, each once
    watching = list({c.id: c for c in (contact, batch.owner(account.id)) if c is not None}.values())
    batch.watch(ticket_id, watching)
    add_client_message(tx, batch, ticket, facts, MessageKind.client)
    batch.audit("ticket.open", subject=("ticket", ticket_id), account_id=account.id, by=facts.sender,
                previous=previous.id if previous else None)
    if not quiet:
        mailing.acknowledge(tx, batch, ticket, watching, facts.message_id, _body(facts)[:EXCERPT_CHARS])
    if slack_cards.enabled(tx.settings):  # the staff channel's card: the parent of the ticket's thread
        batch.write_pending()
        slack_cards.queue_ticket_card(tx, tx.session.get(Ticket, ticket_id))
    return ticket_id


def _reply(tx: Any, batch: Batch, ticket: TicketRow, facts: MailFacts, layer: str) -> Outcome:
    before = ticket.status
    cards = slack_cards.enabled(tx.settings)
    message_id = add_client_message(tx, batch, ticket, facts, MessageKind.client, need_id=cards)
    if ticket.status == TicketStatus.closed or ticket.archived:
        ticket.archived, ticket.closed_at = False, None
        ticket.status = TicketStatus.customer_reply
    elif ticket.status in (TicketStatus.answered, TicketStatus.on_hold):
        ticket.status = TicketStatus.customer_reply
    batch.save_ticket(ticket)
    if cards:  # the client's mail in the card's thread
        batch.write_pending()
        card_ticket = tx.session.get(Ticket, ticket.id, populate_existing=True)
        slack_cards.queue_thread_post(tx, card_ticket, tx.session.get(TicketMessage, message_id))
        if ticket.status != before:  # the card shows the status: reopened, or waiting for staff again
            slack_cards.ticket_changed(tx, card_ticket, "the client replied", who="email")
    batch.audit("ticket.client_reply", subject=("ticket", ticket.id), account_id=ticket.account_id, layer=layer,
                status_from=str(before), status_to=str(ticket.status))
    reopened = " (reopened)" if before == TicketStatus.closed else ""
    return Outcome("done", "ticket_reply", f"reply threaded to T-{ticket.id} by {layer}{reopened}", ticket.id)


def _too_old(tx: Any, ticket: TicketRow) -> bool:
    if ticket.status != TicketStatus.closed and not ticket.archived:
        return False
    closed = ticket.closed_at or ticket.updated_at
    return tx.now - closed > dt.timedelta(days=tx.settings.ticket_reopen_days)


# -- the rules --------------------------------------------------------------------------------

def receive(tx: Any, row: Any, facts: MailFacts, *, quiet: bool = False, batch: Batch | None = None) -> Outcome:
    """Rules 5 to 7 for one message (``facts.automatic``: rule 3's store-if-it-threads).

    ``batch``: the lookups shared with the other messages of the processor's batch (one is made
    for this message alone when none is given). ``row``: the stored message (its id, and the
    account staff chose for it, if any).
    """
    if batch is None:
        batch = Batch(tx, [facts])
        outcome = _rules(tx, row, facts, quiet, batch)
        batch.write_pending()
        return outcome
    return _rules(tx, row, facts, quiet, batch)


def _rules(tx: Any, row: Any, facts: MailFacts, quiet: bool, batch: Batch) -> Outcome:
    contacts = batch.contacts_of(facts.sender)
    if row.account_id is not None:  # staff chose the account for a held message
        contacts = [c for c in contacts if c.account_id == row.account_id] or contacts
    account_ids = {c.account_id for c in contacts}
    ticket, layer, refused = find_ticket(batch, facts, account_ids)
    if refused:
        log.info("inbox: message %s: threading refused %s", facts.inbound_id, "; ".join(refused))
    if facts.automatic:
        if ticket is None:
            return Outcome("done", "auto_reply", "automatic mail; threads to no ticket of the sender: stored only")
        add_client_message(tx, batch, ticket, facts, MessageKind.auto)
        batch.save_ticket(ticket)
        return Outcome("done", "auto_reply", f"automatic mail stored on T-{ticket.id}; not answered",
                       ticket.id)
    if not contacts:
        return _answered(batch, answer_unknown_sender, tx, facts, quiet=quiet)
    if ticket is not None:
        contact = next(c for c in contacts if c.account_id == ticket.account_id)
        account = batch.account(ticket.account_id)
    else:
        permitted = [c for c in contacts if c.may("tickets")]
        accounts = {c.account_id for c in permitted}
        if len(accounts) > 1:
            return Outcome("waiting", "new_ticket",
                           f"held for staff: {facts.sender} is a contact of {len(accounts)} accounts; "
                           f"`inbox attach {row.id} ACCOUNT` says which")
        contact = permitted[0] if permitted else contacts[0]
        account = batch.account(contact.account_id)
    refusal = _dmarc_refusal(account, facts)
    if refusal:
        return Outcome("waiting", "dmarc", refusal)
    if not contact.may("tickets"):
        return _answered(batch, answer_without_permission, tx, contact, account, facts, quiet=quiet)
    if ticket is not None and not _too_old(tx, ticket):
        return _reply(tx, batch, ticket, facts, layer)
    new = open_ticket(tx, batch, account, contact, facts, quiet=quiet, previous=ticket)
    if ticket is not None:
        return Outcome("done", "new_ticket", f"new ticket T-{new}: T-{ticket.id} was closed more than "
                       f"{tx.settings.ticket_reopen_days} days ago", new)
    acked = "" if not quiet else " (sender over the hourly cap: not acknowledged)"
    return Outcome("done", "new_ticket", f"new ticket T-{new} on {account.ref}{acked}", new)


def _answered(batch: Batch, answer: Callable[..., Outcome], *args: Any, quiet: bool) -> Outcome:
    """An answer that counts its automatic answers in the database itself: the batch's waiting
    rows are written first (their counts included), and the batch asks again afterwards."""
    with batch.aside(answers_only=True):
        return answer(*args, quiet=quiet)
