"""Invoices with lines and tax, payments allocated over invoices, and the account ledger."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from handlers.models.base import Base, Minor, StrEnum, enum_column


class InvoiceStatus(StrEnum):
    issued = "issued"
    partially_paid = "partially_paid"
    paid = "paid"
    void = "void"


class LedgerKind(StrEnum):
    charge = "charge"          # money the client owes (invoice, manual or plan charge)
    payment = "payment"        # money in
    credit = "credit"          # a credit given to the client
    adjustment = "adjustment"  # staff correction, either sign


class Invoice(Base):
    __tablename__ = "invoice"
    __table_args__ = (Index("ix_invoice_due", "status", "due_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[InvoiceStatus] = enum_column(InvoiceStatus, default=InvoiceStatus.issued)
    currency: Mapped[str] = mapped_column(String(3))
    issued_on: Mapped[dt.date] = mapped_column(Date)
    due_on: Mapped[dt.date] = mapped_column(Date)  # the pay-by date
    total_minor: Mapped[int] = mapped_column(Minor, default=0)  # lines + tax
    paid_minor: Mapped[int] = mapped_column(Minor, default=0)
    void_reason: Mapped[Optional[str]] = mapped_column(Text)
    # what raised it: invoice (staff or code) | renewal | recurring | charge | plan | import; "charge" and
    # "plan" invoices bill charges already on the ledger, which count against the credit limit
    origin: Mapped[str] = mapped_column(String(16), default="invoice", server_default="invoice")
    created_at: Mapped[dt.datetime]

    lines: Mapped[list["InvoiceLine"]] = relationship(
        back_populates="invoice", order_by="InvoiceLine.position", cascade="all, delete-orphan")

    @property
    def due_minor(self) -> int:
        return 0 if self.status == InvoiceStatus.void else self.total_minor - self.paid_minor


class InvoiceLine(Base):
    __tablename__ = "invoice_line"
    # a service's recurring period is invoiced once: the key a second or concurrent sweep runs into
    __table_args__ = (UniqueConstraint("invoice_id", "position"), UniqueConstraint("service_id", "period_start"))

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(Minor)
    tax_minor: Mapped[int] = mapped_column(Minor, default=0)
    service_id: Mapped[Optional[int]] = mapped_column(ForeignKey("service.id", ondelete="SET NULL"))
    period_start: Mapped[Optional[dt.date]] = mapped_column(Date)  # recurring lines: the period's due date

    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class Payment(Base):
    __tablename__ = "payment"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(String(3))
    received_at: Mapped[dt.datetime]
    method: Mapped[str] = mapped_column(String(32), default="manual")
    # the bank or processor reference; unique so the same payment cannot be recorded twice
    ref: Mapped[Optional[str]] = mapped_column(String(200), unique=True)
    actor: Mapped[str] = mapped_column(String(100))
    # a void reverses the payment by another ledger entry; the payment row itself is kept
    voided_at: Mapped[Optional[dt.datetime]]
    voided_by: Mapped[Optional[str]] = mapped_column(String(100))
    void_reason: Mapped[Optional[str]] = mapped_column(Text)

    allocations: Mapped[list["PaymentAllocation"]] = relationship(back_populates="payment")


class PaymentAllocation(Base):
    __tablename__ = "payment_allocation"
    __table_args__ = (UniqueConstraint("payment_id", "invoice_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payment.id", ondelete="CASCADE"))
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id", ondelete="CASCADE"), index=True)
    amount_minor: Mapped[int] = mapped_column(Minor)

    payment: Mapped[Payment] = relationship(back_populates="allocations")


class LedgerEntry(Base):
    """One movement on an account: positive adds to the balance (payment, credit), negative owes."""

    __tablename__ = "ledger_entry"
    __table_args__ = (Index("ix_ledger_account_at", "account_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime]
    kind: Mapped[LedgerKind] = enum_column(LedgerKind)
    amount_minor: Mapped[int] = mapped_column(Minor)  # signed: charges are negative
    currency: Mapped[str] = mapped_column(String(3))
    text: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual | plan | invoice | import
    invoice_id: Mapped[Optional[int]] = mapped_column(ForeignKey("invoice.id", ondelete="SET NULL"))
    payment_id: Mapped[Optional[int]] = mapped_column(ForeignKey("payment.id", ondelete="SET NULL"))
    # idempotency for imports and plan charges ("import:acme:charge:setup-fee")
    ref: Mapped[Optional[str]] = mapped_column(String(200), unique=True)
    actor: Mapped[str] = mapped_column(String(100))
