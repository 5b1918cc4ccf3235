"""Renewal terms: the one row per (service, expiry being renewed) that every decision for that expiry updates.

The row is the claim. Its unique key (service, expiry) means two submits, replies or schedulers can
never open two terms for one expiry, and its single ``invoice_id`` is the term's one open renewal
invoice. Callers hold the account's lock (:func:`handlers.billing.common.lock_account`) first, so
decisions for one account queue and each reads the term as the previous one left it.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from handlers.models import RenewalTerm, Service


def find(tx: Any, service_id: int, expires_on: dt.date) -> RenewalTerm | None:
    return tx.session.scalar(select(RenewalTerm).where(
        RenewalTerm.service_id == service_id, RenewalTerm.expires_on == expires_on)
        .execution_options(populate_existing=True))


def term_for(tx: Any, service: Service) -> RenewalTerm:
    """The term of the service's current expiry, created on first use."""
    found = find(tx, service.id, service.expires_on)
    if found is not None:
        return found
    row = RenewalTerm(service_id=service.id, account_id=service.account_id, expires_on=service.expires_on)
    try:
        with tx.session.begin_nested():
            tx.session.add(row)
    except IntegrityError:  # someone else opened it between our look and our insert: use theirs
        found = find(tx, service.id, service.expires_on)
        if found is None:
            raise
        return found
    return row


def on_invoice(tx: Any, invoice_id: int) -> list[RenewalTerm]:
    """The terms whose open renewal invoice this is."""
    return list(tx.session.scalars(select(RenewalTerm).where(RenewalTerm.invoice_id == invoice_id)
                                   .order_by(RenewalTerm.id).execution_options(populate_existing=True)))


def last_completed(tx: Any, service_id: int) -> RenewalTerm | None:
    return tx.session.scalar(select(RenewalTerm).where(
        RenewalTerm.service_id == service_id, RenewalTerm.completed_at.is_not(None))
        .order_by(RenewalTerm.completed_at.desc(), RenewalTerm.id.desc()).limit(1))
