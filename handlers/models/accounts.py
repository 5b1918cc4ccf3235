"""Accounts (the master account), contacts (sub-accounts), services with status history,
reason-coded suspensions and automation holds."""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from handlers.models.base import Base, Minor, StrEnum, enum_column

PERMISSIONS = ("billing", "tickets", "services", "renewals", "contacts")
SERVICE_KINDS = ("domain", "hosting", "vps", "ssl", "extra")


class AccountStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    closed = "closed"


class Invoicing(StrEnum):
    electronic = "electronic"
    paper = "paper"


class ServiceStatus(StrEnum):
    pending = "pending"
    active = "active"
    suspended = "suspended"
    expired = "expired"
    cancelled = "cancelled"   # declined or not renewed
    removed = "removed"       # deleted after suspension or expiry


class SuspensionReason(StrEnum):
    overdue = "overdue"
    credit_limit = "credit_limit"
    manual = "manual"


class Account(Base):
    """The master account: owner, money settings and automation policy."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[AccountStatus] = enum_column(AccountStatus, default=AccountStatus.active)
    currency: Mapped[str] = mapped_column(String(3))
    # how far the position may go below zero; None: no limit (nothing is suspended for credit)
    credit_limit_minor: Mapped[Optional[int]] = mapped_column(Minor, default=None, index=True)
    invoicing: Mapped[Invoicing] = enum_column(Invoicing, default=Invoicing.electronic)
    auto_suspend: Mapped[bool] = mapped_column(Boolean, default=False)
    overdue_notices: Mapped[bool] = mapped_column(Boolean, default=True)
    sales_contact: Mapped[Optional[str]] = mapped_column(String(320))
    # mail from this account's contacts makes tickets only with a DMARC pass from a trusted server
    require_dmarc: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]

    contacts: Mapped[list["Contact"]] = relationship(
        back_populates="account", order_by="Contact.id")
    services: Mapped[list["Service"]] = relationship(back_populates="account", order_by="Service.id")

    @property
    def owner(self) -> Optional["Contact"]:
        """The master account's owner: the contact marked ``is_owner``."""
        return next((c for c in self.contacts if c.is_owner), None)


class Contact(Base):
    """A person on an account: the owner has every permission, sub-accounts what they are given."""

    __tablename__ = "contact"
    __table_args__ = (UniqueConstraint("account_id", "email"), Index("ix_contact_email", "email"))

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))  # stored lower-case
    name: Mapped[str] = mapped_column(String(200), default="")
    is_owner: Mapped[bool] = mapped_column(Boolean, default=False)
    permissions: Mapped[list[Any]] = mapped_column(default=list)
    # which kinds of mail the contact wants: {"renewals": true, "billing": true, "tickets": true}
    email_prefs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    subscriptions: Mapped[list[Any]] = mapped_column(default=list)
    bouncing_since: Mapped[Optional[dt.datetime]]
    bounce_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime]

    account: Mapped[Account] = relationship(back_populates="contacts")

    def may(self, section: str) -> bool:
        return self.is_owner or section in (self.permissions or [])

    def wants(self, kind: str) -> bool:
        return bool((self.email_prefs or {}).get(kind, True))


class Service(Base):
    """A domain, hosting plan, VPS, certificate or extra with its expiry and price."""

    __tablename__ = "service"
    __table_args__ = (
        UniqueConstraint("account_id", "ref"),
        # the reminder sweep asks "which services expire on day D": a range scan, not a full one
        Index("ix_service_expires_on_status", "expires_on", "status"),
        # the recurring invoice sweep asks "whose next period is due by day D"
        Index("ix_service_next_due_on", "next_due_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    ref: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[ServiceStatus] = enum_column(ServiceStatus, default=ServiceStatus.active)
    expires_on: Mapped[Optional[dt.date]] = mapped_column(Date)
    period_years: Mapped[int] = mapped_column(Integer, default=1)
    price_minor: Mapped[int] = mapped_column(Minor, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    auto_renew: Mapped[bool] = mapped_column(Boolean, default=False)
    # recurring invoicing: the price is per period ("1m", "3m", "1y"); the period from next_due_on is
    # invoiced RENEWDESK_INVOICE_ADVANCE_DAYS before it, and paying moves next_due_on on by a period
    billing_period: Mapped[Optional[str]] = mapped_column(String(8))
    next_due_on: Mapped[Optional[dt.date]] = mapped_column(Date)
    due_day: Mapped[Optional[int]] = mapped_column(Integer)  # the day of month due dates keep (31: month ends)
    product: Mapped[Optional[str]] = mapped_column(String(200))
    server: Mapped[Optional[str]] = mapped_column(String(200))
    created_at: Mapped[dt.datetime]

    account: Mapped[Account] = relationship(back_populates="services")
    events: Mapped[list["ServiceEvent"]] = relationship(
        back_populates="service", order_by="ServiceEvent.id", cascade="all, delete-orphan")


class ServiceEvent(Base):
    """One entry of a service's whole status history (seed 000)."""

    __tablename__ = "service_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime]
    from_status: Mapped[Optional[str]] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(100))

    service: Mapped[Service] = relationship(back_populates="events")


class Suspension(Base):
    """A reason-coded suspension of an account (all its services) or of one service."""

    __tablename__ = "suspension"
    __table_args__ = (Index("ix_suspension_open", "account_id", "lifted_at"),
                      # the removal sweep asks "which open suspensions are removed by day D"
                      Index("ix_suspension_removal", "lifted_at", "remove_after"))

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    service_id: Mapped[Optional[int]] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"))
    reason: Mapped[SuspensionReason] = enum_column(SuspensionReason)
    text: Mapped[str] = mapped_column(Text, default="")
    invoice_id: Mapped[Optional[int]] = mapped_column(ForeignKey("invoice.id", ondelete="SET NULL"))
    started_at: Mapped[dt.datetime]
    started_by: Mapped[str] = mapped_column(String(100))
    remove_after: Mapped[Optional[dt.datetime]]
    lifted_at: Mapped[Optional[dt.datetime]]
    lifted_by: Mapped[Optional[str]] = mapped_column(String(100))
    # exactly once: one automatic suspension per cause (e.g. "overdue:invoice:17")
    dedupe_key: Mapped[Optional[str]] = mapped_column(String(200), unique=True)


class Hold(Base):
    """No automatic suspension or removal for the account while a hold is open."""

    __tablename__ = "hold"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[dt.datetime]
    until: Mapped[Optional[dt.datetime]]
    started_by: Mapped[str] = mapped_column(String(100))
    lifted_at: Mapped[Optional[dt.datetime]]
    lifted_by: Mapped[Optional[str]] = mapped_column(String(100))
