"""Who did something, in words a person reads: ``Ann Owner <ann@acme.test>``, never ``contact:2``.

Records keep the actor as an id (``contact:2``, ``staff:U123``, ``system:scheduler``); mail and
Slack texts name the person with :func:`actor_name`.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers.models import Contact, StaffMember

FIXED = {"sales_contact": "the account's sales contact", "cli": "our staff (command line)",
         "web": "the client on the renewal page", "unknown": "an unknown sender"}


def _person(name: str, email: str | None) -> str:
    if name and email:
        return f"{name} <{email}>"
    return name or email or ""


def actor_name(tx: Any, actor: str) -> str:
    """``contact:2`` -> ``Ann Owner <ann@acme.test>``; ``staff:U1`` -> the staff member's name; ``system:...`` ->
    ``renewdesk (automatically)``; anything unknown is returned as it is."""
    kind, _, rest = (actor or "").partition(":")
    if kind == "contact" and rest.isdigit():
        contact = tx.session.get(Contact, int(rest))
        return _person(contact.name, contact.email) if contact is not None else "a contact since removed"
    if kind == "staff" and rest:
        member = tx.session.scalar(select(StaffMember).where(StaffMember.slack_user_id == rest))
        return (_person(member.name, member.email) if member is not None else "") or f"our staff (Slack user {rest})"
    if kind == "system":
        return "renewdesk (automatically)"
    if kind == "link":
        return "the client through a renewal link"
    if kind == "code":
        return "the client with an activation code"
    return FIXED.get(actor, actor)
