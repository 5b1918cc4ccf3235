"""Renewal requests (reply tokens and activation codes, stored hashed), the decisions clients
make, and the notices that make every reminder exactly-once."""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from handlers.models.base import Base, StrEnum, enum_column


class DecisionAction(StrEnum):
    renew = "renew"
    decline = "decline"


class RenewalRequest(Base):
    """A reply token (``renew+<token>@``), page link or activation code: scope, expiry, uses."""

    __tablename__ = "renewal_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # reply_token | page_link | activation_code
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256, never the secret
    service_ids: Mapped[list[Any]] = mapped_column()  # the scope
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    uses: Mapped[int] = mapped_column(Integer, default=0)
    max_uses: Mapped[Optional[int]] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(100))  # system:scheduler, staff:U123 (acting for the client)
    notice_id: Mapped[Optional[int]] = mapped_column(ForeignKey("notice.id", ondelete="SET NULL"))


class RenewalDecision(Base):
    """What a client decided for one service, and how they were authenticated."""

    __tablename__ = "renewal_decision"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), index=True)
    request_id: Mapped[Optional[int]] = mapped_column(ForeignKey("renewal_request.id", ondelete="SET NULL"))
    action: Mapped[DecisionAction] = enum_column(DecisionAction)
    period_years: Mapped[Optional[int]] = mapped_column(Integer)
    decided_at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(100))          # contact:42, staff:U123
    auth_method: Mapped[str] = mapped_column(String(40))     # reply_token | page_link | activation_code | staff
    channel: Mapped[str] = mapped_column(String(16))         # email | page | slack | cli
    inbound_mail_id: Mapped[Optional[int]] = mapped_column(ForeignKey("inbound_mail.id", ondelete="SET NULL"))
    completed_at: Mapped[Optional[dt.datetime]]              # the renewal was completed (paid, or staff)
    note: Mapped[str] = mapped_column(Text, default="")
    for_expiry: Mapped[Optional[dt.date]] = mapped_column(Date)  # the expiry it decides about


class RenewalTerm(Base):
    """One renewal term: a service's expiry being renewed, the decision that stands for it, and its invoice.

    Unique on (service, expiry): every decision for the same expiry updates this one row, so the
    term has at most one open renewal invoice however often, or however concurrently, it is
    decided. When the renewal completes (its invoice paid, or staff say it is done), the service
    gets its new expiry and a new term starts with the next decision.
    """

    __tablename__ = "renewal_term"
    __table_args__ = (UniqueConstraint("service_id", "expires_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    expires_on: Mapped[dt.date] = mapped_column(Date)             # the expiry being renewed
    decision_id: Mapped[Optional[int]] = mapped_column(ForeignKey("renewal_decision.id", ondelete="SET NULL"))
    years: Mapped[Optional[int]] = mapped_column(Integer)         # None: declined
    invoice_id: Mapped[Optional[int]] = mapped_column(ForeignKey("invoice.id", ondelete="SET NULL"), index=True)
    sales_told_at: Mapped[Optional[dt.datetime]]                  # the sales contact was asked to renew
    completed_at: Mapped[Optional[dt.datetime]]
    completed_by: Mapped[Optional[str]] = mapped_column(String(100))
    new_expires_on: Mapped[Optional[dt.date]] = mapped_column(Date)


class Notice(Base):
    """One row per reminder or notice ever sent, unique on what it is about and which occasion.

    Inserting the row is the claim: a re-run, a crash or a second scheduler meets the unique
    key and sends nothing twice.
    """

    __tablename__ = "notice"
    __table_args__ = (
        UniqueConstraint("kind", "subject_type", "subject_id", "occasion", "occasion_date"),
        Index("ix_notice_account_sent", "account_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))          # renewal_reminder, invoice_overdue, credit_warning...
    subject_type: Mapped[str] = mapped_column(String(16))  # service | invoice | account
    subject_id: Mapped[int] = mapped_column(Integer)
    occasion: Mapped[str] = mapped_column(String(24))      # "-30d", "-5d", "0d", "+1d"...
    occasion_date: Mapped[dt.date] = mapped_column(Date)   # e.g. the expiry or pay-by date it is about
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime]
    outcome: Mapped[str] = mapped_column(String(24), default="sent")  # sent | skipped_paper | digest_only
    detail: Mapped[Optional[str]] = mapped_column(Text)
