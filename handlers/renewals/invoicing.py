"""The renewal invoice: the renewals decided together (a reply, a page submit, a code, an automatic
renewal) raise one invoice through billing's own operation, exactly once.

Each renewed service is one line: its name, the period it is renewed for, and its price times the
years. The claim is a ``notice`` row (``renewal_invoice``, the set's first decision): the invoice
and the decisions are written in one transaction, and the row keeps a retried set from being
invoiced twice. ``RENEWDESK_RENEWAL_INVOICES=off`` leaves invoicing to the sales contact.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from sqlalchemy import select

from handlers.billing.common import claim_notice, today
from handlers.billing.invoices import Line, issue
from handlers.models import Account, DecisionAction, Invoice, Notice, RenewalDecision, Service
from handlers.money import fmt
from handlers.renewals.occasions import add_months

KIND = "renewal_invoice"
PAY_WITHIN_DAYS = 14   # the least time to pay; an early renewal is due the day before the first expiry


def period(service: Service, years: int) -> str:
    """``2027-01-15 to 2029-01-15``: the term a renewal buys (from the current expiry)."""
    if service.expires_on is None:
        return ""
    return f"{service.expires_on.isoformat()} to {add_months(service.expires_on, 12 * years).isoformat()}"


def line_for(service: Service, years: int) -> Line:
    term = period(service, years)
    text = f"Renewal of {service.name} ({service.kind}), {years} year{'s' if years != 1 else ''}" + \
        (f": {term}" if term else "")
    return Line(text, service.price_minor * years, 0, service.id)


def pay_by(tx: Any, services: Sequence[Service]) -> dt.date:
    day = today(tx)
    soonest = min((s.expires_on for s in services if s.expires_on), default=None)
    least = day + dt.timedelta(days=PAY_WITHIN_DAYS)
    return max(least, soonest - dt.timedelta(days=1)) if soonest else least


def raise_invoice(tx: Any, account: Account, decisions: Sequence[RenewalDecision],
                  services: dict[int, Service]) -> Invoice | None:
    """Issue the invoice for the renewals among ``decisions``; None when there is nothing to invoice,
    invoicing is off, or this set was invoiced already."""
    renewals = [d for d in decisions if d.action == DecisionAction.renew and d.period_years]
    if not renewals or not tx.settings.invoice_renewals:
        return None
    billed = [(services[d.service_id], d.period_years) for d in renewals
              if services[d.service_id].currency == account.currency and services[d.service_id].price_minor > 0]
    others = [services[d.service_id].name for d in renewals
              if services[d.service_id].currency != account.currency]
    if others:  # a price in another currency cannot go on this account's invoice: the sales contact bills it
        tx.audit("renewal.invoice_skipped", account_id=account.id, services=others, reason="currency")
    if not billed:
        return None
    notice = claim_notice(tx, kind=KIND, subject_type="decision", subject_id=renewals[0].id, occasion="renew",
                          occasion_date=today(tx), account_id=account.id, outcome="raised")
    if notice is None:
        return None
    invoice = issue(tx, account.id, [line_for(s, years) for s, years in billed], pay_by(tx, [s for s, _ in billed]))
    notice.detail = invoice.number
    tx.audit("renewal.invoice", subject=invoice, account_id=account.id, number=invoice.number,
             decisions=[d.id for d in renewals], total=fmt(invoice.total_minor, invoice.currency))
    return invoice


def invoice_of(tx: Any, decisions: Sequence[RenewalDecision]) -> Invoice | None:
    """The invoice raised for a set of decisions, if any."""
    if not decisions:
        return None
    ids = [d.id for d in decisions]
    number = tx.session.scalar(select(Notice.detail).where(
        Notice.kind == KIND, Notice.subject_type == "decision", Notice.subject_id.in_(ids)).limit(1))
    return tx.session.scalar(select(Invoice).where(Invoice.number == number)) if number else None


def context(invoice: Invoice | None) -> dict[str, Any] | None:
    """What the confirmation and the sales contact's email show of it."""
    if invoice is None:
        return None
    return {"number": invoice.number, "total": fmt(invoice.total_minor, invoice.currency),
            "due_on": invoice.due_on.isoformat(), "lines": [ln.text for ln in invoice.lines]}
