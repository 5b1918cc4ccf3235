"""Which accounts a billing sweep has to look at: the ones that can have something to do.

A sweep used to plan its rule for every open account, one transaction each, whatever was due.
Here each rule of :mod:`handlers.billing.rules` has a query that finds, by indexed range queries
and a few set-wise statements, every account the rule could plan an action for as of ``tx.now``;
the sweep then runs the rule for those accounts only, so its cost follows what is due, not what
is kept. A candidate set may hold more accounts than get an action (the rule still decides); it
must never miss one (tests/handlers/test_billing_candidates.py compares it with the rules).

- recurring invoices: billable services whose next due date less the advance days has come,
  whose due period is not invoiced yet (``service.next_due_on``);
- invoice notices: open invoices with a notice day passed (``invoice (status, due_on)``) whose
  latest passed notice was not sent;
- overdue suspensions: open invoices past the grace days of accounts flagged for it, with no
  suspension under their key yet;
- removals: open suspensions with a removal day within the warning days, not yet removed
  (``suspension (lifted_at, remove_after)``);
- plan charges: subscriptions with an ended month not charged yet;
- credit limits: accounts with a limit (``account.credit_limit_minor``) that spent recently, have
  warnings not re-armed, or are past the limit with automatic suspension and no credit
  suspension open;
- a real sweep also lets credit pay open invoices first: accounts with open invoices and credit.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select

from handlers.billing.common import CHARGE_ORIGINS, OPEN_STATUSES, day_start, today
from handlers.models import (
    Account,
    AccountStatus,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    LedgerKind,
    Notice,
    Service,
    Subscription,
    Suspension,
    SuspensionReason,
)

if TYPE_CHECKING:
    from handlers.services import Tx

CHUNK = 500  # ids per IN (...) list


def chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _sums(tx: Tx, column: Any, key: Any, ids: Sequence[int], *where: Any) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in chunks(ids):
        out.update(tx.session.execute(select(key, func.sum(column)).where(key.in_(part), *where).group_by(key)).all())
    return {k: int(v or 0) for k, v in out.items()}


# -- credit paying open invoices (every real sweep does it first) -------------------------------

def credit_to_apply(tx: Tx) -> set[int]:
    """Accounts whose credit would pay some of their open invoices (ledger.credit > 0 with invoices open)."""
    ids = sorted(set(tx.session.scalars(select(Invoice.account_id).where(Invoice.status.in_(OPEN_STATUSES)))))
    balances = _sums(tx, LedgerEntry.amount_minor, LedgerEntry.account_id, ids)
    open_due = _sums(tx, Invoice.total_minor - Invoice.paid_minor, Invoice.account_id, ids,
                     Invoice.status.in_(OPEN_STATUSES))
    return {a for a in ids if balances.get(a, 0) + open_due.get(a, 0) > 0}


def credit_among(tx: Tx, account_ids: Sequence[int]) -> set[int]:
    """Those of ``account_ids`` whose credit would pay some of their open invoices (as :func:`credit_to_apply`)."""
    ids: set[int] = set()
    for part in chunks(sorted(set(account_ids))):
        ids.update(tx.session.scalars(select(Invoice.account_id).distinct().where(
            Invoice.account_id.in_(part), Invoice.status.in_(OPEN_STATUSES))))
    balances = _sums(tx, LedgerEntry.amount_minor, LedgerEntry.account_id, sorted(ids))
    open_due = _sums(tx, Invoice.total_minor - Invoice.paid_minor, Invoice.account_id, sorted(ids),
                     Invoice.status.in_(OPEN_STATUSES))
    return {a for a in ids if balances.get(a, 0) + open_due.get(a, 0) > 0}



def without_credit(tx: Tx, account_ids: Sequence[int]) -> set[int]:
    """Those of ``account_ids`` with no credit (``ledger.credit`` is 0): issuing them an invoice that puts its
    own charge on the ledger leaves it 0, so credit would pay none of it."""
    ids = sorted(set(account_ids))
    balances = _sums(tx, LedgerEntry.amount_minor, LedgerEntry.account_id, ids)
    open_due = _sums(tx, Invoice.total_minor - Invoice.paid_minor, Invoice.account_id, ids,
                     Invoice.status.in_(OPEN_STATUSES))
    return {a for a in ids if balances.get(a, 0) + open_due.get(a, 0) <= 0}

# -- one query per rule ---------------------------------------------------------------------------

def recurring_invoices(tx: Tx) -> set[int]:
    from handlers.billing.recurring import BILLED_STATUSES, due_period

    day = today(tx)
    rows = list(tx.session.execute(select(
        Service.id, Service.account_id, Service.billing_period, Service.next_due_on, Service.due_day).join(
        Account, Account.id == Service.account_id).where(
        Service.next_due_on <= day + dt.timedelta(days=tx.settings.invoice_advance_days),
        Service.currency == Account.currency,
        Service.billing_period.is_not(None), Service.kind != "domain", Service.price_minor > 0,
        Service.status.in_(BILLED_STATUSES))))
    found: set[int] = set()
    due: dict[int, tuple[int, dt.date]] = {}
    for row in rows:
        try:
            start = due_period(tx, row, day)
        except ValueError:  # a period the rule cannot read: it fails there, and says so
            found.add(row.account_id)
            continue
        if start is not None:
            due[row.id] = (row.account_id, start)
    invoiced: set[tuple[int, dt.date]] = set()
    for part in chunks(list(due)):
        invoiced.update(tx.session.execute(select(InvoiceLine.service_id, InvoiceLine.period_start).where(
            InvoiceLine.service_id.in_(part), InvoiceLine.period_start.is_not(None))).all())
    return found | {a for sid, (a, start) in due.items() if (sid, start) not in invoiced}


def invoice_notices(tx: Tx) -> set[int]:
    from handlers.billing.rules import occasions

    day, s = today(tx), tx.settings
    leads = [*s.reminder_offsets, *(-d for d in s.overdue_offsets if d > 0)]
    if not leads:
        return set()
    rows = list(tx.session.execute(select(Invoice.id, Invoice.account_id, Invoice.issued_on, Invoice.due_on).where(
        Invoice.status.in_(OPEN_STATUSES), Invoice.due_on <= day + dt.timedelta(days=max(leads)))))
    latest: dict[int, tuple[int, tuple[str, str, dt.date]]] = {}
    for row in rows:
        passed = [o for o in occasions(tx, row) if row.issued_on <= o[2] <= day]
        if passed:
            kind, occasion, _ = passed[-1]
            latest[row.id] = (row.account_id, (kind, occasion, row.due_on))
    sent: set[tuple[int, str, str, dt.date]] = set()
    for part in chunks(list(latest)):
        sent.update(tx.session.execute(select(Notice.subject_id, Notice.kind, Notice.occasion, Notice.occasion_date)
                                       .where(Notice.kind.in_(("invoice_reminder", "invoice_overdue")),
                                              Notice.subject_type == "invoice", Notice.subject_id.in_(part))).all())
    return {a for iid, (a, key) in latest.items() if (iid, *key) not in sent}


def overdue_suspensions(tx: Tx) -> set[int]:
    from handlers.billing.payments import overdue_keys

    day = today(tx)
    rows = list(tx.session.execute(select(Invoice.id, Invoice.account_id).join(
        Account, Account.id == Invoice.account_id).where(
        Invoice.status.in_(OPEN_STATUSES), Account.auto_suspend.is_(True),
        Invoice.due_on <= day - dt.timedelta(days=tx.settings.suspend_after_days))))
    keys: dict[int, str] = {}
    for part in chunks([r.id for r in rows]):
        keys.update(overdue_keys(tx, part))
    taken: set[str] = set()
    for part in chunks(list(keys.values())):
        taken.update(tx.session.scalars(select(Suspension.dedupe_key).where(Suspension.dedupe_key.in_(part))))
    return {r.account_id for r in rows if keys[r.id] not in taken}


def removals(tx: Tx) -> set[int]:
    from handlers.billing.suspensions import removal_day

    day, n = today(tx), tx.settings.removal_warning_days
    found = list(tx.session.scalars(select(Suspension).where(
        Suspension.lifted_at.is_(None), Suspension.remove_after.is_not(None),
        Suspension.remove_after < day_start(tx, day + dt.timedelta(days=n + 1)))))
    notices: set[tuple[int, str]] = set()
    for part in chunks([s.id for s in found]):
        notices.update(tx.session.execute(select(Notice.subject_id, Notice.kind).where(
            Notice.kind.in_(("removal_warning", "removal")), Notice.subject_type == "suspension",
            Notice.subject_id.in_(part))).all())
    out = set()
    for sus in found:
        if (sus.id, "removal_warning") not in notices:
            out.add(sus.account_id)   # its warning is due (the removal day is within the warning days)
        elif (sus.id, "removal") not in notices and (rday := removal_day(tx, sus)) is not None and rday <= day:
            out.add(sus.account_id)   # warned, and the day it announced has come
    return out


def plan_charges(tx: Tx) -> set[int]:
    """Subscriptions with an ended month in their charged range whose ``plan_month`` notice is missing.

    Those notices are only written for such months (their first day), one per month, so when a
    subscription's notices lie in its range and are as many as its ended months, none is missing.
    """
    from handlers.billing.plans import MONTH_KIND, month_of, next_month

    this_month = month_of(today(tx))
    subs = list(tx.session.execute(select(
        Subscription.id, Subscription.account_id, Subscription.starts_on, Subscription.ends_on,
        Subscription.created_at).where(Subscription.starts_on < this_month,
                                       Subscription.created_at < day_start(tx, this_month))))
    expected: dict[int, tuple[int, dt.date, dt.date, int]] = {}
    for sub in subs:
        first = max(month_of(sub.starts_on), month_of(sub.created_at.astimezone(tx.settings.tz).date()))
        last = month_of(this_month - dt.timedelta(days=1))
        if sub.ends_on is not None:
            last = min(last, month_of(sub.ends_on))
        count, month = 0, first
        while month <= last:
            count, month = count + 1, next_month(month)
        if count:
            expected[sub.id] = (sub.account_id, first, last, count)
    closed: dict[int, tuple[int, dt.date, dt.date]] = {}
    for part in chunks(list(expected)):
        closed.update((sid, (n, lo, hi)) for sid, n, lo, hi in tx.session.execute(select(
            Notice.subject_id, func.count(func.distinct(Notice.occasion_date)), func.min(Notice.occasion_date),
            func.max(Notice.occasion_date)).where(Notice.kind == MONTH_KIND, Notice.subject_type == "subscription",
                                                  Notice.subject_id.in_(part)).group_by(Notice.subject_id)))
    out = set()
    for sid, (account_id, first, last, count) in expected.items():
        n, lo, hi = closed.get(sid, (0, None, None))
        if n != count or lo < first or hi > last:
            out.add(account_id)
    return out


def credit_limits(tx: Tx) -> set[int]:
    from handlers.billing.ledger import CHARGE_SOURCES

    limited = {a.id: a for a in tx.session.execute(select(
        Account.id, Account.auto_suspend, Account.credit_limit_minor).where(Account.credit_limit_minor.is_not(None)))}
    ids = sorted(limited)
    since = tx.now - dt.timedelta(days=tx.settings.credit_spending_days)
    out: set[int] = set()
    for part in chunks(ids):  # spent in the forecast's window: warnings (or a suspension) may be due
        out.update(tx.session.scalars(select(LedgerEntry.account_id).distinct().where(
            LedgerEntry.account_id.in_(part), LedgerEntry.kind == LedgerKind.charge,
            or_(LedgerEntry.invoice_id.is_(None), LedgerEntry.source.in_(CHARGE_SOURCES)),
            LedgerEntry.at > since, LedgerEntry.at <= tx.now)))
    rearmed = dict(tx.session.execute(select(Notice.account_id, func.max(Notice.id)).where(
        Notice.kind == "credit_rearm").group_by(Notice.account_id)).all())
    for account_id, last in tx.session.execute(select(Notice.account_id, func.max(Notice.id)).where(
            Notice.kind == "credit_warning").group_by(Notice.account_id)):
        if account_id in limited and last > (rearmed.get(account_id) or 0):
            out.add(account_id)   # warned and not re-armed: a re-arm or a suspension may be due
    flagged = [a for a in ids if limited[a].auto_suspend and a not in out]
    balances = _sums(tx, LedgerEntry.amount_minor, LedgerEntry.account_id, flagged)
    open_due = _sums(tx, Invoice.total_minor - Invoice.paid_minor, Invoice.account_id, flagged,
                     Invoice.status.in_(OPEN_STATUSES), Invoice.origin.not_in(CHARGE_ORIGINS))
    past = [a for a in flagged if balances.get(a, 0) + open_due.get(a, 0) + limited[a].credit_limit_minor < 0]
    suspended: set[int] = set()
    for part in chunks(past):
        suspended.update(tx.session.scalars(select(Suspension.account_id).where(
            Suspension.account_id.in_(part), Suspension.lifted_at.is_(None),
            Suspension.reason == SuspensionReason.credit_limit)))
    return out | (set(past) - suspended)   # past the limit, flagged, not suspended for it: suspension due


def renewal_automation(tx: Tx) -> set[int]:
    from handlers.renewals.automation import JOB, candidates
    from handlers.renewals.reminders import window_start

    day = today(tx)
    return set(candidates(tx, window_start(tx, day, JOB), day))


CANDIDATES: dict[str, Callable[[Tx], set[int]]] = {
    "recurring_invoices": recurring_invoices,
    "invoice_notices": invoice_notices,
    "overdue_suspensions": overdue_suspensions,
    "removals": removals,
    "plan_charges": plan_charges,
    "credit_limits": credit_limits,
    "renewal_automation": renewal_automation,
}


def open_accounts(tx: Tx, ids: Iterable[int]) -> set[int]:
    """Those of ``ids`` whose account is not closed."""
    out: set[int] = set()
    for part in chunks(sorted(set(ids))):
        out.update(tx.session.scalars(select(Account.id).where(Account.id.in_(part),
                                                               Account.status != AccountStatus.closed)))
    return out


def accounts_for(tx: Tx, rules: Iterable[str], *, credit: bool) -> list[int]:
    """The open accounts the ``rules`` may act on as of ``tx.now`` (``credit``: and those credit would pay for).

    A rule without a candidate query here looks at every open account.
    """
    found: set[int] = set()
    for rule in rules:
        if rule not in CANDIDATES:
            return list(tx.session.scalars(select(Account.id).where(Account.status != AccountStatus.closed)
                                           .order_by(Account.id)))
        found |= CANDIDATES[rule](tx)
    if credit:
        found |= credit_to_apply(tx)
    return sorted(open_accounts(tx, found))
