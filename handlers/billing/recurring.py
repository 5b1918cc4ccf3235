"""Recurring invoices: every service with a price and a billing period is invoiced before it is due.

A service's ``billing_period`` (``1m``, ``3m``, ``1y`` ...) and ``next_due_on`` say which period
is billed next. ``RENEWDESK_INVOICE_ADVANCE_DAYS`` before a period's due date the
``recurring_invoices`` rule issues its invoice: one line per service, all of an account's lines
due that day on one invoice, pay-by date the due date. The line carries (service, period
start), unique in the database, so re-runs and concurrent sweeps invoice a period once. After
downtime only the latest period whose issue day has passed is invoiced, not a backlog. Paying
the invoice moves ``next_due_on`` past the period. Domains keep their renewal flow and are
never invoiced here.

Period arithmetic is on dates: months clamp to the month's end and come back to the service's
day of month (31 January, 28 February, 31 March).
"""
from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import TYPE_CHECKING

from sqlalchemy import select

from handlers.billing.common import lock_account, today
from handlers.models import Account, Invoice, InvoiceLine, InvoiceStatus, Service, ServiceStatus
from handlers.money import fmt

if TYPE_CHECKING:
    from handlers.billing.invoices import Line
    from handlers.billing.rules import Action, Key
    from handlers.services import Tx

RULE = "recurring_invoices"
ORIGIN = "recurring"
BILLED_STATUSES = (ServiceStatus.active, ServiceStatus.suspended)
PERIOD_HINT = 'a number of months or years: "1m", "3m", "6m", "1y", "2y"'
_PERIOD = re.compile(r"([1-9]\d?)\s*([my])", re.I | re.A)
_MAX_MONTHS = 120
_MAX_STEPS = 1200  # periods looked through for the latest one due (a hundred years of months)


# -- periods ----------------------------------------------------------------------------------

def period_months(text: str) -> int:
    """``1m`` → 1, ``3m`` → 3, ``1y`` → 12; ValueError for anything else."""
    m = _PERIOD.fullmatch(text.strip())
    months = 0 if m is None else int(m[1]) * (12 if m[2].lower() == "y" else 1)
    if not 1 <= months <= _MAX_MONTHS:
        raise ValueError(f"not a billing period ({PERIOD_HINT}, at most 10 years)")
    return months


def normalize_period(text: str) -> str:
    """The stored spelling: ``1M`` → ``1m``, ``12m`` stays ``12m``."""
    period_months(text)
    return re.sub(r"\s+", "", text).lower()


def add_months(day: dt.date, months: int, anchor: int | None = None) -> dt.date:
    """``months`` calendar months after ``day`` on the ``anchor`` day of month, clamped to the month's end."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(anchor or day.day, calendar.monthrange(year, month)[1]))


def period_label(text: str) -> str:
    months = period_months(text)
    n, unit = (months // 12, "year") if months % 12 == 0 else (months, "month")
    return f"{n} {unit}{'s' if n != 1 else ''}"


def period_end(svc: Service, start: dt.date) -> dt.date:
    """The last day of the period that starts (is due) on ``start``."""
    return add_months(start, period_months(svc.billing_period or ""), svc.due_day) - dt.timedelta(days=1)


# -- which services, which period -------------------------------------------------------------

def billable(svc: Service, acc: Account) -> bool:
    """A service this rule invoices: not a domain, priced in the account's currency, with a period and due date."""
    return (svc.kind != "domain" and svc.billing_period is not None and svc.next_due_on is not None
            and svc.price_minor > 0 and svc.currency == acc.currency and svc.status in BILLED_STATUSES)


def due_period(tx: "Tx", svc: Service, day: dt.date) -> dt.date | None:
    """The latest period from ``next_due_on`` whose issue day (due date less the advance) has come."""
    months, lead = period_months(svc.billing_period or ""), dt.timedelta(days=tx.settings.invoice_advance_days)
    found = None
    for k in range(_MAX_STEPS):
        start = add_months(svc.next_due_on, k * months, svc.due_day)
        if start - lead > day:
            break
        found = start
    return found


