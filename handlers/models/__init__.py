"""The typed SQLAlchemy models for every noun of renewdesk; import from here."""
from handlers.models.accounts import (PERMISSIONS, SERVICE_KINDS, Account, AccountStatus, Contact, Hold,
                                      Invoicing, Service, ServiceEvent, ServiceStatus, Suspension,
                                      SuspensionReason)
from handlers.models.base import Base, UTCDateTime
from handlers.models.billing import (Invoice, InvoiceLine, InvoiceStatus, LedgerEntry, LedgerKind, Payment,
                                     PaymentAllocation)
from handlers.models.imap import ImapCursor
from handlers.models.mail import InboundMail, InboundStatus, OutboundMail, OutboxStatus, SlackPost
from handlers.models.plans import MICROS, Plan, PlanLine, PlanLineKind, Subscription, UsageRecord
from handlers.models.ops import AppSetting, AuditEvent, JobRun, Role, StaffMember
from handlers.models.renewals import DecisionAction, Notice, RenewalDecision, RenewalRequest, RenewalTerm
from handlers.models.tickets import (Attachment, AutoAnswer, MessageKind, Ticket, TicketMessage, TicketStatus,
                                     TicketWatcher)

__all__ = [
    "Account", "AccountStatus", "AppSetting", "Attachment", "AuditEvent", "AutoAnswer", "Base", "Contact",
    "DecisionAction", "Hold", "ImapCursor", "InboundMail", "InboundStatus", "Invoice", "InvoiceLine",
    "InvoiceStatus", "Invoicing", "JobRun", "LedgerEntry", "LedgerKind", "MICROS", "MessageKind", "Notice",
    "OutboundMail", "OutboxStatus", "PERMISSIONS", "Payment", "PaymentAllocation", "Plan", "PlanLine",
    "PlanLineKind", "RenewalDecision", "RenewalRequest", "RenewalTerm", "Role", "SERVICE_KINDS", "Service",
    "ServiceEvent", "ServiceStatus", "SlackPost", "StaffMember", "Subscription", "Suspension",
    "SuspensionReason", "Ticket", "TicketMessage", "TicketStatus", "TicketWatcher", "UTCDateTime", "UsageRecord",
]
