"""What is up for renewal: services expiring soon and expired ones still renewable, with their decision.

The renewal page shows an account's next three months; `renewals due` shows any window for
staff. Both read the same rows.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from handlers.clock import local_date
from handlers.models import Account, RenewalDecision, Service, ServiceStatus
from handlers.renewals.decisions import current, cycle_decision, default_years
from handlers.renewals.occasions import add_months

RENEWABLE = (ServiceStatus.active, ServiceStatus.suspended, ServiceStatus.expired, ServiceStatus.cancelled)
PAGE_MONTHS = 3


@dataclass(frozen=True)
class Row:
    service: Service
    days_left: int
    decision: RenewalDecision | None      # made for the current expiry, else None
    default_years: int

    @property
    def decided(self) -> str:
        d = self.decision
        if d is None:
            return ""
        if d.action.value == "decline":
            return "declined"
        return f"renew {d.period_years} year{'s' if d.period_years != 1 else ''}" + \
            ("" if d.completed_at is None else " (completed)")


def window(tx: Any, *, days: int | None = None) -> tuple[dt.date, dt.date, dt.date]:
    """(today, first expiry shown, last expiry shown): expired within the grace period, up to ``days`` ahead
    (default: the page's three calendar months)."""
    today = local_date(tx.now, tx.settings.tz)
    last = today + dt.timedelta(days=days) if days is not None else add_months(today, PAGE_MONTHS)
    return today, today - dt.timedelta(days=tx.settings.renewal_grace_days), last


def renewable(tx: Any, *, account_id: int | None = None, days: int | None = None, limit: int = 500) -> list[Row]:
    """Services in the window, soonest first, with the decision made for their current expiry."""
    today, first, last = window(tx, days=days)
    q = (select(Service).where(Service.expires_on.between(first, last), Service.status.in_(RENEWABLE))
         .order_by(Service.expires_on, Service.name, Service.id).limit(limit))
    if account_id is not None:
        q = q.where(Service.account_id == account_id)
    services = list(tx.session.scalars(q))
    latest = current(tx, [s.id for s in services])
    tz = tx.settings.tz
    return [Row(s, (s.expires_on - today).days, cycle_decision(latest.get(s.id), s, tz), default_years(s))
            for s in services]


def accounts_of(tx: Any, rows: list[Row]) -> dict[int, Account]:
    ids = sorted({r.service.account_id for r in rows})
    return {a.id: a for a in tx.session.scalars(select(Account).where(Account.id.in_(ids)))} if ids else {}