def invoiced(tx: "Tx", service_id: int, start: dt.date) -> bool:
    return tx.session.scalar(select(InvoiceLine.id).where(
        InvoiceLine.service_id == service_id, InvoiceLine.period_start == start)) is not None


def due_lines(tx: "Tx", acc: Account) -> dict[dt.date, list[Service]]:
    """The account's services with a period to invoice today, by due date."""
    day = today(tx)
    out: dict[dt.date, list[Service]] = {}
    for svc in acc.services:
        if not billable(svc, acc):
            continue
        start = due_period(tx, svc, day)
        if start is not None and not invoiced(tx, svc.id, start):
            out.setdefault(start, []).append(svc)
    return out


def line_for(svc: Service, start: dt.date) -> "Line":
    from handlers.billing.invoices import Line

    text = f"{svc.name} ({svc.kind}), {period_label(svc.billing_period or '')}: {start} to {period_end(svc, start)}"
    return Line(text, svc.price_minor, 0, svc.id, start)


# -- the rule ---------------------------------------------------------------------------------

def recurring_invoices(tx: "Tx", acc: Account, assumed: set["Key"]) -> list["Action"]:
    """One action per due date: the invoice for every service of the account due that day."""
    from handlers.billing.rules import Action, recipients_text

    planned = {(k[2], sid) for k in assumed if k[0] == RULE for sid in k[3]}
    actions = []
    for start, due in sorted(due_lines(tx, acc).items()):
        services = [s for s in due if (start, s.id) not in planned]
        if not services:
            continue
        ids = tuple(s.id for s in services)
        pay_by = max(start, today(tx))
        total = sum(s.price_minor for s in services)
        text = (f"{acc.name}: invoice {', '.join(s.name for s in services)} for the period from {start} "
                f"({fmt(total, acc.currency)}, pay by {pay_by}), {recipients_text(acc)}")

        def apply(tx: "Tx", start: dt.date = start, ids: tuple[int, ...] = ids) -> str | None:
            inv = issue_period(tx, acc.id, start, ids)
            return None if inv is None else f"issued {inv.number}"
        actions.append(Action(RULE, acc, (RULE, acc.id, start, ids), text, apply))
    return actions


def issue_period(tx: "Tx", account_id: int, start: dt.date, service_ids: tuple[int, ...]) -> Invoice | None:
    """Issue the invoice for these services' period due on ``start``; None when it was issued already."""
    from handlers.billing.invoices import issue

    acc = lock_account(tx, account_id)
    services = [s for s in acc.services if s.id in service_ids and billable(s, acc)
                and due_period(tx, s, today(tx)) == start and not invoiced(tx, s.id, start)]
    if not services:
        return None
    # no savepoint: every issuer holds the account's lock, so nobody invoices the period between our look and
    # our insert; were one to, the lines' unique key fails the transaction (a sweep batch is then done again
    # account by account, and finds the period invoiced)
    return issue(tx, acc.id, [line_for(s, start) for s in services], max(start, today(tx)), origin=ORIGIN)


# -- payment --------------------------------------------------------------------------------

def paid(tx: "Tx", inv: Invoice) -> list[Service]:
    """The invoice is paid: each recurring line's service is due next after the period it billed.

    Idempotent, and it never moves a due date back (an older period paid late changes nothing).
    """
    if inv.status != InvoiceStatus.paid:
        return []
    moved = []
    for line in inv.lines:
        if line.period_start is None or line.service_id is None:
            continue
        svc = tx.session.get(Service, line.service_id)
        if svc is None or svc.billing_period is None:
            continue
        following = period_end(svc, line.period_start) + dt.timedelta(days=1)
        if svc.next_due_on is None or svc.next_due_on < following:
            previous, svc.next_due_on = svc.next_due_on, following
            moved.append(svc)
            tx.audit("service.next_due", subject=svc, account_id=inv.account_id, invoice=inv.number,
                     previous=None if previous is None else previous.isoformat(), next_due_on=following.isoformat())
    return moved
