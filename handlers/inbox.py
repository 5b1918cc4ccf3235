"""The inbound store: every door (SMTP, LMTP, IMAP, pipe) ends in :func:`insert_many`.

A message is stored raw, once per recipient, before anything tries to understand it. The
unique key (Message-ID, digest, recipient) makes a redelivery (an MTA retry, an IMAP
reconnect, two SMTP processes on PostgreSQL) land on the row that is already there.
"""
from __future__ import annotations

import datetime as dt
import email.parser
import functools
import email.policy
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update

from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.models import Contact, InboundMail, InboundStatus



@dataclass(frozen=True)
class Stored:
    """What storing did for one recipient."""

    id: int
    recipient: str
    duplicate: bool


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


# the first Message-ID field of the header block, with its folded continuation lines (RFC 5322 2.2.3)
_MESSAGE_ID_FIELD = re.compile(rb"message-id[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ufffd]")


def clean_address(address: str) -> str:
    """An envelope address as stored: no brackets, lower-case, no control characters, bounded."""
    return _CONTROL.sub("", address.strip().strip("<>").lower())[:320]


def message_id_of(raw: bytes, raw_digest: str) -> str:
    """The message's Message-ID, or one derived from its content when it has none (or a broken one).

    A scan of the header block rather than a full parse: every door calls this for every message.
    """
    limit = _header_end(raw)
    head, match, at = raw[:limit].lower(), None, -1
    # a plain search for the field's name finds where the (slower) pattern can match
    while match is None and (at := head.find(b"message-id", at + 1)) != -1:
        if at == 0 or head[at - 1] == 10:  # the field starts a line
            match = _MESSAGE_ID_FIELD.match(raw, at, limit)
    value = " ".join(match.group(1).decode("utf-8", "replace").split()) if match else ""
    # the key's index has a size limit (bytes, not characters); control characters are refused by
    # PostgreSQL: either would make the message unstorable, so the content names it instead
    if not value or len(value.encode()) > 500 or _CONTROL.search(value):
        return f"<{raw_digest[:40]}@derived.renewdesk.invalid>"
    return value


def _header_end(raw: bytes, window: int = 65536) -> int:
    """Where the header block ends: the blank line (LF or CRLF) within ``window`` bytes, else the window."""
    ends = [at for at in (raw.find(b"\n\n", 0, window), raw.find(b"\n\r\n", 0, window)) if at != -1]
    if not ends:
        return min(len(raw), window)
    at = min(ends)
    return at - 1 if at and raw[at - 1] == 13 else at  # a CR before the first LF belongs to the blank line


def is_ours(settings: Any, address: str) -> bool:
    """True for an address at our mail domain or one of its aliases (the server is never a relay)."""
    address = address.strip().strip("<>").lower()
    if address.count("@") != 1:
        return False
    local, domain = address.rsplit("@", 1)
    return bool(local) and domain in settings.mail_domains


@dataclass(frozen=True)
class Incoming:
    """One message as a door received it."""

    raw: bytes
    door: str
    mail_from: str
    recipients: tuple[str, ...]
    peer: str = ""


def require_content(raw: bytes) -> None:
    """An empty message is the one thing a door refuses outright: there is nothing to keep."""
    if not raw:
        raise InvalidInput("an empty message")


def store_many(tx: Any, messages: list[Incoming], *, received_at: dt.datetime | None = None) -> list[list[Stored]]:
    """Store several messages in ``tx``; one list of :class:`Stored` per message."""
    for m in messages:
        require_content(m.raw)
    return insert_many(tx.session.connection(), messages, received_at or tx.now)


def insert_many(conn: Any, messages: list[Incoming], at: dt.datetime) -> list[list[Stored]]:
    """Store several messages on a Core connection (the SMTP door's group commit runs this directly).

    One insert that skips what is already there (the unique key decides, even against another
    process) and returns the new rows' ids; a lookup only for the duplicates. Flood control is
    not done here but by the processor (``mail_ingest.process``): accepting mail stays cheap.
    """
    per_message: list[list[dict[str, Any]]] = []
    for m in messages:
        raw_digest = digest(m.raw)
        mid = message_id_of(m.raw, raw_digest)
        sender = clean_address(m.mail_from)
        recipients = dict.fromkeys(clean_address(r) for r in m.recipients) or {"": None}
        per_message.append([{"received_at": at, "door": m.door, "peer": _CONTROL.sub("", m.peer)[:100],
                             "mail_from": sender, "recipient": rcpt, "message_id": mid, "digest": raw_digest,
                             "size": len(m.raw), "raw": m.raw, "status": InboundStatus.new, "throttled": False,
                             "attempts": 0}
                            for rcpt in recipients])  # the same recipient twice in one envelope is one row
    key = lambda r: (r["message_id"], r["digest"], r["recipient"])  # noqa: E731
    unique = {key(r): r for rows in per_message for r in rows}
    if conn.dialect.name == "sqlite":
        new_rows = _insert_sqlite(conn, list(unique.values()))
    else:
        new_rows = conn.execute(_insert_skipping_duplicates(), list(unique.values()))
    inserted = {(mid, dg, rc): i for mid, dg, rc, i in new_rows}
    missing = [r for k, r in unique.items() if k not in inserted]
    already = _existing(conn, missing) if missing else {}
    return [[Stored(inserted.get(key(r)) or already[key(r)], r["recipient"], key(r) not in inserted) for r in rows]
            for rows in per_message]


