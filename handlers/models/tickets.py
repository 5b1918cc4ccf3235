"""Tickets on the master account, their messages (client mail, staff replies, internal notes),
attachments and watchers."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from handlers.models.base import Base, StrEnum, enum_column


class TicketStatus(StrEnum):
    open = "open"                      # new, not answered yet
    answered = "answered"              # staff replied; waiting for the client
    customer_reply = "customer_reply"  # the client wrote again after an answer
    on_hold = "on_hold"                # parked (a third party, a transfer); a client reply brings it back
    closed = "closed"


class MessageKind(StrEnum):
    client = "client"      # an email from a contact
    reply = "reply"        # staff answer, emailed to the client
    note = "note"          # internal, never emailed
    auto = "auto"          # an auto-reply stored on the ticket, never answered


class Ticket(Base):
    __tablename__ = "ticket"
    __table_args__ = (Index("ix_ticket_account_status", "account_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    opened_by_contact_id: Mapped[Optional[int]] = mapped_column(ForeignKey("contact.id", ondelete="SET NULL"))
    ref: Mapped[Optional[str]] = mapped_column(String(100), unique=True)  # import ref
    subject: Mapped[str] = mapped_column(String(998))
    status: Mapped[TicketStatus] = enum_column(TicketStatus, default=TicketStatus.open)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)  # shown as "archived"; closed underneath
    assignee: Mapped[Optional[str]] = mapped_column(String(32))  # Slack user id
    previous_ticket_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ticket.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    closed_at: Mapped[Optional[dt.datetime]]
    slack_channel: Mapped[Optional[str]] = mapped_column(String(32))
    slack_ts: Mapped[Optional[str]] = mapped_column(String(32))  # the card: the thread's parent

    messages: Mapped[list["TicketMessage"]] = relationship(
        back_populates="ticket", order_by="TicketMessage.id", cascade="all, delete-orphan")
    watchers: Mapped[list["TicketWatcher"]] = relationship(cascade="all, delete-orphan")


class TicketMessage(Base):
    __tablename__ = "ticket_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"), index=True)
    kind: Mapped[MessageKind] = enum_column(MessageKind)
    author: Mapped[str] = mapped_column(String(320))  # contact email, "staff:U123", "system"
    body: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime]
    inbound_mail_id: Mapped[Optional[int]] = mapped_column(ForeignKey("inbound_mail.id", ondelete="SET NULL"))
    outbound_mail_id: Mapped[Optional[int]] = mapped_column(ForeignKey("outbound_mail.id", ondelete="SET NULL"))
    # the Message-ID this message had or was sent with, for threading the client's replies
    message_id: Mapped[Optional[str]] = mapped_column(String(998), index=True)
    slack_ts: Mapped[Optional[str]] = mapped_column(String(32), unique=True)

    ticket: Mapped[Ticket] = relationship(back_populates="messages")
    attachments: Mapped[list["Attachment"]] = relationship(cascade="all, delete-orphan")


class Attachment(Base):
    __tablename__ = "attachment"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("ticket_message.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[Optional[bytes]] = mapped_column(LargeBinary)  # None when dropped over the limit
    dropped_reason: Mapped[Optional[str]] = mapped_column(String(200))


class TicketWatcher(Base):
    """Who gets copies of replies: the contact who opened it and the master owner (seed 003)."""

    __tablename__ = "ticket_watcher"
    __table_args__ = (UniqueConstraint("ticket_id", "contact_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))


class AutoAnswer(Base):
    """One automatic answer (acknowledgement, unknown-sender or permission answer) to one
    address: counted per ticket and per recipient so a mail loop dies out."""

    __tablename__ = "auto_answer"
    __table_args__ = (Index("ix_auto_answer_recipient_at", "recipient", "at"),
                      Index("ix_auto_answer_ticket_at", "ticket_id", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime]
    recipient: Mapped[str] = mapped_column(String(320))
    ticket_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"))
    intent: Mapped[str] = mapped_column(String(64))
    sent: Mapped[bool] = mapped_column(Boolean, default=True)  # False: the cap held it back
