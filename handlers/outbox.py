"""The outbox: operations queue outgoing email in the same transaction as their state change.

A row is the whole RFC 5322 message, rendered once from templates; the delivery loop
(:mod:`handlers.delivery`) sends it later. A ``dedupe_key`` makes a mail exactly-once: the
second attempt to queue the same key finds the first row instead of adding another.
"""
from __future__ import annotations

import binascii
import contextlib
import datetime as dt
import email.header
import email.utils
import functools
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from sqlalchemy import insert, select

from handlers.db import add_keyed, insert_of, keyed
from handlers.errors import InvalidInput
from handlers.models import AuditEvent, OutboundMail, OutboxStatus
from handlers.render import RenderedEmail, email_renderer

LOOP_HEADER = "X-Renewdesk-Loop"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
NAME_LINE = 900                 # an encoded name stays one word up to this, within a line's 998
ADDRESS_SEPARATOR = ",\r\n "     # each address on its own (folded) line, so long names never make one too long


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str = ""


def header_text(value: str, limit: int = 200) -> str:
    """A value safe for one header line: control characters (CR, LF...) become one space."""
    return _CONTROL.sub(" ", str(value)).strip()[:limit]


_ADDR_SPEC = re.compile(r"[^\s@<>()\[\],;:\\\"]+@[^\s@<>()\[\],;:\\\"]+")
_NEEDS_QUOTES = re.compile(r"[()<>\[\]:;@\\,.\"]")


def _address(r: Recipient | str) -> tuple[str, str]:
    """(display name, addr-spec) of a recipient, or InvalidInput when it is not one address."""
    r = Recipient(r) if isinstance(r, str) else r
    addr = r.email.strip()
    if _CONTROL.search(addr) or addr.count("@") != 1 or _ADDR_SPEC.fullmatch(addr) is None:
        raise InvalidInput(f"not an email address: {addr!r}")
    return header_text(r.name), addr


def _mailbox(name: str, addr: str) -> str:
    """``Name <addr>`` for a header: RFC 2047 for non-ASCII names, quotes for specials."""
    if not name:
        return addr
    if _needs_encoding(name):
        # one encoded word where it fits a line: readers (Python's among them) keep the space
        # between two encoded words of a display name, which RFC 2047 6.2 says to drop
        return f"{_encoded(name, NAME_LINE)} <{addr}>"
    if _NEEDS_QUOTES.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr}>"


def _needs_encoding(value: str) -> bool:
    """Non-ASCII, or text a mail reader would take for an RFC 2047 encoded word and decode: a client's
    name or subject that reads ``=?utf-8?q?...?=`` must arrive as those characters, not as whatever
    they decode to (a different name, a line break)."""
    return not value.isascii() or "=?" in value


def _encoded(value: str, maxlinelen: int = 76) -> str:
    """RFC 2047 encoded words, folded with CRLF (RFC 5322 2.2.3): the stdlib folds with a bare LF."""
    return email.header.Header(value, "utf-8", maxlinelen=maxlinelen).encode(linesep="\r\n")


def _unstructured(value: str) -> str:
    return _encoded(value) if _needs_encoding(value) else value


def _qp(text: str) -> bytes:
    """A body part's content as quoted-printable UTF-8 with CRLF line ends."""
    body = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True)
    return body.replace(b"\n", b"\r\n")


def our_address(settings: Any, local: str = "support") -> str:
    return f"{local}@{settings.mail_domain}"


def new_message_id(settings: Any) -> str:
    """A Message-ID from our domain: replies that quote it thread back to us (and loops are seen)."""
    return f"<rd.{secrets.token_hex(12)}@{settings.mail_domain}>"


@dataclass(frozen=True)
class Built:
    """A message ready for the outbox: its bytes and what the row records about it."""

    raw: bytes
    message_id: str
    recipients: list[str]


