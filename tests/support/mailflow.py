"""Mail through the store and the processor, as the doors hand it over, and what came out."""
from __future__ import annotations

import email
import email.policy
import itertools
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select

from handlers.inbox import Incoming, store_many
from handlers.models import Account, Contact, InboundMail, OutboundMail, Ticket
from mail_ingest.process import process_batch

SUPPORT = "support@desk.example.test"
_ids = itertools.count(1)


def mail(sender: str = "anna@acme.test", subject: str = "Help with my site", body: str = "My site is down.",
         *, to: str = SUPPORT, message_id: str | None = None, in_reply_to: str | None = None,
         references: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    """A plain client message as bytes."""
    lines = [f"From: Client <{sender}>", f"To: {to}", f"Subject: {subject}",
             f"Message-ID: {message_id or f'<c{next(_ids)}@client.test>'}", "Date: Sat, 21 Nov 2026 09:00:00 +0000"]
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:
        lines.append(f"References: {references}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += ["Content-Type: text/plain; charset=utf-8", "", body, ""]
    return "\r\n".join(lines).encode()


def deliver(services: Any, raw: bytes, *, to: str = SUPPORT, envelope_from: str = "client@client.test") -> InboundMail:
    """Store one message for one recipient and run the processor; returns the row afterwards."""
    [stored] = services.run(store_many, [Incoming(raw, "smtp", envelope_from, (to,))])
    while process_batch(services):
        pass
    with services.db.transaction(readonly=True) as s:
        row = s.get(InboundMail, stored[0].id)
        s.expunge(row)
        return row


def outbound(services: Any, intent: str | None = None) -> list[OutboundMail]:
    with services.db.transaction(readonly=True) as s:
        q = select(OutboundMail).order_by(OutboundMail.id)
        if intent:
            q = q.where(OutboundMail.intent == intent)
        rows = list(s.scalars(q))
        for r in rows:
            s.expunge(r)
        return rows


def parsed(row: OutboundMail) -> EmailMessage:
    return email.message_from_bytes(row.raw, policy=email.policy.default)


def body_text(row: OutboundMail) -> str:
    return parsed(row).get_body(("plain",)).get_content()


def make_account(services: Any, ref: str, owner: str, *contacts: tuple[str, list[str]], **fields: Any) -> int:
    """An account with an owner and contacts given as (email, permissions); returns its id."""
    def op(tx):
        acc = Account(ref=ref, name=ref.title(), currency="EUR", created_at=tx.now, **fields)
        tx.session.add(acc)
        tx.session.flush()
        tx.session.add(Contact(account_id=acc.id, email=owner, name="Owner", is_owner=True, created_at=tx.now))
        for address, permissions, *prefs in contacts:
            tx.session.add(Contact(account_id=acc.id, email=address, name=address.split("@")[0].title(),
                                   permissions=permissions, email_prefs=prefs[0] if prefs else {},
                                   created_at=tx.now))
        return acc.id
    return services.run(op)


def ticket(services: Any, ticket_id: int) -> Ticket:
    with services.db.transaction(readonly=True) as s:
        t = s.get(Ticket, ticket_id)
        _ = [m.attachments for m in t.messages]
        s.expunge_all()
        return t
