"""Bounces: the failed recipient's contact is marked bouncing and the bounce is linked to the
mail of ours it reports on (and through it to the ticket, where staff see a note).

A delayed-delivery notice (action ``delayed``, a 4.x.x status) is linked and recorded but marks
nobody: the mail may still arrive. A bounce is never answered.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers.models import Contact, InboundMail, MessageKind, OutboundMail, TicketMessage

MAX_MARKED = 20


def is_permanent(detail: dict[str, Any]) -> bool:
    action = str(detail.get("action", "")).lower()
    status = str(detail.get("status", ""))
    if action in ("delayed", "relayed", "delivered", "expanded"):
        return False
    return not status.startswith("4")


def record_bounce(tx: Any, row: InboundMail, detail: dict[str, Any]) -> str:
    """Act on a classified bounce; returns the line stored as the inbox row's reason."""
    ours = None
    original = detail.get("original_message_id")
    if original:
        ours = tx.session.scalar(select(OutboundMail).where(OutboundMail.message_id == original))
    recipients = [r.lower() for r in detail.get("recipients") or []]
    if not recipients and ours is not None and len(ours.recipients or []) == 1:
        recipients = [str(ours.recipients[0]).lower()]   # the notice did not say; our mail had one address
    permanent = is_permanent(detail)
    status = detail.get("status") or "no status"
    if ours is not None:
        row.outbound_mail_id, row.ticket_id = ours.id, ours.ticket_id
        ours.last_error = (f"{'bounced' if permanent else 'delayed'} ({status}) for "
                           f"{', '.join(recipients) or 'an unnamed recipient'}: "
                           f"{detail.get('diagnostic', '')}")[:2000].rstrip(": ")
        if ours.ticket_id is not None:
            tx.session.add(TicketMessage(
                ticket_id=ours.ticket_id, kind=MessageKind.note, author="system", at=tx.now,
                inbound_mail_id=row.id, body=f"Our mail \"{ours.subject}\" {ours.last_error}"))
    marked = []
    if permanent:
        for address in recipients[:MAX_MARKED]:
            for contact in tx.session.scalars(select(Contact).where(Contact.email == address)):
                contact.bouncing_since = contact.bouncing_since or tx.now
                contact.bounce_count = (contact.bounce_count or 0) + 1
                marked.append(address)
                tx.audit("contact.bouncing", subject=contact, account_id=contact.account_id, status=status,
                         inbound_mail_id=row.id)
    link = f"; reports on outbound mail {ours.id}" if ours is not None else "; matches no mail of ours"
    kind = "bounce" if permanent else "delay notice"
    who = f"; contact marked bouncing: {', '.join(sorted(set(marked)))}" if marked else ""
    return f"{kind} ({status}) for {', '.join(recipients) or 'no readable recipient'}{link}{who}"
