"""How a ticket is named in mail, so that a client's reply finds its way back.

- the subject tag ``[#T-42]``: what people see and keep when they reply;
- the reply address ``support+t42.<mac>@DOMAIN`` (the Reply-To of everything about a ticket);
- the body marker ``[ref:T-42.<mac>]`` at the foot of every ticket mail, which survives in
  quoted text when a client's mail program drops headers and rewrites the subject.

The address token and the body marker carry an HMAC of the ticket id, so nobody can forge
them for another ticket. The subject tag cannot carry one (people retype subjects); it is
believed only for a sender who is a contact of that ticket's account, like every layer.
"""
from __future__ import annotations

import hmac
import re
from typing import Any

_TAG = re.compile(r"\[#T-0*([1-9]\d{0,11})\]", re.I)
_ADDRESS = re.compile(r"^([a-z0-9._-]+)\+t([1-9]\d{0,11})\.([0-9a-f]{10})@", re.I)
_MARKER = re.compile(r"\[ref:T-([1-9]\d{0,11})\.([0-9a-f]{10})\]", re.I)
# Reply and forward prefixes in the languages our clients write in, as mail programs add them.
_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|wg|sv|vs|antw|doorst|tr|rif|r|res|enc|odp|pd|fw)"
                     r"\s*(?:\[\d+\])?\s*[:：]\s*)+", re.I)
_SPACES = re.compile(r"\s+")
MAC_PURPOSE = "ticket"
MAC_LENGTH = 10


def _mac(tx: Any, ticket_id: int) -> str:
    return tx.services.sign(MAC_PURPOSE, str(ticket_id), MAC_LENGTH)


def _valid(tx: Any, ticket_id: int, mac: str) -> bool:
    return hmac.compare_digest(_mac(tx, ticket_id), mac.lower())


def subject_tag(ticket_id: int) -> str:
    return f"[#T-{ticket_id}]"


def tagged_subject(ticket_id: int, subject: str) -> str:
    """``[#T-42] subject`` (the tag first: short subject lines still show it)."""
    return f"{subject_tag(ticket_id)} {base_subject(subject, lower=False) or '(no subject)'}"


def tag_in(subject: str) -> int | None:
    match = _TAG.search(subject or "")
    return int(match.group(1)) if match else None


def reply_address(tx: Any, ticket_id: int, local: str = "support") -> str:
    return f"{local}+t{ticket_id}.{_mac(tx, ticket_id)}@{tx.settings.mail_domain}"


def ticket_in_address(tx: Any, recipient: str) -> int | None:
    """The ticket a ``support+t42.<mac>@`` address names, when its HMAC is right."""
    match = _ADDRESS.match(recipient or "")
    if match is None:
        return None
    domain = recipient.rsplit("@", 1)[1].lower()
    if domain not in tx.settings.mail_domains:
        return None
    ticket_id = int(match.group(2))
    return ticket_id if _valid(tx, ticket_id, match.group(3)) else None


def body_marker(tx: Any, ticket_id: int) -> str:
    return f"[ref:T-{ticket_id}.{_mac(tx, ticket_id)}]"


def ticket_in_body(tx: Any, text: str) -> int | None:
    """The ticket of the last genuine body marker in ``text`` (quoted replies keep it)."""
    found = None
    for match in _MARKER.finditer(text or ""):
        ticket_id = int(match.group(1))
        if _valid(tx, ticket_id, match.group(2)):
            found = ticket_id
    return found


def base_subject(subject: str, *, lower: bool = True) -> str:
    """The subject without reply/forward prefixes and our tag, for comparing two subjects."""
    text = _TAG.sub(" ", subject or "")
    previous = None
    while previous != text:
        previous, text = text, _PREFIX.sub("", text)
        text = _TAG.sub(" ", text).strip()
    text = _SPACES.sub(" ", text).strip()
    return text.lower() if lower else text
