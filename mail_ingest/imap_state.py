"""The IMAP door's state: its URL, the envelope a message implies, and the folder cursor.

The cursor (mailbox, UIDVALIDITY, last UID) moves in the same transaction that stores the
messages below it, so it never passes a message the inbox does not hold.
"""
from __future__ import annotations

import email.parser
import email.policy
import email.utils
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import select as query
from sqlalchemy import tuple_
from sqlalchemy.exc import IntegrityError

from handlers import inbox
from handlers.errors import SettingsError
from handlers.models import ImapCursor, InboundMail

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class ImapUrl:
    """Where to poll, from ``imap[s]://user:pass@host[:port]/FOLDER[?cafile=PATH]``."""

    tls: bool  # implicit TLS (imaps); imap:// upgrades with STARTTLS when offered
    host: str
    port: int
    user: str
    password: str
    folder: str
    cafile: str | None

    @property
    def mailbox(self) -> str:
        """The cursor's key: one per account and folder."""
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"


def parse_url(url: str) -> ImapUrl:
    """Parse an IMAP URL; user and password are percent-decoded, the folder defaults to INBOX."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username or port == -1:
        shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"  # never echo the password
        raise SettingsError(f"RENEWDESK_IMAP_URL: expected imaps://user:pass@host/FOLDER or imap://..., not {shown!r}")
    tls = parts.scheme == "imaps"
    cafile = parse_qs(parts.query).get("cafile", [None])[-1]
    return ImapUrl(tls=tls, host=parts.hostname, port=port or (993 if tls else 143),
                   user=unquote(parts.username), password=unquote(parts.password or ""),
                   folder=unquote(parts.path.lstrip("/")) or "INBOX", cafile=cafile)


def envelope_of(raw: bytes, login: str) -> tuple[str, str]:
    """(sender, recipient) from Return-Path and Delivered-To, which the delivering MTA wrote."""
    try:
        headers = _HEADERS.parsebytes(raw[:65536], headersonly=True)
    except Exception:  # an unreadable header block: the inbox still keeps the message
        headers = None

    def address(name: str) -> str:
        value = headers.get(name) if headers is not None else None
        return email.utils.parseaddr(str(value))[1] if value else ""

    return address("Return-Path"), address("Delivered-To") or (login if "@" in login else "")


# -- operations on the cursor (each runs inside services.run) -----------------------------------

def _cursor(tx: Any, mailbox: str) -> tuple[int, int] | None:
    row = tx.session.get(ImapCursor, mailbox)
    return None if row is None else (row.uidvalidity, row.last_uid)


def _set_cursor(tx: Any, mailbox: str, uidvalidity: int, last_uid: int) -> None:
    """Move the cursor forward; a different UIDVALIDITY replaces it (the UIDs name other messages now)."""
    row = tx.session.get(ImapCursor, mailbox, with_for_update=True)
    if row is None:
        try:
            with tx.session.begin_nested():
                tx.session.add(ImapCursor(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=last_uid,
                                          updated_at=tx.now))
            return
        except IntegrityError:  # a second door on the same mailbox created it a moment ago
            row = tx.session.get(ImapCursor, mailbox, with_for_update=True, populate_existing=True)
    if row.uidvalidity != uidvalidity:
        row.uidvalidity, row.last_uid = uidvalidity, last_uid
    else:
        row.last_uid = max(row.last_uid, last_uid)
    row.updated_at = tx.now


def _store_batch(tx: Any, mailbox: str, uidvalidity: int, upto: int, messages: list[tuple], peer: str) -> list:
    """Store the messages and move the cursor to ``upto``, all in this one transaction."""
    incoming = [inbox.Incoming(raw, "imap", sender, (rcpt,), peer) for _, raw, sender, rcpt in messages]
    results = inbox.store_many(tx, incoming) if incoming else []
    _set_cursor(tx, mailbox, uidvalidity, upto)
    tx.after_commit(tx.services.inbox_wakeup.set)
    return [(uid, sender, stored) for (uid, _, sender, _), stored in zip(messages, results)]


def _known(tx: Any, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (Message-ID, digest) pairs the inbox already holds."""
    rows = tx.session.execute(query(InboundMail.message_id, InboundMail.digest).where(
        tuple_(InboundMail.message_id, InboundMail.digest).in_(keys)))
    return {(r[0], r[1]) for r in rows}