@functools.lru_cache(maxsize=1)
def _insert_skipping_duplicates() -> Any:
    """PostgreSQL: INSERT ... ON CONFLICT DO NOTHING RETURNING the keys (SQLite: :func:`_insert_sqlite`)."""
    from sqlalchemy.dialects.postgresql import insert
    t = InboundMail.__table__
    return insert(t).on_conflict_do_nothing(index_elements=["message_id", "digest", "recipient"]).returning(
        t.c.message_id, t.c.digest, t.c.recipient, t.c.id)


_T = InboundMail.__table__
_ROWS_PER_INSERT = 500
_COLUMNS = ("received_at", "door", "peer", "mail_from", "recipient", "message_id", "digest", "size", "raw",
            "status", "throttled", "attempts")


@functools.lru_cache(maxsize=2)
def _sqlite_binds(dialect: Any) -> tuple[Any, ...]:
    """Each column's conversion to what SQLite stores (times as text, the status by name), as
    SQLAlchemy itself would convert it."""
    return tuple(_T.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in _COLUMNS)


def _insert_sqlite(conn: Any, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The batch's rows as one multi-row INSERT on the driver's cursor, in ``conn``'s transaction.

    The statement SQLAlchemy's own insert would send, without its compiler and per-row
    machinery for each batch: on the door's hot path that was about a quarter of the writer's
    time per message.
    """
    binds = _sqlite_binds(conn.dialect)
    driver = conn.connection.driver_connection
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), _ROWS_PER_INSERT):  # SQLite caps the parameters of one statement
        chunk = rows[start:start + _ROWS_PER_INSERT]
        params = [bind(row[name]) if bind else row[name] for row in chunk for name, bind in zip(_COLUMNS, binds)]
        out += driver.execute(_sqlite_insert(len(chunk)), params).fetchall()
    return out


@functools.lru_cache(maxsize=64)
def _sqlite_insert(rows: int) -> str:
    """The INSERT for ``rows`` rows (the door's batches come in a few sizes: each is written once)."""
    values = ", ".join(["(" + ", ".join("?" * len(_COLUMNS)) + ")"] * rows)
    return (f"INSERT INTO {_T.name} ({', '.join(_COLUMNS)}) VALUES {values} "
            "ON CONFLICT (message_id, digest, recipient) DO NOTHING RETURNING message_id, digest, recipient, id")
# built once: the doors run it for every batch with duplicates
_EXISTING = select(_T.c.message_id, _T.c.digest, _T.c.recipient, _T.c.id).where(
    _T.c.message_id.in_(bindparam("mids", expanding=True)), _T.c.digest.in_(bindparam("digests", expanding=True)))


def _existing(conn: Any, rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """(message_id, digest, recipient) -> id for the rows already stored."""
    # message_id leads the unique index: this is an index lookup, not a scan
    found = conn.execute(_EXISTING, {"mids": list({r["message_id"] for r in rows}),
                                     "digests": list({r["digest"] for r in rows})})
    return {(mid, dg, rc): i for mid, dg, rc, i in found}


# -- operators' views -------------------------------------------------------------------------

def summary(row: InboundMail) -> dict[str, Any]:
    return {"id": row.id, "received_at": row.received_at.isoformat(timespec="seconds"), "door": row.door,
            "from": row.mail_from, "to": row.recipient, "size": row.size, "status": row.status.value,
            "classification": row.classification, "rule": row.rule, "reason": row.reason,
            "throttled": row.throttled, "subject": _subject(row.raw)}


def _subject(raw: bytes) -> str:
    try:
        value = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
            raw[:65536], headersonly=True).get("Subject", "")
        return " ".join(str(value).split())[:200]
    except Exception:
        return "(unreadable subject)"


def listing(tx: Any, *, quarantined: bool = False, held: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first: everything, only quarantined mail, or (``held``) what waits for staff:
    held and quarantined mail."""
    q = select(InboundMail).order_by(InboundMail.id.desc()).limit(limit)
    if quarantined:
        q = q.where(InboundMail.status == InboundStatus.quarantined)
    elif held:
        q = q.where(InboundMail.status.in_((InboundStatus.waiting, InboundStatus.quarantined)))
    return [summary(r) for r in tx.session.scalars(q)]


def show(tx: Any, mail_id: int) -> dict[str, Any]:
    """One stored message: its summary, envelope and header block."""
    row = tx.session.get(InboundMail, mail_id)
    if row is None:
        raise NotFound(f"no stored message {mail_id}")
    head = row.raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return {**summary(row), "message_id": row.message_id, "digest": row.digest, "peer": row.peer,
            "attempts": row.attempts, "processed_at": row.processed_at and row.processed_at.isoformat(),
            "headers": head.decode("utf-8", "replace")}


def retry(tx: Any, mail_id: int | None = None) -> list[int]:
    """Put one message (any state but ``new``), or every quarantined one, back for processing."""
    if mail_id is not None:
        row = tx.session.get(InboundMail, mail_id)
        if row is None:
            raise NotFound(f"no stored message {mail_id}")
        if row.status == InboundStatus.new:
            raise Conflict(f"message {mail_id} is already waiting to be processed")
        ids = [mail_id]
    else:
        ids = list(tx.session.scalars(select(InboundMail.id).where(
            InboundMail.status == InboundStatus.quarantined).order_by(InboundMail.id)))
    if ids:
        tx.session.execute(update(InboundMail).where(InboundMail.id.in_(ids)).values(
            status=InboundStatus.new, reason=None))
        tx.audit("inbox.retry", subject=("inbound_mail", ids[0] if len(ids) == 1 else "many"), ids=ids)
    return ids


def attach(tx: Any, mail_id: int, account_id: int) -> dict[str, Any]:
    """A held message's sender becomes a contact of the account (with the tickets permission),
    and the message is processed again, now as theirs."""
    row = tx.session.get(InboundMail, mail_id)
    if row is None:
        raise NotFound(f"no stored message {mail_id}")
    if row.status != InboundStatus.waiting:
        raise Conflict(f"message {mail_id} is {row.status.value}, not held for staff")
    if not row.sender:
        raise Conflict(f"message {mail_id} has no From address to attach")
    contact = tx.session.scalar(select(Contact).where(Contact.account_id == account_id, Contact.email == row.sender))
    created = contact is None
    if created:
        contact = Contact(account_id=account_id, email=row.sender, name="", permissions=["tickets"],
                          email_prefs={}, subscriptions=[], created_at=tx.now)
        tx.session.add(contact)
        tx.session.flush()
        tx.audit("contact.add", subject=contact, account_id=account_id, email=row.sender, via=f"inbox attach {mail_id}")
    row.account_id, row.status, row.reason = account_id, InboundStatus.new, None
    tx.audit("inbox.attach", subject=row, account_id=account_id, contact=contact.id)
    tx.after_commit(tx.services.inbox_wakeup.set)
    return {"id": mail_id, "account_id": account_id, "contact": contact.email, "contact_created": created}


def listing_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no stored mail"
    lines = [f"{'ID':>6}  {'RECEIVED':<19}  {'DOOR':<4}  {'STATUS':<11}  FROM → TO: SUBJECT"]
    for r in rows:
        flag = " [throttled]" if r["throttled"] else ""
        lines.append(f"{r['id']:>6}  {r['received_at'][:19]:<19}  {r['door']:<4}  {r['status']:<11}  "
                     f"{r['from'] or '<>'} → {r['to'] or '-'}: {r['subject']}{flag}")
        if r["reason"] and r["status"] in (InboundStatus.quarantined.value, InboundStatus.waiting.value):
            lines.append(f"{'':>8}why: {r['reason']}")
    return "\n".join(lines)


def show_text(d: dict[str, Any]) -> str:
    lines = [f"message {d['id']}: {d['status']}" + (f" ({d['rule']})" if d["rule"] else ""),
             f"received   {d['received_at']} via {d['door']} from {d['peer'] or '-'}",
             f"envelope   {d['from'] or '<>'} → {d['to'] or '-'}",
             f"size       {d['size']} bytes, digest {d['digest'][:16]}…",
             f"message-id {d['message_id']}"]
    if d["reason"]:
        lines.append(f"reason     {d['reason']}")
    if d["throttled"]:
        lines.append("throttled  yes: this sender passed the hourly cap; no automatic reply will be sent")
    return "\n".join(lines) + "\n\n" + d["headers"]
