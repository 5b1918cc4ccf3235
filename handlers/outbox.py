"""The outbox: operations queue outgoing email in the same transaction as their state change.

A row is the whole RFC 5322 message, rendered once from templates; the delivery loop
(:mod:`handlers.delivery`) sends it later. A ``dedupe_key`` makes a mail exactly-once: the
second attempt to queue the same key finds the first row instead of adding another.
"""
from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any, Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from handlers.errors import InvalidInput
from handlers.models import OutboundMail
from handlers.render import render_email

LOOP_HEADER = "X-Renewdesk-Loop"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str = ""


def header_text(value: str, limit: int = 200) -> str:
    """A value safe for one header line: control characters (CR, LF...) become one space."""
    return _CONTROL.sub(" ", str(value)).strip()[:limit]


def _address(r: Recipient | str) -> Address:
    r = Recipient(r) if isinstance(r, str) else r
    addr = r.email.strip()
    if _CONTROL.search(addr) or addr.count("@") != 1:
        raise InvalidInput(f"not an email address: {addr!r}")
    local, domain = addr.rsplit("@", 1)
    return Address(display_name=header_text(r.name), username=local, domain=domain)


def our_address(settings: Any, local: str = "support") -> str:
    return f"{local}@{settings.mail_domain}"


def new_message_id(settings: Any) -> str:
    """A Message-ID from our domain: replies that quote it thread back to us (and loops are seen)."""
    return email.utils.make_msgid(idstring="rd", domain=settings.mail_domain)


def build_message(settings: Any, *, subject: str, text: str, html: str, to: Sequence[Recipient | str],
                  cc: Sequence[Recipient | str] = (), reply_to: str | None = None,
                  from_local: str = "support", message_id: str | None = None, date: dt.datetime,
                  in_reply_to: str | None = None, references: Iterable[str] = (),
                  extra_headers: dict[str, str] | None = None) -> EmailMessage:
    """A multipart/alternative message (text, then HTML) with our identity and loop headers."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = Address(display_name=header_text(settings.business_name), addr_spec=our_address(settings, from_local))
    msg["To"] = [_address(r) for r in to]
    if cc:
        msg["Cc"] = [_address(r) for r in cc]
    if reply_to:
        msg["Reply-To"] = _address(reply_to)
    msg["Subject"] = header_text(subject, 250)
    msg["Date"] = email.utils.format_datetime(date)
    msg["Message-ID"] = message_id or new_message_id(settings)
    if in_reply_to:
        msg["In-Reply-To"] = header_text(in_reply_to, 998)
    refs = " ".join(header_text(r, 998) for r in references if r)
    if refs:
        msg["References"] = refs
    # RFC 3834: what we send is automatic; auto-responders must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    # Asks Exchange and friends not to send out-of-office or delivery receipts back.
    msg["X-Auto-Response-Suppress"] = "All"
    msg[LOOP_HEADER] = settings.mail_domain
    for name, value in (extra_headers or {}).items():
        msg[header_text(name, 76)] = header_text(value, 998)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def queue_email(tx: Any, intent: str, context: dict[str, Any], *, to: Sequence[Recipient | str],
                cc: Sequence[Recipient | str] = (), dedupe_key: str | None = None,
                account_id: int | None = None, ticket_id: int | None = None, reply_to: str | None = None,
                from_local: str = "support", in_reply_to: str | None = None,
                references: Iterable[str] = (), extra_headers: dict[str, str] | None = None,
                not_before: dt.datetime | None = None) -> OutboundMail:
    """Render ``intent`` and add it to the outbox in ``tx``'s transaction; returns the row.

    With ``dedupe_key``, a mail already queued under that key is returned instead of a
    second one (the unique key settles a race between two processes).
    """
    if not to:
        raise InvalidInput("an email needs at least one recipient")
    if dedupe_key is not None:
        existing = tx.session.scalar(select(OutboundMail).where(OutboundMail.dedupe_key == dedupe_key))
        if existing is not None:
            return existing
    settings = tx.settings
    rendered = render_email(settings, intent, context)
    msg = build_message(settings, subject=rendered.subject, text=rendered.text, html=rendered.html, to=to, cc=cc,
                        reply_to=reply_to, from_local=from_local, date=tx.now, in_reply_to=in_reply_to,
                        references=references, extra_headers=extra_headers)
    recipients = [a.addr_spec for a in (*msg["To"].addresses, *(msg["Cc"].addresses if cc else ()))]
    row = OutboundMail(
        dedupe_key=dedupe_key, message_id=msg["Message-ID"], intent=intent, account_id=account_id,
        ticket_id=ticket_id, mail_from=our_address(settings, "bounces"), recipients=recipients,
        subject=rendered.subject, raw=msg.as_bytes(), created_at=tx.now,
        next_attempt_at=not_before or tx.now)
    if dedupe_key is None:
        tx.session.add(row)
        tx.session.flush()
    else:
        try:
            with tx.session.begin_nested():
                tx.session.add(row)
        except IntegrityError:
            # another process queued the same mail between our look and our insert
            return tx.session.scalar(select(OutboundMail).where(OutboundMail.dedupe_key == dedupe_key))
    tx.audit("email.queue", subject=row, account_id=account_id, intent=intent, to=recipients)
    tx.after_commit(tx.services.outbox_wakeup.set)
    return row
