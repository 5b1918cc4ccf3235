"""The inbound store and the outbox: raw mail in, outgoing mail and Slack posts out."""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from handlers.models.base import Base, StrEnum, enum_column


class InboundStatus(StrEnum):
    new = "new"
    processing = "processing"
    waiting = "waiting"          # stored, waiting for an operation that is not built yet
    done = "done"
    quarantined = "quarantined"


class OutboxStatus(StrEnum):
    queued = "queued"        # waiting for its next attempt
    sending = "sending"      # claimed by a delivery worker
    sent = "sent"
    failed = "failed"        # permanent failure, or out of attempts
    uncertain = "uncertain"  # a worker died after handing the body to the relay: staff decide


class DeliveryState:
    """Where a queued outgoing item stands; the same states for mail and Slack posts."""

    status: Mapped[OutboxStatus] = enum_column(OutboxStatus, default=OutboxStatus.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime]
    next_attempt_at: Mapped[dt.datetime]
    claimed_at: Mapped[Optional[dt.datetime]]
    claimed_by: Mapped[Optional[str]] = mapped_column(String(100))
    # set just before the item leaves us: after this point a crash is ambiguous
    handed_over_at: Mapped[Optional[dt.datetime]]
    sent_at: Mapped[Optional[dt.datetime]]
    last_error: Mapped[Optional[str]] = mapped_column(Text)


class InboundMail(Base):
    """One raw message as it arrived through one door, for one recipient."""

    __tablename__ = "inbound_mail"
    __table_args__ = (
        # a redelivery (MTA retry, IMAP reconnect) is accepted again but stored once
        UniqueConstraint("message_id", "digest", "recipient"),
        Index("ix_inbound_status", "status", "id"),
        # flood control counts a sender's distinct messages in the last hour from the index alone
        Index("ix_inbound_sender_received", "mail_from", "received_at", "digest"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[dt.datetime]
    door: Mapped[str] = mapped_column(String(8))  # smtp | lmtp | imap | pipe
    peer: Mapped[str] = mapped_column(String(100), default="")
    mail_from: Mapped[str] = mapped_column(String(320), default="")
    recipient: Mapped[str] = mapped_column(String(320), default="")
    message_id: Mapped[str] = mapped_column(String(998))
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of the raw bytes
    size: Mapped[int] = mapped_column(Integer)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[InboundStatus] = enum_column(InboundStatus, default=InboundStatus.new)
    classification: Mapped[Optional[str]] = mapped_column(String(40))
    rule: Mapped[Optional[str]] = mapped_column(String(40))
    reason: Mapped[Optional[str]] = mapped_column(Text)
    throttled: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[Optional[dt.datetime]]
    ticket_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ticket.id", ondelete="SET NULL"))
    # the From address as parsed (the sender for every decision; never Reply-To)
    sender: Mapped[Optional[str]] = mapped_column(String(320))
    # the account staff chose for a held message (`inbox attach`)
    account_id: Mapped[Optional[int]] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"))
    # a bounce: the mail of ours it reports on
    outbound_mail_id: Mapped[Optional[int]] = mapped_column(ForeignKey("outbound_mail.id", ondelete="SET NULL"))
    # Authentication-Results from a trusted receiving server: {"dmarc": "pass", "dkim": "pass", ...}
    auth_results: Mapped[Optional[dict[str, Any]]] = mapped_column()


class OutboundMail(DeliveryState, Base):
    """An email waiting to go out, or gone. Written in the same transaction as its cause."""

    __tablename__ = "outbound_mail"
    __table_args__ = (Index("ix_outbound_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # exactly once: what this mail is about ("notice:17:to:ann@acme.test"); NULL for one-offs
    dedupe_key: Mapped[Optional[str]] = mapped_column(String(300), unique=True)
    message_id: Mapped[str] = mapped_column(String(300), unique=True)
    intent: Mapped[str] = mapped_column(String(64))  # the template's name
    account_id: Mapped[Optional[int]] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), index=True)
    ticket_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ticket.id", ondelete="SET NULL"))
    mail_from: Mapped[str] = mapped_column(String(320))   # envelope sender
    recipients: Mapped[list[Any]] = mapped_column()      # envelope recipients
    subject: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)       # the whole RFC 5322 message


class SlackPost(DeliveryState, Base):
    """A Slack message (card, thread reply, digest) waiting to be posted or updated."""

    __tablename__ = "slack_post"
    __table_args__ = (Index("ix_slack_post_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[Optional[str]] = mapped_column(String(300), unique=True)
    method: Mapped[str] = mapped_column(String(40), default="chat.postMessage")
    channel: Mapped[str] = mapped_column(String(32))
    thread_ts: Mapped[Optional[str]] = mapped_column(String(32))
    update_ts: Mapped[Optional[str]] = mapped_column(String(32))  # chat.update of an existing card
    payload: Mapped[dict[str, Any]] = mapped_column()
    ticket_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ticket.id", ondelete="SET NULL"))
    posted_ts: Mapped[Optional[str]] = mapped_column(String(32))
