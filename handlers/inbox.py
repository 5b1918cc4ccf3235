"""The inbound store: every door (SMTP, LMTP, IMAP, pipe) ends in :func:`store`.

A message is stored raw, once per recipient, before anything tries to understand it. The
unique key (Message-ID, digest, recipient) makes a redelivery (an MTA retry, an IMAP
reconnect, two SMTP processes on PostgreSQL) land on the row that is already there.
"""
from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.models import InboundMail, InboundStatus

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class Stored:
    """What :func:`store` did for one recipient."""

    id: int
    recipient: str
    duplicate: bool
    throttled: bool


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def message_id_of(raw: bytes, raw_digest: str) -> str:
    """The message's Message-ID, or one derived from its content when it has none (or a broken one)."""
    try:
        value = _HEADERS.parsebytes(raw[:65536], headersonly=True).get("Message-ID")
    except Exception:  # a header block the parser cannot read: the content decides
        value = None
    value = " ".join(str(value).split()) if value else ""
    if not value or len(value) > 900:
        return f"<{raw_digest[:40]}@derived.renewdesk.invalid>"
    return value


def is_ours(settings: Any, address: str) -> bool:
    """True for an address at our mail domain or one of its aliases (the server is never a relay)."""
    address = address.strip().strip("<>").lower()
    if address.count("@") != 1:
        return False
    local, domain = address.rsplit("@", 1)
    return bool(local) and domain in settings.mail_domains


def store(tx: Any, raw: bytes, *, door: str, mail_from: str, recipients: Iterable[str], peer: str = "",
          received_at: dt.datetime | None = None) -> list[Stored]:
    """Store ``raw`` once per recipient in ``tx``; returns one :class:`Stored` per recipient."""
    recipients = [r.strip().strip("<>").lower() for r in recipients] or [""]
    if len(raw) == 0:
        raise InvalidInput("an empty message")
    raw_digest = digest(raw)
    mid = message_id_of(raw, raw_digest)
    sender = mail_from.strip().strip("<>").lower()[:320]
    at = received_at or tx.now
    throttled = _over_cap(tx, sender, at)
    results = []
    for rcpt in dict.fromkeys(recipients):  # the same recipient twice in one envelope is one row
        existing = _find(tx, mid, raw_digest, rcpt)
        if existing is not None:
            results.append(Stored(existing.id, rcpt, True, existing.throttled))
            continue
        row = InboundMail(received_at=at, door=door, peer=peer[:100], mail_from=sender, recipient=rcpt[:320],
                          message_id=mid, digest=raw_digest, size=len(raw), raw=raw,
                          status=InboundStatus.new, throttled=throttled)
        try:
            with tx.session.begin_nested():
                tx.session.add(row)
        except IntegrityError:
            # another process stored the same message for the same recipient a moment ago
            existing = _find(tx, mid, raw_digest, rcpt)
            results.append(Stored(existing.id, rcpt, True, existing.throttled))
            continue
        results.append(Stored(row.id, rcpt, False, throttled))
    return results


def _find(tx: Any, mid: str, raw_digest: str, rcpt: str) -> InboundMail | None:
    return tx.session.scalar(select(InboundMail).where(
        InboundMail.message_id == mid, InboundMail.digest == raw_digest, InboundMail.recipient == rcpt))


def _over_cap(tx: Any, sender: str, at: dt.datetime) -> bool:
    """Flood control: past the hourly cap a sender's mail is still stored, but marked throttled."""
    if not sender:
        return False
    since = at - dt.timedelta(hours=1)
    recent = tx.session.scalar(select(func.count(func.distinct(InboundMail.digest))).where(
        InboundMail.mail_from == sender, InboundMail.received_at > since))
    return recent >= tx.settings.sender_hourly_cap


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


def listing(tx: Any, *, quarantined: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first: everything, or only quarantined mail."""
    q = select(InboundMail).order_by(InboundMail.id.desc()).limit(limit)
    if quarantined:
        q = q.where(InboundMail.status == InboundStatus.quarantined)
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


def listing_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no stored mail"
    lines = [f"{'ID':>6}  {'RECEIVED':<19}  {'DOOR':<4}  {'STATUS':<11}  FROM → TO: SUBJECT"]
    for r in rows:
        flag = " [throttled]" if r["throttled"] else ""
        lines.append(f"{r['id']:>6}  {r['received_at'][:19]:<19}  {r['door']:<4}  {r['status']:<11}  "
                     f"{r['from'] or '<>'} → {r['to'] or '-'}: {r['subject']}{flag}")
        if r["reason"] and r["status"] == InboundStatus.quarantined.value:
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
