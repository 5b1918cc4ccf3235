"""Answers to mail that cannot become a ticket: from an unknown address, or from a contact
who may not open tickets. Never a bare refusal: the contact learns what they may do and whom
to ask. Both answers are automatic: at most one per address a day, and capped like any other.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers.mail_facts import MailFacts
from handlers.models import Account, Contact, OutboundMail
from handlers.models.accounts import PERMISSIONS
from handlers.outbox import Recipient, queue_email
from handlers.tickets import auto
from handlers.tickets.outcome import Outcome

WHAT_EACH_ALLOWS = {
    "billing": "see and pay invoices",
    "tickets": "open and answer support tickets",
    "services": "see services and their status",
    "renewals": "renew or decline domains and services",
    "contacts": "manage the account's contacts",
}


def _day_key(tx: Any, intent: str, address: str) -> str:
    return f"{intent}:{address}:{tx.now.astimezone(tx.settings.tz).date().isoformat()}"


def answer_unknown_sender(tx: Any, facts: MailFacts, *, quiet: bool) -> Outcome:
    """Rule 7: hold for staff, or a polite note on how to reach us (``RENEWDESK_UNKNOWN_SENDERS``)."""
    sender = facts.sender
    if not sender:
        return Outcome("waiting", "unknown_sender", "held for staff: the message has no From address")
    if tx.settings.unknown_senders == "hold":
        return Outcome("waiting", "unknown_sender",
                        f"held for staff: {sender} is not a contact of any account; "
                        f"`inbox attach {facts.inbound_id} ACCOUNT` makes them one and opens the ticket")
    if quiet:
        return Outcome("done", "unknown_sender", f"unknown sender {sender} over the hourly cap: not answered")
    key = _day_key(tx, "unknown_sender", sender)
    if _already(tx, key) or not auto.allow(tx, sender, "unknown_sender"):
        return Outcome("done", "unknown_sender", f"unknown sender {sender}: already answered recently")
    queue_email(tx, "unknown_sender", {"recipient_name": facts.sender_name, "subject": facts.subject,
                                       "business_name": tx.settings.business_name},
                to=[Recipient(sender, facts.sender_name)], dedupe_key=key, in_reply_to=facts.message_id)
    return Outcome("done", "unknown_sender", f"unknown sender {sender}: answered with how to reach us")


def answer_without_permission(tx: Any, contact: Contact, account: Account, facts: MailFacts, *,
                              quiet: bool) -> Outcome:
    """A contact without the tickets permission: what they may do, and who can change it."""
    reason = f"{contact.email} may not open tickets for {account.ref}"
    if quiet:
        return Outcome("done", "no_permission", f"{reason}; over the hourly cap: not answered")
    key = _day_key(tx, "ticket_permission", contact.email)
    if _already(tx, key) or not auto.allow(tx, contact.email, "ticket_permission"):
        return Outcome("done", "no_permission", f"{reason}; already answered recently")
    owner = account.owner
    allowed = [WHAT_EACH_ALLOWS[p] for p in PERMISSIONS if contact.may(p)]
    queue_email(tx, "ticket_permission", {
        "recipient_name": contact.name, "subject": facts.subject, "account_name": account.name,
        "allowed": allowed, "owner_name": owner.name if owner else "", "owner_email": owner.email if owner else "",
    }, to=[Recipient(contact.email, contact.name)], dedupe_key=key, account_id=account.id,
        in_reply_to=facts.message_id)
    tx.audit("ticket.refused_permission", subject=contact, account_id=account.id)
    return Outcome("done", "no_permission", f"{reason}; answered with what they may do and whom to ask")


def _already(tx: Any, key: str) -> bool:
    return tx.session.scalar(select(OutboundMail.id).where(OutboundMail.dedupe_key == key)) is not None
