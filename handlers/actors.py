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


AUTH_METHODS = {"reply_token": "the signed link or address of our email", "page_link": "a renewal page link",
                "activation_code": "an activation code", "staff": "staff's own login"}


def auth_words(method: str) -> str:
    """How a decider was recognised, in words (``reply_token`` -> "the signed link or address of our email")."""
    return AUTH_METHODS.get(method, method.replace("_", " "))


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
    if kind == "account" and rest.isdigit():
        from handlers.models import Account
        account = tx.session.get(Account, int(rest))
        return f"the client ({account.name})" if account is not None else "the client"
    if kind == "code":
        return "the client with an activation code"
    return FIXED.get(actor, actor)
