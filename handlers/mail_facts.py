"""What the inbox processor learned about one message, handed to the operations that act on it.

``mail_ingest`` parses and classifies; ``handlers`` must not import it, so the processor copies
what operations need into a :class:`MailFacts`: plain values, no parser objects.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FactAttachment:
    filename: str
    content_type: str
    size: int
    content: bytes | None          # None when it was over the size limit
    dropped_reason: str | None = None


@dataclass(frozen=True)
class MailFacts:
    """One inbound message, understood.

    ``sender`` is the From address (lower-case), never Reply-To. ``reply_text`` is the new text
    with quotes and signature cut conservatively; ``text`` the whole readable body.
    ``automatic`` is True for auto-replies and bulk mail: such a message is never answered,
    never reopens a ticket and never counts as a decision.
    """

    inbound_id: int
    recipient: str                  # the envelope recipient it arrived for (lower-case)
    sender: str                     # From: address, lower-case ("" when there is none)
    sender_name: str
    subject: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    reply_text: str
    received_at: dt.datetime
    automatic: bool = False
    auth: dict[str, str] = field(default_factory=dict)   # e.g. {"dmarc": "pass", "dkim": "pass", "spf": "pass"}
    attachments: tuple[FactAttachment, ...] = ()
