"""The checked plan of an import: what the file asks for, normalised, before any database work.

:func:`handlers.import_format.validate` builds it; :func:`handlers.importer.apply` carries it
out. A field the file leaves out is ``None`` here, meaning "keep the current value".
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from handlers.import_plans import PlanSpec, SubscriptionSpec, UsageSpec
from handlers.models import Invoicing, MessageKind, ServiceStatus, TicketStatus


@dataclass(frozen=True)
class ContactPlan:
    """The owner or a sub-account contact, matched by (account, email)."""

    email: str
    name: str | None
    permissions: tuple[str, ...] | None
    email_prefs: dict[str, bool] | None
    is_owner: bool = False


@dataclass(frozen=True)
class ServicePlan:
    """A service, matched by (account, ref)."""

    ref: str
    kind: str
    name: str | None
    status: ServiceStatus | None
    expires_on: dt.date | None
    period_years: int | None
    price_minor: int | None
    auto_renew: bool | None
    billing_period: str | None = None
    next_due_on: dt.date | None = None
    product: str | None = None
    server: str | None = None


@dataclass(frozen=True)
class LinePlan:
    """One invoice line in minor units."""

    text: str
    amount_minor: int
    tax_minor: int


@dataclass(frozen=True)
class InvoicePlan:
    """An invoice, matched by its number across all accounts."""

    number: str
    issued_on: dt.date
    due_on: dt.date
    lines: tuple[LinePlan, ...]
    paid_minor: int | None
    path: str

    @property
    def total_minor(self) -> int:
        return sum(line.amount_minor + line.tax_minor for line in self.lines)


@dataclass(frozen=True)
class ChargePlan:
    """A manual ledger charge, matched by its ledger ref."""

    ref: str
    ledger_ref: str
    on: dt.date
    amount_minor: int
    text: str | None
    path: str


@dataclass(frozen=True)
class MessagePlan:
    """One message of a ticket, time in UTC."""

    author: str
    kind: MessageKind
    body: str
    at: dt.datetime


@dataclass(frozen=True)
class TicketPlan:
    """A ticket, matched by its ref across all accounts."""

    ref: str
    subject: str
    status: TicketStatus | None
    archived: bool | None
    opened_by: str | None
    messages: tuple[MessagePlan, ...]
    path: str


@dataclass(frozen=True)
class AccountPlan:
    """An account and everything under it, matched by ref."""

    ref: str
    name: str
    currency: str
    owner: ContactPlan
    contacts: tuple[ContactPlan, ...]
    credit_limit_minor: int | None
    auto_suspend: bool | None
    invoicing: Invoicing | None
    sales_contact: str | None  # "" clears it
    overdue_notices: bool | None
    services: tuple[ServicePlan, ...]
    invoices: tuple[InvoicePlan, ...]
    charges: tuple[ChargePlan, ...]
    tickets: tuple[TicketPlan, ...]
    path: str
    subscription: SubscriptionSpec | None = None  # the account's charging plan from a day
    usage: tuple[UsageSpec, ...] = ()


@dataclass(frozen=True)
class ImportPlan:
    """The whole document, checked."""

    accounts: tuple[AccountPlan, ...]
    plans: tuple[PlanSpec, ...] = ()


def charge_ledger_ref(account_ref: str, ref: str) -> str:
    """The ledger ref of an imported charge; ':' and '%' are escaped so no two pairs collide."""
    def esc(s: str) -> str:
        return s.replace("%", "%25").replace(":", "%3A")
    return f"import:charge:{esc(account_ref)}:{esc(ref)}"
