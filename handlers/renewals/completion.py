"""Completing a renewal: the expiry moves forward, the history says so, and the sales contact is asked.

A renewal completes when its invoice is paid (:func:`invoice_paid`, called by billing whenever a
payment brings an invoice to ``paid``) or when staff say it is done (``renewal done``, for a service
billed by hand). Both are idempotent: a term completes once, and a term whose service no longer has
that expiry (it moved already) is never moved again. The next cycle starts from the new expiry: the
reminders' notices are keyed on the expiry date, so a new date gets a new series.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from handlers.billing.common import today
from handlers.models import Account, Invoice, RenewalDecision, RenewalTerm, Service, ServiceEvent, ServiceStatus
from handlers.renewals.decisions import Authority, notify_sales
from handlers.renewals.occasions import add_months

BACK_TO_ACTIVE = (ServiceStatus.expired, ServiceStatus.cancelled)


def complete(tx: Any, term: RenewalTerm, why: str, *, new_expiry: dt.date | None = None) -> Service | None:
    """Move the service of ``term`` to its new expiry (``new_expiry``, else the years decided); None when the
    term is completed already or the service's expiry is no longer the one this term renews."""
    svc = tx.session.get(Service, term.service_id, populate_existing=True)
    if term.completed_at is not None or svc is None or svc.expires_on != term.expires_on:
        return None
    if new_expiry is None and not term.years:
        return None
    new = new_expiry or add_months(term.expires_on, 12 * term.years)
    before = svc.status
    if before in BACK_TO_ACTIVE and new >= today(tx):
        svc.status = ServiceStatus.active
    svc.expires_on = new
    term.completed_at, term.completed_by, term.new_expires_on = tx.now, tx.actor, new
    if term.decision_id:
        tx.session.get(RenewalDecision, term.decision_id).completed_at = tx.now
    span = f"{term.years} year{'s' if term.years != 1 else ''}" if term.years and new_expiry is None else "by hand"
    tx.session.add(ServiceEvent(service_id=svc.id, at=tx.now, from_status=before.value, to_status=svc.status.value,
                                reason=f"renewed for {span}: expires {new} (was {term.expires_on}); {why}",
                                actor=tx.actor))
    tx.session.flush()
    tx.audit("renewal.completed", subject=svc, account_id=svc.account_id, expiry=str(term.expires_on),
             new_expiry=str(new), why=why)
    return svc


def invoice_paid(tx: Any, invoice: Invoice) -> list[Service]:
    """The hook billing calls when ``invoice`` becomes paid: complete every renewal term on it, then ask the
    sales contact to renew at the registry (unless they were asked at the decision). Safe to call again."""
    terms = list(tx.session.scalars(select(RenewalTerm).where(
        RenewalTerm.invoice_id == invoice.id, RenewalTerm.completed_at.is_(None))
        .order_by(RenewalTerm.id).execution_options(populate_existing=True)))
    done = [(t, svc) for t in terms if (svc := complete(tx, t, f"invoice {invoice.number} paid")) is not None]
    ask = [(t, svc) for t, svc in done if t.sales_told_at is None and t.decision_id]
    if ask:
        for t, _ in ask:
            t.sales_told_at = tx.now
        account = tx.session.get(Account, invoice.account_id)
        decisions = [tx.session.get(RenewalDecision, t.decision_id) for t, _ in ask]
        first = decisions[0]
        notify_sales(tx, account, decisions, {svc.id: svc for _, svc in ask},
                     Authority(first.actor, first.auth_method, first.channel), invoice=invoice, paid=True)
    return [svc for _, svc in done]