def build_message(settings: Any, *, subject: str, text: str, html: str, to: Sequence[Recipient | str],
                  cc: Sequence[Recipient | str] = (), reply_to: str | None = None,
                  from_local: str = "support", message_id: str | None = None, date: dt.datetime,
                  in_reply_to: str | None = None, references: Iterable[str] = (),
                  extra_headers: dict[str, str] | None = None) -> Built:
    """A multipart/alternative message (text, then HTML) with our identity and loop headers.

    Written directly rather than through ``email.message``: every value passes
    :func:`header_text` (no CR/LF can start a header), names with non-ASCII are RFC 2047
    encoded, bodies are quoted-printable UTF-8. The outbox builds one per mail it queues, and
    the stdlib's header objects cost more than the rest of queuing a mail.
    """
    to_pairs, cc_pairs = [_address(r) for r in to], [_address(r) for r in cc]
    message_id = message_id or new_message_id(settings)
    boundary = f"=_rd_{secrets.token_hex(12)}"
    head = [("From", _mailbox(header_text(settings.business_name), our_address(settings, from_local))),
            ("To", ADDRESS_SEPARATOR.join(_mailbox(n, a) for n, a in to_pairs))]
    if cc_pairs:
        head.append(("Cc", ADDRESS_SEPARATOR.join(_mailbox(n, a) for n, a in cc_pairs)))
    if reply_to:
        head.append(("Reply-To", _mailbox(*_address(reply_to))))
    head += [("Subject", _unstructured(header_text(subject, 250))),
             ("Date", email.utils.format_datetime(date)),
             ("Message-ID", header_text(message_id, 998))]
    if in_reply_to:
        head.append(("In-Reply-To", header_text(in_reply_to, 998)))
    refs = " ".join(header_text(r, 998) for r in references if r)
    if refs:
        head.append(("References", refs))
    # RFC 3834: what we send is automatic; auto-responders must not answer it.
    head.append(("Auto-Submitted", "auto-generated"))
    # Asks Exchange and friends not to send out-of-office or delivery receipts back.
    head.append(("X-Auto-Response-Suppress", "All"))
    head.append((LOOP_HEADER, settings.mail_domain))
    for name, value in (extra_headers or {}).items():
        head.append((re.sub(r"[^!-9;-~]", "", name)[:76], _unstructured(header_text(value, 998))))
    head += [("MIME-Version", "1.0"), ("Content-Type", f'multipart/alternative; boundary="{boundary}"')]
    lines = [f"{name}: {value}".encode("ascii", "replace") for name, value in head]
    part = b"Content-Type: text/%s; charset=\"utf-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b = boundary.encode()
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + b"".join((
        b"--" + b + b"\r\n", part % b"plain", _qp(text), b"\r\n",
        b"--" + b + b"\r\n", part % b"html", _qp(html), b"\r\n",
        b"--" + b + b"--\r\n"))
    return Built(raw=raw, message_id=message_id, recipients=[a for _, a in (*to_pairs, *cc_pairs)])


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
    existing = keyed(tx.session, OutboundMail, dedupe_key)
    if existing is not None:
        return existing
    mail = Mail(context, to, cc=cc, dedupe_key=dedupe_key, account_id=account_id, ticket_id=ticket_id,
                reply_to=reply_to, in_reply_to=in_reply_to, references=tuple(references),
                extra_headers=extra_headers, not_before=not_before)
    row = OutboundMail(**_row(tx, intent, mail, from_local, email_renderer(tx.settings, intent)))
    added = add_keyed(tx.session, row)
    if added is not row:  # another process queued the same mail between our look and our insert
        return added
    tx.audit("email.queue", subject=row, account_id=account_id, intent=intent, to=row.recipients)
    tx.after_commit(tx.services.outbox_wakeup.set)
    return row


_GATHERED = "outbox.gathered"  # session.info: the rows queue_soon holds for the end of gathering()


