"""What staff do with tickets: list, show, reply, note, assign, hold, close, archive, unarchive.

Each function is one operation (``services.run(op, ...)``), audited under the caller's actor.
Replies are emailed to the contact who opened the ticket and the master owner (see
:mod:`handlers.tickets.mailing`); notes never leave us.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers import slack_cards
from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.models import Account, Attachment, Contact, MessageKind, Ticket, TicketMessage, TicketStatus
from handlers.tickets import mailing, refs

OPEN_STATES = (TicketStatus.open, TicketStatus.answered, TicketStatus.customer_reply, TicketStatus.on_hold)
MAX_LISTED = 200
CARD_VERBS = {"close": "closed", "hold": "put on hold", "archive": "archived", "unarchive": "unarchived"}


def shown_status(ticket: Ticket) -> str:
    return "archived" if ticket.archived else ticket.status.value


def get(tx: Any, ticket_id: int) -> Ticket:
    ticket = tx.session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket T-{ticket_id}")
    return ticket


def summary(ticket: Ticket, account: Account) -> dict[str, Any]:
    return {"id": ticket.id, "ref": f"T-{ticket.id}", "subject": ticket.subject, "status": shown_status(ticket),
            "account": account.ref, "account_name": account.name, "assignee": ticket.assignee,
            "created_at": ticket.created_at.isoformat(), "updated_at": ticket.updated_at.isoformat(),
            "previous_ticket": ticket.previous_ticket_id}


def listing(tx: Any, which: str = "open", account_id: int | None = None) -> list[dict[str, Any]]:
    """``open`` (not closed, not archived), ``archived`` or ``all``; most recently active first."""
    query = select(Ticket, Account).join(Account, Account.id == Ticket.account_id)
    if which == "open":
        query = query.where(Ticket.status.in_(OPEN_STATES), Ticket.archived.is_(False))
    elif which == "archived":
        query = query.where(Ticket.archived.is_(True))
    elif which != "all":
        raise InvalidInput(f"no ticket list {which!r}: open, archived or all")
    if account_id is not None:
        query = query.where(Ticket.account_id == account_id)
    rows = tx.session.execute(query.order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(MAX_LISTED))
    return [summary(t, a) for t, a in rows]


def show(tx: Any, ticket_id: int) -> dict[str, Any]:
    ticket = get(tx, ticket_id)
    account = tx.session.get(Account, ticket.account_id)
    watchers = [{"email": c.email, "name": c.name, "owner": c.is_owner} for c in mailing.watchers(tx, ticket)]
    opener = tx.session.get(Contact, ticket.opened_by_contact_id) if ticket.opened_by_contact_id else None
    messages = []
    for m in ticket.messages:
        files = tx.session.scalars(select(Attachment).where(Attachment.message_id == m.id))
        messages.append({"id": m.id, "kind": m.kind.value, "author": m.author, "at": m.at.isoformat(),
                         "body": m.body, "inbound_mail_id": m.inbound_mail_id, "outbound_mail_id": m.outbound_mail_id,
                         "attachments": [{"filename": f.filename, "content_type": f.content_type, "size": f.size,
                                          "dropped": f.dropped_reason} for f in files]})
    return {**summary(ticket, account), "opened_by": opener.email if opener else None, "watchers": watchers,
            "tag": refs.subject_tag(ticket.id), "messages": messages}


def _message(tx: Any, ticket: Ticket, kind: MessageKind, text: str) -> TicketMessage:
    body = (text or "").strip()
    if not body:
        raise InvalidInput("the text is empty")
    message = TicketMessage(ticket_id=ticket.id, kind=kind, author=tx.actor, body=body, at=tx.now)
    tx.session.add(message)
    ticket.updated_at = tx.now
    tx.session.flush()
    return message


def reply(tx: Any, ticket_id: int, text: str) -> dict[str, Any]:
    """Email ``text`` to the ticket's opener and master owner, threaded; the ticket is answered."""
    ticket = get(tx, ticket_id)
    message = _message(tx, ticket, MessageKind.reply, text)
    mail = mailing.staff_reply(tx, ticket, message)
    before = ticket.status
    ticket.status, ticket.archived, ticket.closed_at = TicketStatus.answered, False, None
    tx.audit("ticket.reply", subject=ticket, account_id=ticket.account_id, message=message.id,
             outbound_mail=mail.id if mail else None, status_from=str(before))
    slack_cards.queue_thread_post(tx, ticket, message)  # shown in the card's thread, marked as sent
    slack_cards.ticket_changed(tx, ticket, "replied to the client")
    return {"ticket": ticket.id, "message": message.id, "emailed_to": list(mail.recipients) if mail else [],
            "outbound_mail_id": mail.id if mail else None}


def note(tx: Any, ticket_id: int, text: str, *, slack_ts: str | None = None) -> dict[str, Any]:
    """An internal note; ``slack_ts``: it was written in the card's Slack thread (and is not posted there again)."""
    ticket = get(tx, ticket_id)
    message = _message(tx, ticket, MessageKind.note, text)
    message.slack_ts = slack_ts
    tx.audit("ticket.note", subject=ticket, account_id=ticket.account_id, message=message.id)
    slack_cards.queue_thread_post(tx, ticket, message)
    return {"ticket": ticket.id, "message": message.id}


def assign(tx: Any, ticket_id: int, who: str | None) -> dict[str, Any]:
    ticket = get(tx, ticket_id)
    if who is None:
        raise InvalidInput("from a shell, name the staff member: `ticket assign T @U0123ABC`")
    ticket.assignee = who
    ticket.updated_at = tx.now
    tx.audit("ticket.assign", subject=ticket, account_id=ticket.account_id, assignee=who)
    slack_cards.ticket_changed(tx, ticket, f"assigned to <@{who}>")
    return {"ticket": ticket.id, "assignee": who}


def _set(tx: Any, ticket_id: int, action: str, *, status: TicketStatus | None = None,
         archived: bool | None = None) -> dict[str, Any]:
    ticket = get(tx, ticket_id)
    before = shown_status(ticket)
    if status is not None:
        if status == TicketStatus.closed and ticket.status != TicketStatus.closed:
            ticket.closed_at = tx.now
        elif status != TicketStatus.closed:
            ticket.closed_at = None
        ticket.status = status
    if archived is not None:
        ticket.archived = archived
    after = shown_status(ticket)
    if after == before:
        raise Conflict(f"T-{ticket.id} is already {after}")
    ticket.updated_at = tx.now
    tx.audit(f"ticket.{action}", subject=ticket, account_id=ticket.account_id, status_from=before, status_to=after)
    slack_cards.ticket_changed(tx, ticket, CARD_VERBS.get(action, action))
    return {"ticket": ticket.id, "status_from": before, "status": after}


def close(tx: Any, ticket_id: int) -> dict[str, Any]:
    return _set(tx, ticket_id, "close", status=TicketStatus.closed)


def hold(tx: Any, ticket_id: int) -> dict[str, Any]:
    return _set(tx, ticket_id, "hold", status=TicketStatus.on_hold, archived=False)


def archive(tx: Any, ticket_id: int) -> dict[str, Any]:
    """Archived tickets are closed and out of the open list; a client reply brings one back."""
    return _set(tx, ticket_id, "archive", status=TicketStatus.closed, archived=True)


def unarchive(tx: Any, ticket_id: int) -> dict[str, Any]:
    return _set(tx, ticket_id, "unarchive", archived=False)
