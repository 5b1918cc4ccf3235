"""Reason-coded suspensions of an account or one service, their lifting, and removal.

A suspension is a row; the statuses of the account and its services follow from the open
rows (:func:`apply_status`), and every service status change is one entry of its history.
Payment lifts ``overdue`` and ``credit_limit`` suspensions once their cause is gone
(:func:`lift_resolved`); a ``manual`` one is lifted only by staff.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from handlers import slack_cards
from handlers.billing.common import day_start, invoice_context, open_invoices, send, today
from handlers.models import (Account, AccountStatus, Invoice, InvoiceStatus, Service, ServiceEvent, ServiceStatus,
                             Suspension, SuspensionReason)
from handlers.money import fmt

if TYPE_CHECKING:
    from handlers.services import Tx

REASON_TEXT = {
    SuspensionReason.overdue: "an invoice is unpaid past its pay-by date",
    SuspensionReason.credit_limit: "the account has reached its credit limit",
    SuspensionReason.manual: "suspended by our staff",
}
ACTIVE_OR_SUSPENDED = (ServiceStatus.active, ServiceStatus.suspended)


def open_suspensions(tx: "Tx", account_id: int) -> list[Suspension]:
    return list(tx.session.scalars(select(Suspension).where(
        Suspension.account_id == account_id, Suspension.lifted_at.is_(None)).order_by(Suspension.id)))


def _label(tx: "Tx", sus: Suspension) -> str:
    """``overdue (invoice BB-2002)``, ``manual: talking to the bank``."""
    if sus.reason == SuspensionReason.overdue and sus.invoice_id:
        inv = tx.session.get(Invoice, sus.invoice_id)
        return f"overdue (invoice {inv.number})" if inv else "overdue"
    return f"{sus.reason.value}: {sus.text}" if sus.text else sus.reason.value


def apply_status(tx: "Tx", acc: Account, why: str) -> tuple[list[str], list[str]]:
    """Bring the account's and its services' statuses in line with the open suspensions.

    Returns the names of services suspended and restored by this call.
    """
    opened = open_suspensions(tx, acc.id)
    whole = any(s.service_id is None for s in opened)
    single = {s.service_id for s in opened if s.service_id is not None}
    suspended, restored = [], []
    for svc in tx.session.scalars(select(Service).where(
            Service.account_id == acc.id, Service.status.in_(ACTIVE_OR_SUSPENDED)).order_by(Service.id)):
        want = ServiceStatus.suspended if whole or svc.id in single else ServiceStatus.active
        if svc.status != want:
            tx.session.add(ServiceEvent(service_id=svc.id, at=tx.now, from_status=svc.status.value,
                                        to_status=want.value, reason=why, actor=tx.actor))
            (suspended if want == ServiceStatus.suspended else restored).append(svc.name)
            svc.status = want
    if acc.status != AccountStatus.closed:
        acc.status = AccountStatus.suspended if whole else AccountStatus.active
    tx.session.flush()
    return suspended, restored


def suspend(tx: "Tx", acc: Account, *, reason: SuspensionReason, text: str = "", service: Service | None = None,
            invoice: Invoice | None = None, dedupe_key: str | None = None,
            remove_after: dt.datetime | None = None, tell_client: bool = False) -> Suspension | None:
    """Open a suspension, update statuses and email the client; None if ``dedupe_key`` was used already.

    ``text`` is staff's reason: the client's email shows it only with ``tell_client``.
    """
    if dedupe_key is not None and tx.session.scalar(
            select(Suspension.id).where(Suspension.dedupe_key == dedupe_key)) is not None:
        return None
    day = today(tx)
    # an account already suspended today for another overdue invoice: that email named every overdue invoice
    told_today = reason == SuspensionReason.overdue and service is None and any(
        o.reason == SuspensionReason.overdue and o.service_id is None
        and o.started_at.astimezone(tx.settings.tz).date() == day for o in open_suspensions(tx, acc.id))
    sus = Suspension(account_id=acc.id, service_id=service.id if service else None, reason=reason, text=text,
                     invoice_id=invoice.id if invoice else None, started_at=tx.now, started_by=tx.actor,
                     remove_after=remove_after, dedupe_key=dedupe_key)
    try:
        with tx.session.begin_nested():
            tx.session.add(sus)
    except IntegrityError:
        return None  # another scheduler opened the same suspension first
    label = _label(tx, sus)
    names, _ = apply_status(tx, acc, f"suspended: {label}")
    tx.audit("suspension.start", subject=sus, account_id=acc.id, reason=reason.value, text=text,
             service=service.name if service else None, invoice=invoice.number if invoice else None,
             services=names)
    context: dict[str, Any] = {
        "reason": reason.value, "why": REASON_TEXT[reason], "text": text if tell_client else "",
        "scope": service.name if service else "your account and all its services",
        "services": names or ([service.name] if service else []),
        "invoice": invoice_context(invoice, day) if invoice else None,
        "remove_on": remove_after.astimezone(tx.settings.tz).date().isoformat() if remove_after else None,
        "credit": None, "also": [], "total_due": None}
    if reason == SuspensionReason.overdue and invoice is not None:
        grace = dt.timedelta(days=tx.settings.suspend_after_days)
        also = [i for i in open_invoices(tx, acc.id) if i.id != invoice.id and i.due_on + grace <= day]
        context["also"] = [invoice_context(i, day) for i in also]
        context["total_due"] = fmt(invoice.due_minor + sum(i.due_minor for i in also), acc.currency)
    if reason == SuspensionReason.credit_limit:
        from handlers.billing.ledger import credit_state
        state = credit_state(tx, acc)
        context["credit"] = {"position": fmt(state.position, acc.currency),
                             "limit": fmt(state.limit or 0, acc.currency),
                             "to_pay": fmt(max(0, -(state.headroom or 0)), acc.currency)}
    if told_today:
        return sus  # one suspension email and one Slack card per account and day
    send(tx, acc, "suspension_notice", context, f"suspension:{sus.id}:notice")
    slack_cards.queue_suspension_card(tx, sus)  # automatic ones only
    return sus


def lift(tx: "Tx", acc: Account, suspensions: Sequence[Suspension], why: str) -> list[str]:
    """Lift the given suspensions; email the client if services came back. Returns the services restored."""
    if not suspensions:
        return []
    for sus in suspensions:
        sus.lifted_at, sus.lifted_by = tx.now, tx.actor
        tx.audit("suspension.lift", subject=sus, account_id=acc.id, reason=sus.reason.value, why=why)
    tx.session.flush()
    _, restored = apply_status(tx, acc, f"unsuspended: {why}")
    if restored or acc.status == AccountStatus.active and any(s.service_id is None for s in suspensions):
        ids = "-".join(str(s.id) for s in suspensions)
        send(tx, acc, "unsuspension_notice", {"why": why, "services": restored}, f"suspension:{ids}:lifted")
    return restored


def lift_resolved(tx: "Tx", acc: Account, why: str) -> list[Suspension]:
    """Lift every ``overdue`` suspension whose invoice is paid or void, and a ``credit_limit`` one
    once the account is back within its limit. Never a ``manual`` one."""
    from handlers.billing.ledger import credit_state

    done: list[Suspension] = []
    within: bool | None = None
    for sus in open_suspensions(tx, acc.id):
        if sus.reason == SuspensionReason.overdue and sus.invoice_id is not None:
            inv = tx.session.get(Invoice, sus.invoice_id)
            if inv is None or inv.status in (InvoiceStatus.paid, InvoiceStatus.void):
                done.append(sus)
        elif sus.reason == SuspensionReason.credit_limit:
            if within is None:
                within = not credit_state(tx, acc).reached
            if within:
                done.append(sus)
    lift(tx, acc, done, why)
    return done


def remove(tx: "Tx", acc: Account, sus: Suspension) -> list[str]:
    """Remove the services a suspension covers (the account stays, with what it owes)."""
    scope = select(Service).where(Service.account_id == acc.id, Service.status.in_(ACTIVE_OR_SUSPENDED))
    if sus.service_id is not None:
        scope = scope.where(Service.id == sus.service_id)
    removed = []
    why = f"removed after suspension: {_label(tx, sus)}"
    for svc in tx.session.scalars(scope.order_by(Service.id)):
        tx.session.add(ServiceEvent(service_id=svc.id, at=tx.now, from_status=svc.status.value,
                                    to_status=ServiceStatus.removed.value, reason=why, actor=tx.actor))
        svc.status = ServiceStatus.removed
        removed.append(svc.name)
    tx.session.flush()
    tx.audit("suspension.remove", subject=sus, account_id=acc.id, services=removed)
    return removed


def removal_day(tx: "Tx", sus: Suspension) -> dt.date | None:
    """The business day removal happens on, or None when this suspension leads to no removal."""
    return None if sus.remove_after is None else sus.remove_after.astimezone(tx.settings.tz).date()


def removal_moment(tx: "Tx", started: dt.datetime) -> dt.datetime:
    """``removal_after_days`` business days after ``started``, at the start of that day."""
    start_day = started.astimezone(tx.settings.tz).date()
    return day_start(tx, start_day + dt.timedelta(days=tx.settings.removal_after_days))