@contextlib.contextmanager
def gathering(tx: Any) -> Iterator[None]:
    """Mail queued with :func:`queue_soon` in this block is written when it ends, set-wise
    (:func:`insert_rows`, as :func:`queue_many` does); nothing is written if the block raises.

    For the billing sweeps, which queue a mail or two per account for a batch of accounts.
    """
    pending: list[dict[str, Any]] = []
    tx.session.info[_GATHERED] = pending
    try:
        yield
    finally:
        del tx.session.info[_GATHERED]
    _write_gathered(tx, pending)


def queue_soon(tx: Any, intent: str, context: dict[str, Any], *, to: Sequence[Recipient | str],
               dedupe_key: str | None = None, account_id: int | None = None, reply_to: str | None = None,
               from_local: str = "support") -> None:
    """:func:`queue_email`, the row written at the end of the open :func:`gathering` (at once without one).

    The mail is rendered and built now, so a broken template fails here as it would there; the
    ``dedupe_key`` still makes it exactly-once (a key already queued is skipped when written).
    """
    pending = tx.session.info.get(_GATHERED)
    if pending is None:
        queue_email(tx, intent, context, to=to, dedupe_key=dedupe_key, account_id=account_id, reply_to=reply_to,
                    from_local=from_local)
        return
    if not to:
        raise InvalidInput("an email needs at least one recipient")
    mail = Mail(context, to, dedupe_key=dedupe_key, account_id=account_id, reply_to=reply_to)
    pending.append(_row(tx, intent, mail, from_local, email_renderer(tx.settings, intent)))


def _write_gathered(tx: Any, rows: list[dict[str, Any]]) -> None:
    keys = [r["dedupe_key"] for r in rows if r["dedupe_key"] is not None]
    known: set[str] = set()
    for i in range(0, len(keys), 500):
        known.update(tx.session.scalars(select(OutboundMail.dedupe_key)
                                        .where(OutboundMail.dedupe_key.in_(keys[i:i + 500]))))
    rows = [r for r in rows if r["dedupe_key"] is None or r["dedupe_key"] not in known]
    made = insert_rows(tx.session.connection(), rows)  # a key queued meanwhile (or twice here): kept once
    written = [r for r in rows if r["message_id"] in made]
    if written:
        tx.session.execute(insert(AuditEvent.__table__), queued_audits(tx, written, made))
        tx.after_commit(tx.services.outbox_wakeup.set)


@dataclass(frozen=True)
class Mail:
    """One mail for :func:`queue_many`: the arguments :func:`queue_email` takes besides the intent."""

    context: dict[str, Any]
    to: Sequence[Recipient | str]
    cc: Sequence[Recipient | str] = ()
    dedupe_key: str | None = None
    account_id: int | None = None
    ticket_id: int | None = None
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    extra_headers: dict[str, str] | None = None
    not_before: dt.datetime | None = None


def _row(tx: Any, intent: str, mail: Mail, from_local: str,
         render: Callable[[dict[str, Any]], RenderedEmail]) -> dict[str, Any]:
    """The outbox row's columns for ``mail``: rendered (by ``render``) and built, not yet written."""
    settings = tx.settings
    rendered = render(mail.context)
    msg = build_message(settings, subject=rendered.subject, text=rendered.text, html=rendered.html, to=mail.to,
                        cc=mail.cc, reply_to=mail.reply_to, from_local=from_local, date=tx.now,
                        in_reply_to=mail.in_reply_to, references=mail.references, extra_headers=mail.extra_headers)
    return {"dedupe_key": mail.dedupe_key, "message_id": msg.message_id, "intent": intent,
            "account_id": mail.account_id, "ticket_id": mail.ticket_id, "mail_from": our_address(settings, "bounces"),
            "recipients": msg.recipients, "subject": rendered.subject, "raw": msg.raw, "created_at": tx.now,
            # due now, even when a sweep runs "as of" a later moment (`sweep --at`): `outbox flush` sends it
            "next_attempt_at": mail.not_before or min(tx.now, tx.services.clock.now()),
            "status": OutboxStatus.queued, "attempts": 0}


def queue_many(tx: Any, intent: str, mails: Sequence[Mail], *, from_local: str = "support") -> list[int | None]:
    """Queue many mails of one intent in ``tx``'s transaction; the same rows :func:`queue_email` writes.

    For a sweep sending thousands: the rows and their audit entries go in with one statement per
    few hundred rows instead of one ORM flush each. A mail whose ``dedupe_key`` is already queued
    (before, or by another process meanwhile) is not rendered or queued again; its place in the
    returned ids (in the order of ``mails``) holds the id of the row found, or None if another
    process's row is not visible yet.
    """
    for mail in mails:
        if not mail.to:
            raise InvalidInput("an email needs at least one recipient")
    keys = [m.dedupe_key for m in mails if m.dedupe_key is not None]
    known: dict[str, int] = {}
    for i in range(0, len(keys), 500):
        chunk = select(OutboundMail.dedupe_key, OutboundMail.id).where(OutboundMail.dedupe_key.in_(keys[i:i + 500]))
        known.update((key, rid) for key, rid in tx.session.execute(chunk))
    render = email_renderer(tx.settings, intent)
    rows = [_row(tx, intent, m, from_local, render) for m in mails if m.dedupe_key is None or m.dedupe_key not in known]
    made = insert_rows(tx.session.connection(), rows)
    written = [r for r in rows if r["message_id"] in made]
    if written:
        tx.session.execute(insert(AuditEvent.__table__), queued_audits(tx, written, made))
        tx.after_commit(tx.services.outbox_wakeup.set)
    by_key = {r["dedupe_key"]: made[r["message_id"]] for r in written if r["dedupe_key"] is not None}
    unkeyed = iter(made.get(r["message_id"]) for r in rows if r["dedupe_key"] is None)
    ids: list[int | None] = []
    for m in mails:
        key = m.dedupe_key
        if key is not None and key not in known and key not in by_key:  # lost a race: the winner's row
            known[key] = tx.session.scalar(select(OutboundMail.id).where(OutboundMail.dedupe_key == key))
        ids.append(next(unkeyed) if key is None else by_key.get(key, known.get(key)))
    return ids


def prepare(tx: Any, intent: str, mail: Mail, *, from_local: str = "support") -> dict[str, Any]:
    """``mail``'s outbox row, rendered and built but not written: for a caller that writes many at
    once with :func:`insert_rows` (and its ``email.queue`` audit events with :func:`queued_audits`)."""
    if not mail.to:
        raise InvalidInput("an email needs at least one recipient")
    return _row(tx, intent, mail, from_local, email_renderer(tx.settings, intent))


def insert_rows(conn: Any, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Write outbox rows in one statement (per few hundred rows); a row whose ``dedupe_key`` is
    already queued is skipped. Returns {Message-ID: id} of the rows written."""
    if not rows:
        return {}
    return dict(conn.execute(_insert_returning(conn.dialect.name), rows).all())


def queued_audits(tx: Any, rows: Iterable[dict[str, Any]], made: dict[str, int]) -> list[dict[str, Any]]:
    """The ``email.queue`` audit rows of outbox rows written by :func:`insert_rows`."""
    return [{"at": tx.now, "actor": tx.actor, "action": "email.queue", "subject_type": _OUT.name,
             "subject_id": str(made[r["message_id"]]), "account_id": r["account_id"],
             "detail": {"intent": r["intent"], "to": r["recipients"]}} for r in rows]


_OUT = OutboundMail.__table__


@functools.lru_cache(maxsize=4)
def _insert_returning(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING message_id, id, built once per database kind."""
    return insert_of(dialect)(_OUT).on_conflict_do_nothing().returning(_OUT.c.message_id, _OUT.c.id)
